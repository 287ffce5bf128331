"""Tests of engine.anomaly: SSIM against scikit-image, map range and masking, scores, ensemble aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from engine.anomaly import MemberMoments, aggregate_members, anomaly_map, default_foreground, slice_scores, ssim_map

BORDER = 5  # zero padding (ours) and reflection (scikit-image) differ only within window // 2 of the edge
B = BORDER


def _noise_pair(seed: int, shape: tuple[int, ...] = (1, 1, 48, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=gen)).clamp(0.0, 1.0)
    return x, y


def _skimage_ssim(x: np.ndarray, y: np.ndarray, data_range: float, channel_axis: int | None) -> np.ndarray:
    _, full = structural_similarity(
        x.astype(np.float64),
        y.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        full=True,
        channel_axis=channel_axis,
    )
    return full


@pytest.mark.parametrize(("convention", "data_range"), [("standard", 1.0), ("paper", 255.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_skimage_in_interior(convention: str, data_range: float, seed: int) -> None:
    x, y = _noise_pair(seed)
    ours = ssim_map(x, y, convention=convention)
    assert ours.shape == (1, 1, 48, 40)
    assert ours.dtype == torch.float32
    ref = _skimage_ssim(x[0, 0].numpy(), y[0, 0].numpy(), data_range, None)
    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    np.testing.assert_allclose(ours[0, 0].numpy()[inner], ref[inner], atol=1e-4, rtol=0)


def test_ssim_multichannel_is_channel_mean_of_skimage() -> None:
    x, y = _noise_pair(3, shape=(1, 3, 32, 32))
    ours = ssim_map(x, y, convention="standard")[0, 0].numpy()
    ref = _skimage_ssim(x[0].numpy(), y[0].numpy(), 1.0, 0).mean(axis=0)
    np.testing.assert_allclose(ours[B:-B, B:-B], ref[B:-B, B:-B], atol=1e-4)


def test_ssim_zero_padding_changes_the_border() -> None:
    # A constant image compared with a scaled copy: inside, only the means differ; at the border the zero
    # padding lowers both means, which scikit-image's reflection does not, so the two must disagree there.
    x = torch.full((1, 1, 24, 24), 0.8)
    y = torch.full((1, 1, 24, 24), 0.4)
    ours = ssim_map(x, y)[0, 0].numpy()
    ref = _skimage_ssim(x[0, 0].numpy(), y[0, 0].numpy(), 1.0, None)
    # float32 E[x^2] - mu^2 leaves ~5e-8 of variance in flat regions, ~5e-5 relative to C2 = 9e-4.
    np.testing.assert_allclose(ours[B:-B, B:-B], ref[B:-B, B:-B], atol=1e-4)
    assert abs(ours[0, 0] - ref[0, 0]) > 1e-3


@pytest.mark.parametrize("convention", ["paper", "standard"])
def test_identical_inputs_give_exactly_zero_map(convention: str) -> None:
    x, _ = _noise_pair(4, shape=(2, 1, 32, 32))
    x[:, :, :4] = 0.0  # some background too
    maps = anomaly_map(x, x.clone(), convention=convention)
    assert maps.shape == (2, 1, 32, 32)
    assert torch.count_nonzero(maps) == 0


@pytest.mark.parametrize("convention", ["paper", "standard"])
def test_map_range_and_dtype(convention: str) -> None:
    gen = torch.Generator().manual_seed(5)
    restored = torch.randn((3, 1, 32, 32), generator=gen, dtype=torch.float64) * 2  # far outside [0, 1]
    condition = torch.rand((3, 1, 32, 32), generator=gen)
    maps = anomaly_map(restored, condition, convention=convention)
    assert maps.dtype == torch.float32
    assert float(maps.min()) >= 0.0
    assert float(maps.max()) <= 1.0
    if convention == "standard":
        assert float(maps.max()) == 1.0  # anti-correlated regions saturate the clamp


def test_background_is_zeroed_by_default_and_by_mask() -> None:
    x, y = _noise_pair(6, shape=(2, 1, 32, 32))
    x[:, :, :, :10] = 0.0  # background columns in the condition
    maps = anomaly_map(y, x)
    assert torch.all(maps[:, :, :, :10] == 0)
    assert torch.all(maps[:, :, :, 12:] > 0)
    assert torch.equal(default_foreground(x), x > 0)

    mask = torch.zeros((2, 1, 32, 32), dtype=torch.bool)
    mask[:, :, 8:16, 20:28] = True
    masked = anomaly_map(y, x, foreground=mask)
    assert torch.count_nonzero(masked[~mask]) == 0
    assert torch.equal(masked[mask], maps[mask])


def test_zeroed_block_in_noise_paper_vs_standard() -> None:
    gen = torch.Generator().manual_seed(0)
    condition = torch.rand((1, 1, 128, 128), generator=gen)
    restored = condition.clone()
    restored[..., 60:70, 60:70] = 0.0
    paper = anomaly_map(restored, condition, convention="paper")
    standard = anomaly_map(restored, condition, convention="standard")
    # With C1 = 6.5 the centre of the block gives about mean(noise)^2 / C1 = 0.25 / 6.5 = 0.04 (0.033 in the
    # reference's own example, a different noise draw).
    assert 0.02 < float(paper.max()) < 0.06
    assert float(standard.max()) > 0.95
    # Far from the block both are zero.
    assert float(paper[..., :40, :40].max()) == 0.0
    assert float(standard[..., :40, :40].max()) == 0.0


@pytest.mark.parametrize("convention", ["paper", "standard"])
def test_batch_equals_one_at_a_time(convention: str) -> None:
    x, y = _noise_pair(7, shape=(4, 1, 32, 32))
    batched = anomaly_map(y, x, convention=convention)
    single = torch.cat([anomaly_map(y[i : i + 1], x[i : i + 1], convention=convention) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)


def test_half_precision_inputs_are_cast() -> None:
    x, y = _noise_pair(8, shape=(1, 1, 32, 32))
    from_half = anomaly_map(y.half(), x.half())
    from_float = anomaly_map(y.half().float(), x.half().float())
    assert from_half.dtype == torch.float32
    torch.testing.assert_close(from_half, from_float)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        ssim_map(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="B, C, H, W"):
        ssim_map(torch.zeros(8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError, match="convention"):
        ssim_map(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), convention="other")  # type: ignore[arg-type]


def test_slice_scores_canvas_and_brain() -> None:
    maps = torch.zeros((3, 1, 4, 4))
    maps[0, 0, :2, :2] = 0.5  # 4 pixels of 16
    maps[1] = 0.25
    fg = torch.zeros((3, 1, 4, 4), dtype=torch.bool)
    fg[0, 0, :2, :] = True  # 8 pixels
    fg[1] = True
    canvas = slice_scores(maps)
    torch.testing.assert_close(canvas, torch.tensor([2.0 / 16, 0.25, 0.0]))
    brain = slice_scores(maps, fg, mode="brain")
    torch.testing.assert_close(brain, torch.tensor([2.0 / 8, 0.25, 0.0]))  # image 2 has no foreground -> 0
    with pytest.raises(ValueError, match="foreground"):
        slice_scores(maps, mode="brain")


def test_topk_slice_score_does_not_grow_with_brain_area() -> None:
    maps = torch.zeros((3, 1, 4, 4))
    maps[0, 0, 0, :3] = torch.tensor([0.9, 0.6, 0.3])
    maps[1, 0, :, :] = 0.2
    maps[1, 0, 3, 3] = 0.8
    fg = torch.ones((3, 1, 4, 4), dtype=torch.bool)
    fg[0, 0, 0, 0] = False  # the 0.9 lies outside the brain: not counted
    fg[2] = False
    top = slice_scores(maps, fg, mode="topk", k=2)
    torch.testing.assert_close(top, torch.tensor([(0.6 + 0.3) / 2, (0.8 + 0.2) / 2, 0.0]))
    # A small brain with fewer than k pixels averages what it has.
    small = torch.zeros((1, 1, 4, 4), dtype=torch.bool)
    small[0, 0, 3, 3] = True
    torch.testing.assert_close(slice_scores(maps[1:2], small, mode="topk", k=5), torch.tensor([0.8]))
    # Twice the brain with the same values: the canvas mean doubles, the top-k score does not move.
    half = torch.zeros((1, 1, 8, 8))
    half[0, 0, :4] = 0.1
    half[0, 0, 0, 0] = 0.5
    whole = half.clone()
    whole[0, 0, 4:] = 0.1
    assert float(slice_scores(whole)) > 1.5 * float(slice_scores(half))
    fg_half, fg_whole = half > 0, whole > 0
    torch.testing.assert_close(slice_scores(half, fg_half, mode="topk", k=4),
                               slice_scores(whole, fg_whole, mode="topk", k=4))
    with pytest.raises(ValueError, match="k must"):
        slice_scores(maps, fg, mode="topk", k=0)


def test_canvas_score_is_the_reference_mean() -> None:
    x, y = _noise_pair(9, shape=(2, 1, 16, 16))
    maps = anomaly_map(y, x)
    torch.testing.assert_close(slice_scores(maps), maps.mean(dim=(1, 2, 3)))


def test_aggregate_members() -> None:
    gen = torch.Generator().manual_seed(10)
    maps = torch.rand((5, 2, 1, 8, 8), generator=gen)
    mean, std = aggregate_members(maps)
    assert mean.shape == std.shape == (2, 1, 8, 8)
    np_maps = maps.numpy().astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), np_maps.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(std.numpy(), np_maps.std(axis=0), atol=1e-6)
    _, single_std = aggregate_members(maps[:1])
    assert torch.count_nonzero(single_std) == 0
    with pytest.raises(ValueError, match="member maps"):
        aggregate_members(maps[0])


def test_member_moments_accumulate_batches_like_the_stacked_maps() -> None:
    gen = torch.Generator().manual_seed(11)
    maps = torch.rand((4, 6, 1, 8, 8), generator=gen)
    moments = MemberMoments((6, 1, 8, 8))
    for member in maps:  # each member in two batches of slices, in either order
        moments.add(member[3:], start=3)
        moments.add(member[:3], start=0)
        moments.member_done()
    mean, std = moments.mean_std()
    np_maps = maps.numpy().astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), np_maps.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(std.numpy(), np_maps.std(axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="no member"):
        MemberMoments((1, 1, 2, 2)).mean_std()

"""The levers of the cross-scanner issue: the role split, acquisition augmentation, through-plane anti-aliasing, the
brain-only comparison, calibration on the user's map, and the transfer counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.anomaly import NOISE_MIN_PIXELS, anomaly_map, noise_sigma, smooth_inside
from engine.augment import AcquisitionAugmentation, acquisition_augment
from engine.config import MapScoring, PreprocessSpec
from engine.data import ROLE_PERIOD, ScanPair, scans_for_role, split_roles
from engine.errors import ConfigError, DataError
from engine.preprocess import through_plane_sigma, to_model_space
from engine.results import Calibration
from engine.transfer import TransferCounts, far_from, shifted_healthy
from engine.volumes import Volume

from ..conftest import real_scan


def _pairs(n: int) -> list[ScanPair]:
    # Given out of order: the rule sorts by file name.
    return [ScanPair(Path(f"/x/IXI{i:03d}_T1.nii.gz"), None) for i in reversed(range(n))]


def test_roles_are_disjoint_fixed_and_cover_every_scan() -> None:
    roles = split_roles(_pairs(154))
    sizes = {k: len(v) for k, v in roles.items()}
    assert sizes == {"train": 134, "selection": 10, "calibration": 10}
    names = {k: {p.image.name for p in v} for k, v in roles.items()}
    assert not names["train"] & names["selection"]
    assert not names["train"] & names["calibration"]
    assert not names["selection"] & names["calibration"]
    assert sum(sizes.values()) == 154
    # The rule: position 7 and 14 of every 15 (sorted by name).
    assert "IXI007_T1.nii.gz" in names["selection"]
    assert "IXI014_T1.nii.gz" in names["calibration"]
    assert "IXI022_T1.nii.gz" in names["selection"]
    assert "IXI029_T1.nii.gz" in names["calibration"]
    # Adding a scan at the end moves nobody already placed.
    grown = split_roles(_pairs(155))
    assert {p.image.name for p in grown["selection"]} == names["selection"]
    assert scans_for_role(_pairs(30), "all") == _pairs(30)
    with pytest.raises(DataError, match=str(ROLE_PERIOD)):
        split_roles(_pairs(ROLE_PERIOD - 1))
    with pytest.raises(ValueError, match="unknown role"):
        scans_for_role(_pairs(30), "test")


def _brain_slice() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:64, :64]
    brain = (yy - 32) ** 2 / 26**2 + (xx - 32) ** 2 / 20**2 < 1
    image = np.where(brain, 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0), 0).astype(np.float32)
    return image, brain


def test_excluding_a_scan_moves_no_other_between_roles() -> None:
    pairs = _pairs(45)
    calibration = scans_for_role(pairs, "calibration")
    dropped = calibration[0].image.name
    without = scans_for_role(pairs, "calibration", exclude=[dropped[:6] + "*"])
    assert [s.image.name for s in without] == [s.image.name for s in calibration[1:]]
    assert scans_for_role(pairs, "selection", exclude=[dropped]) == scans_for_role(pairs, "selection")
    everything = scans_for_role(pairs, "all", exclude=["IXI00*"])
    assert len(everything) == 35
    assert not any(s.image.name.startswith("IXI00") for s in everything)


def test_acquisition_augmentation_is_seeded_stays_in_the_brain_and_changes_it() -> None:
    image, brain = _brain_slice()
    params = AcquisitionAugmentation(probability=1.0, transform_probability=1.0)
    a = acquisition_augment(image, brain, np.random.default_rng(5), params)
    b = acquisition_augment(image, brain, np.random.default_rng(5), params)
    c = acquisition_augment(image, brain, np.random.default_rng(6), params)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32
    assert a.shape == image.shape
    assert np.all(a[~brain] == 0)
    assert a.min() >= 0
    assert a.max() <= 1
    assert np.abs(a - image)[brain].mean() > 0.01
    # Torch's own generator is left as it was.
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    acquisition_augment(image, brain, np.random.default_rng(1), params)
    assert torch.equal(torch.rand(3), expected)
    # Probability 0 gives the slice back untouched.
    untouched = acquisition_augment(image, brain, np.random.default_rng(5), AcquisitionAugmentation(probability=0.0))
    assert untouched is image


def test_through_plane_sigma_follows_the_in_plane_rule() -> None:
    spec = PreprocessSpec(slice_spacing_mm=3.0)
    assert through_plane_sigma(spec, 1.0) == pytest.approx(1.0)
    assert through_plane_sigma(spec, 2.0) == pytest.approx(0.25)
    assert through_plane_sigma(spec, 3.0) == 0.0
    assert through_plane_sigma(spec, 5.0) == 0.0
    assert through_plane_sigma(PreprocessSpec(), 1.0) == 0.0
    with pytest.raises(ConfigError):
        PreprocessSpec(slice_spacing_mm=0.0)


def _striped_volume(thickness: float) -> tuple[Volume, np.ndarray]:
    """A RAS volume whose axial slices alternate between two intensities (structure finer than 3 mm)."""
    shape = (40, 40, int(60 / thickness))
    data = np.zeros(shape, np.float32)
    data[8:32, 8:32, :] = np.where(np.arange(shape[2]) % 2 == 0, 100.0, 50.0)[None, None, :]
    affine = np.diag([2.0, 2.0, thickness, 1.0])
    brain = data > 0
    return Volume(data=data, affine=affine, header=nib.Nifti1Image(data, affine).header), brain


def test_a_thin_sliced_scan_is_anti_aliased_through_the_plane_only_when_the_model_asks() -> None:
    volume, brain = _striped_volume(1.0)
    plain = to_model_space(volume, PreprocessSpec(size=32, spacing_mm=2.0), brain)
    smooth = to_model_space(volume, PreprocessSpec(size=32, spacing_mm=2.0, slice_spacing_mm=3.0), brain)
    # Same slices, same native indices: the way back is unchanged.
    np.testing.assert_array_equal(plain.native_index, smooth.native_index)
    middle = len(plain) // 2
    centre = (slice(None), slice(12, 20), slice(12, 20))
    plain_alternation = np.abs(np.diff(plain.slices[centre].mean(axis=(1, 2))))[middle - 5: middle + 5].mean()
    smooth_alternation = np.abs(np.diff(smooth.slices[centre].mean(axis=(1, 2))))[middle - 5: middle + 5].mean()
    assert plain_alternation > 0.2
    assert smooth_alternation < 0.3 * plain_alternation


def test_masking_the_restoration_stops_the_rim_from_scoring() -> None:
    image, brain = _brain_slice()
    condition = torch.from_numpy(image)[None, None]
    fg = torch.from_numpy(brain)[None, None]
    # A perfect restoration inside the brain that leaks intensity outside it (as an unmasked network output does).
    restored = torch.where(fg, condition, torch.full_like(condition, 0.4))
    plain = anomaly_map(restored, condition, foreground=fg)
    masked = anomaly_map(restored, condition, foreground=fg, scoring=MapScoring(mask_restoration=True))
    assert float(plain[fg].max()) > 0.2
    assert float(masked.max()) < 1e-4


def test_input_blur_forgives_detail_the_restoration_lacks_but_not_a_lesion() -> None:
    image, brain = _brain_slice()
    rng = np.random.default_rng(0)
    fine = np.where(brain, image + rng.normal(0, 0.05, image.shape), 0).astype(np.float32)
    condition = torch.from_numpy(fine)[None, None]
    fg = torch.from_numpy(brain)[None, None]
    restored = smooth_inside(condition, fg, 1.0)  # a blurry but healthy restoration
    lesion = torch.zeros_like(fg)
    lesion[..., 28:36, 28:36] = True
    with_lesion = torch.where(lesion, torch.full_like(condition, 0.95), condition)
    scoring = MapScoring(mask_restoration=True, input_blur_px=1.0)
    plain_healthy = anomaly_map(restored, condition, foreground=fg, scoring=MapScoring(mask_restoration=True))
    blur_healthy = anomaly_map(restored, condition, foreground=fg, scoring=scoring)
    blur_lesion = anomaly_map(restored, with_lesion, foreground=fg, scoring=scoring)
    assert float(blur_healthy[fg].mean()) < 0.5 * float(plain_healthy[fg].mean())
    assert float(blur_lesion[lesion].mean()) > 3 * float(blur_healthy[lesion].mean())
    # Smoothing inside the brain does not darken its rim.
    flat = torch.where(fg, torch.full_like(condition, 0.6), torch.zeros_like(condition))
    np.testing.assert_allclose(smooth_inside(flat, fg, 2.0)[fg].numpy(), 0.6, atol=1e-5)
    with pytest.raises(ConfigError):
        MapScoring(input_blur_px=-1.0)


def test_noise_is_estimated_from_the_image_alone_whatever_its_anatomy() -> None:
    image, brain = _brain_slice()
    fg = torch.from_numpy(brain)[None, None]
    rng = np.random.default_rng(1)
    for sigma in (0.0, 0.01, 0.03, 0.1):
        noisy = np.where(brain, image + rng.normal(0, sigma, image.shape), 0).astype(np.float32)
        estimate = float(noise_sigma(torch.from_numpy(noisy)[None, None], fg))
        # The slice's edges and tissue boundaries add a little; the median keeps it within 0.005 of the truth.
        assert abs(estimate - sigma) < 0.005 + 0.1 * sigma, (sigma, estimate)
    tiny = torch.zeros_like(fg)
    tiny[..., :5, :5] = True  # 9 interior pixels: too few to say
    assert int(tiny[..., 1:4, 1:4].sum()) < NOISE_MIN_PIXELS
    assert float(noise_sigma(torch.rand(1, 1, 64, 64), tiny)) == 0.0


def test_noise_debias_forgives_grain_but_not_a_lesion() -> None:
    image, brain = _brain_slice()
    rng = np.random.default_rng(2)
    fg = torch.from_numpy(brain)[None, None]
    condition = torch.from_numpy(np.where(brain, image + rng.normal(0, 0.03, image.shape), 0).astype(np.float32))
    restored = torch.from_numpy(np.where(brain, image + rng.normal(0, 0.03, image.shape), 0).astype(np.float32))
    condition, restored = condition[None, None], restored[None, None]
    lesion = torch.zeros_like(fg)
    lesion[..., 28:36, 28:36] = True
    with_lesion = torch.where(lesion, torch.full_like(condition, 0.95), condition)
    both = MapScoring(noise_debias="both")
    plain = anomaly_map(restored, condition, foreground=fg)
    debiased = anomaly_map(restored, condition, foreground=fg, scoring=both)
    assert float(debiased[fg].mean()) < 0.5 * float(plain[fg].mean())
    debiased_lesion = anomaly_map(restored, with_lesion, foreground=fg, scoring=both)
    assert float(debiased_lesion[lesion].mean()) > 3 * float(debiased[lesion].mean())
    # Each side on its own removes part of it; blurring both compares them at one coarser scale.
    for one in ("input", "restoration"):
        part = anomaly_map(restored, condition, foreground=fg, scoring=MapScoring(noise_debias=one))
        assert float(debiased[fg].mean()) < float(part[fg].mean()) < float(plain[fg].mean())
    blur_both = MapScoring(input_blur_px=1.0, blur_restoration=True)
    blur_input = MapScoring(input_blur_px=1.0)
    assert float(anomaly_map(restored, condition, foreground=fg, scoring=blur_both)[fg].mean()) < float(
        anomaly_map(restored, condition, foreground=fg, scoring=blur_input)[fg].mean())
    with pytest.raises(ConfigError):
        MapScoring(noise_debias="sometimes")  # type: ignore[arg-type]


def test_a_calibration_names_the_settings_it_does_not_hold_for() -> None:
    cal = Calibration(threshold=0.3, healthy_fpr=0.01, display_max=0.6, sampler="ddim", steps=5, grid="native",
                      scoring=MapScoring(mask_restoration=True))
    same = MapScoring(mask_restoration=True)
    assert cal.mismatches("ddim", 5, None, same) == ()
    assert cal.mismatches("ddim", 10, None, same) == ("10 steps (calibrated: 5)",)
    assert len(cal.mismatches("paper", 50, 1, MapScoring())) == 4
    # An older model-space calibration knows nothing of strides, and its comparison was the plain one.
    old = Calibration(threshold=0.3, healthy_fpr=0.01, display_max=0.6, sampler="ddim", steps=5)
    assert old.mismatches("ddim", 5, 2, MapScoring()) == ()


def test_far_from_counts_millimetres_on_an_anisotropic_grid() -> None:
    label = np.zeros((30, 30, 30), bool)
    label[15, 15, 15] = True
    far = far_from(label, (1.0, 1.0, 4.0), 10.0)
    assert not far[15, 15, 15]
    assert not far[25, 15, 15]
    assert far[26, 15, 15]
    assert not far[15, 15, 17]
    assert far[15, 15, 18]
    assert far_from(np.zeros((3, 3, 3), bool), (1, 1, 1)).all()


def test_transfer_counts_pool_voxels_and_keep_each_scan() -> None:
    brain = np.ones((40, 40, 40), bool)
    lesion = np.zeros_like(brain)
    lesion[:10, :10, :10] = True  # 1000 voxels
    amap = np.zeros(brain.shape, np.float32)
    amap[:10, :10, :5] = 1.0  # half the lesion
    amap[35:, 35:, 35:] = 1.0  # 125 voxels far away
    counts = TransferCounts(threshold=0.5)
    counts.add(amap, brain, lesion, (1.0, 1.0, 1.0))
    counts.add(np.zeros_like(amap), brain, None, (1.0, 1.0, 1.0))
    r = counts.result()
    assert r.scans == 2
    assert r.sensitivity == pytest.approx(0.5)
    assert r.precision == pytest.approx(500 / 625)
    assert r.nonlesion_flagged == pytest.approx(125 / (2 * 64000 - 1000))
    far_first = int(far_from(lesion, (1, 1, 1)).sum())
    assert r.far_flagged == pytest.approx(125 / (far_first + 64000))
    assert r.far_flagged_per_scan == (pytest.approx(125 / far_first, abs=1e-5), 0.0)


def test_shifted_healthy_scans_keep_the_brain_where_it_was(require_data: Path) -> None:
    from engine.readers import load_mask, load_volume

    image = real_scan("ixi-t1/val/IXI056-HH-1327_T1.nii.gz")
    volume = load_volume(image)
    brain = load_mask(image.with_name("IXI056-HH-1327_brainmask.nii.gz"), volume)
    fine, fine_brain = shifted_healthy(volume, brain, "1mm")
    assert fine.zooms == pytest.approx((1.0, 1.0, 1.0))
    assert fine.shape == tuple(2 * n for n in volume.shape)
    centre = volume.affine @ np.r_[np.argwhere(brain).mean(axis=0), 1]
    fine_centre = fine.affine @ np.r_[np.argwhere(fine_brain).mean(axis=0), 1]
    np.testing.assert_allclose(fine_centre[:3], centre[:3], atol=0.5)
    assert fine_brain.sum() == pytest.approx(8 * brain.sum(), rel=0.01)
    biased, same = shifted_healthy(volume, brain, "bias")
    ratio = biased.data[brain] / np.maximum(volume.data[brain], 1e-3)
    assert same is brain
    assert 0.6 < ratio[volume.data[brain] > 10].min() < 0.95 < 1.05 < ratio.max() < 1.6
    thick, thick_brain = shifted_healthy(volume, brain, "thick")
    np.testing.assert_array_equal(thick.affine, fine.affine)
    np.testing.assert_array_equal(thick_brain, fine_brain)
    axis = 1  # IXI is P S R on disk: the second array axis is the axial one
    steps_fine = np.abs(np.diff(fine.data, axis=axis))[..., :].mean()
    steps_thick = np.abs(np.diff(thick.data, axis=axis)).mean()
    assert steps_thick < 0.6 * steps_fine
    # A slab's mean is kept: 5 mm slabs average to what the 1 mm scan holds there.
    assert float(thick.data[fine_brain].mean()) == pytest.approx(float(fine.data[fine_brain].mean()), rel=0.02)
    noisy, _ = shifted_healthy(volume, brain, "noise", seed=0)
    other, _ = shifted_healthy(volume, brain, "noise", seed=1)
    assert not np.array_equal(noisy.data, other.data)
    assert 0.02 < float(np.std((noisy.data - volume.data)[brain])) / float(np.percentile(volume.data[brain], 99)) < 0.06
    contrast, _ = shifted_healthy(volume, brain, "contrast")
    assert not np.allclose(contrast.data[brain], volume.data[brain])
    np.testing.assert_array_equal(volume.data, load_volume(image).data)  # the input is never changed
    with pytest.raises(ValueError, match="unknown shift"):
        shifted_healthy(volume, brain, "tilt")


def test_preset_round_trips_the_new_settings() -> None:
    from engine.config import Preset, get_preset

    preset = get_preset("small")
    changed = replace(preset, preprocess=replace(preset.preprocess, slice_spacing_mm=3.0),
                      train=replace(preset.train, acquisition_augmentation=0.8))
    back = Preset.from_dict(changed.to_dict())
    assert back == changed
    with pytest.raises(ConfigError):
        replace(preset.train, acquisition_augmentation=1.5)


class _OneSlice:
    def __init__(self) -> None:
        self.image, self.brain = _brain_slice()

    def __len__(self) -> int:
        return 1

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.image.copy(), self.brain.copy()


def test_training_pairs_share_the_acquisition_and_keep_the_paper_recipe_without_it() -> None:
    from engine.tasks.registry import build_tasks
    from engine.training import make_pairs

    source = _OneSlice()
    tasks = build_tasks([2, 3, 4], same_source=source, external_source=None)
    # No task (p_no_task = 1): the condition is the target, both with the drawn acquisition.
    condition, clean, mask = make_pairs(source, tasks, [0, 0], [11, 12], 1.0, augmentation=1.0)
    np.testing.assert_array_equal(condition, clean)
    assert not mask.any()
    assert np.abs(clean[0, 0] - source.image).max() > 0.01
    assert not np.array_equal(clean[0], clean[1])
    # With tasks: outside the synthetic anomaly, condition and target still agree.
    condition, clean, mask = make_pairs(source, tasks, [0] * 4, [1, 2, 3, 4], 0.0, augmentation=1.0)
    assert mask.any()
    np.testing.assert_allclose(condition[~mask], clean[~mask], atol=1e-6)
    # Without augmentation the pairs are what they were (the same draws from the same seeds).
    plain_condition, plain_clean, _ = make_pairs(source, tasks, [0, 0], [11, 12], 1.0)
    np.testing.assert_array_equal(plain_clean[:, 0], np.stack([source.image] * 2))


def test_transfer_counts_on_a_real_case_match_scikit_learn_at_two_thresholds(require_data: Path,
                                                                             tiny_model: Path) -> None:
    """The lesion path evaluate reports (sensitivity, precision, Dice, non-lesion flagged) on a real dev case's map
    and label on the native grid, against scikit-learn's metrics at two thresholds; far-from-lesion against a
    brute-force distance."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    import engine
    from engine.evaluation import find_cases

    case = find_cases(require_data / "brats2018-dev", "t1")[0]
    volume = engine.load_volume(case.image)
    label = engine.load_mask(case.label, volume)
    ensemble = engine.load_ensemble(tiny_model, device="cpu")
    result = ensemble.analyse(volume, settings=engine.AnalysisSettings(steps=1))
    brain = engine.analysis_brain(volume)
    truth, scores = label[brain], result.anomaly_map[brain]
    assert 0 < truth.mean() < 0.5
    for threshold in np.quantile(scores, [0.9, 0.97]):
        counts = TransferCounts(float(threshold))
        counts.add(result.anomaly_map, brain, label, volume.zooms)
        r = counts.result()
        flagged = scores >= threshold
        assert r.sensitivity == pytest.approx(recall_score(truth, flagged))
        assert r.precision == pytest.approx(precision_score(truth, flagged))
        assert r.dice == pytest.approx(f1_score(truth, flagged))
        assert r.nonlesion_flagged == pytest.approx(flagged[~truth].mean())
        assert r.brain_flagged == pytest.approx(flagged.mean())
    # Far from the lesion, by brute force on a coarse copy: every voxel's nearest lesion voxel, in mm.
    coarse = label[::8, ::8, ::8]
    zooms = tuple(8.0 * z for z in volume.zooms)
    far = far_from(coarse, zooms, 20.0)
    points = np.argwhere(coarse) * np.asarray(zooms)
    every = np.argwhere(np.ones_like(coarse)) * np.asarray(zooms)
    nearest = np.sqrt(((every[:, None, :] - points[None, :, :]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_array_equal(far.ravel(), nearest > 20.0)

"""Whole-volume analysis: results lie on the scan's own grid in every orientation, and the API contract holds.

Geometry is checked with an "oracle" ensemble whose members restore a median-filtered copy of their condition, so a
small bright blob added to a real scan must light up the anomaly map exactly where it was put, whatever the scan's
orientation and voxel size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

import engine
from engine.card import read_card
from engine.checkpoints import init_model_folder
from engine.config import get_preset
from engine.diffusion import make_train_scheduler
from engine.ensemble import Ensemble
from engine.preprocess import foreground_mask
from engine.volumes import Volume
from tests.conftest import real_scan

# The IXI and MS scans are bundled samples (they run on any clone); the others skip without the shared data.
SCANS = {
    "IXI PSR": ("ixi-t1/val/IXI056-HH-1327_T1.nii.gz", "ixi-t1/val/IXI056-HH-1327_brainmask.nii.gz"),
    "BraTS LPS": ("brats2018-dev/Brats18_2013_2_1/Brats18_2013_2_1_t1.nii.gz", None),
    "MS LAS": ("ms-lesjak/patient07/patient07_T1.nii.gz", None),
    "stroke RAS": ("stroke-rorden/T2.nii.gz", None),
}


class MedianOracle(torch.nn.Module):
    """Predicts (as v) the target whose restoration is the 5x5 median filter of the condition."""

    def __init__(self) -> None:
        super().__init__()
        self.alphas_cumprod = make_train_scheduler(get_preset("small").diffusion).alphas_cumprod
        self.calls = 0

    def forward(self, model_input: torch.Tensor, timesteps: torch.Tensor) -> UNet2DOutput:
        self.calls += 1
        x_t, condition = model_input[:, :1], model_input[:, 1:]
        patches = torch.nn.functional.unfold(condition, 5, padding=2)
        x0 = patches.median(dim=1).values.view_as(condition)
        ab = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1).float()
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return UNet2DOutput(sample=ab.sqrt() * eps - (1 - ab).sqrt() * x0)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    folder = tmp_path_factory.mktemp("oracle")
    init_model_folder(folder, get_preset("small"), name="oracle")
    return Ensemble(folder, read_card(folder), [(0, MedianOracle()), (1, MedianOracle())], torch.device("cpu"))


def _load(name: str) -> tuple[Volume, np.ndarray | None]:
    image, mask = SCANS[name]
    volume = engine.load_volume(real_scan(image))
    return volume, (engine.load_mask(real_scan(mask), volume) if mask else None)


def _with_blob(volume: Volume, brain: np.ndarray, radius_mm: float = 5.0) -> tuple[Volume, np.ndarray]:
    """A copy of ``volume`` with a bright ball near the brain's centre; returns it and the ball's centre in mm."""
    ijk = np.argwhere(brain)
    centre_vox = ijk.mean(axis=0)
    world = nib.affines.apply_affine(volume.affine, centre_vox) + np.array([12.0, 8.0, 6.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in volume.shape], indexing="ij"), axis=-1)
    distance = np.linalg.norm(nib.affines.apply_affine(volume.affine, grid) - world, axis=-1)
    data = volume.data.copy()
    data[distance <= radius_mm] = np.percentile(volume.data[brain], 99.9) * 1.5
    return Volume(data, volume.affine, volume.header, None, volume.source_format), world


def _map_centre_mm(volume: Volume, amap: np.ndarray) -> np.ndarray:
    hot = amap >= 0.5 * amap.max()
    weights = amap[hot]
    return nib.affines.apply_affine(volume.affine, (np.argwhere(hot) * weights[:, None]).sum(0) / weights.sum())


def _oblique(volume: Volume) -> Volume:
    angle = np.deg2rad(20)
    rotation = np.eye(4)
    rotation[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    return Volume(volume.data, rotation @ volume.affine, volume.header, None, volume.source_format)


@pytest.mark.parametrize("name", [*SCANS, "oblique"])
def test_a_blob_lights_up_the_map_where_it_was_put(oracle: Ensemble, name: str) -> None:
    volume, mask = _load("MS LAS" if name == "oblique" else name)
    if name == "oblique":
        volume = _oblique(volume)
    brain = mask if mask is not None else foreground_mask(volume.data)
    blobbed, centre_mm = _with_blob(volume, brain)
    centre_vox = np.round(nib.affines.apply_affine(np.linalg.inv(volume.affine), centre_mm)).astype(int)
    axis = engine.axial_axis(volume.affine)
    near = range(centre_vox[axis] - 12, centre_vox[axis] + 13)
    settings = engine.AnalysisSettings(sampler="ddim", steps=1)
    with_blob = oracle.analyse(blobbed, settings=settings, brain_mask=mask, slices=near)
    without = oracle.analyse(volume, settings=settings, brain_mask=mask, slices=near)
    assert with_blob.anomaly_map.shape == volume.shape
    assert with_blob.restored.shape == volume.shape
    assert with_blob.anomaly_map.dtype == np.float32
    # the restoration removed the blob exactly where it was: what it took away is centred on the blob (within one
    # model pixel of 3 mm) ...
    removed = np.clip((blobbed.data - with_blob.restored) - (volume.data - without.restored), 0, None)
    found = _map_centre_mm(volume, removed)
    assert np.linalg.norm(found - centre_mm) < 3.0, (found, centre_mm)
    # ... and the blob's effect on the anomaly map (1 - SSIM over an 11-pixel window, so shaped by the anatomy
    # around it) is centred within 2.5 model pixels of it
    effect = np.clip(with_blob.anomaly_map - without.anomaly_map, 0, None)
    found = _map_centre_mm(volume, effect)
    assert np.linalg.norm(found - centre_mm) < 7.5, (found, centre_mm)


def test_outputs_lie_on_the_scans_grid(require_data: Path, oracle: Ensemble, tmp_path: Path) -> None:
    for name in SCANS:
        volume, mask = _load(name)
        result = oracle.analyse(volume, settings=engine.AnalysisSettings(steps=1), brain_mask=mask)
        paths = engine.write_outputs(volume, result, tmp_path / name.replace(" ", "_"), threshold=0.2)
        for kind in ("mask", "map", "spread", "restored"):
            img = nib.load(paths[kind])
            assert img.shape == volume.shape
            assert np.allclose(img.affine, volume.affine, atol=1e-5)
            assert nib.aff2axcodes(img.affine) == volume.axcodes
        mask_img = nib.load(paths["mask"])
        assert mask_img.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(mask_img.dataobj), (result.anomaly_map >= 0.2).astype(np.uint8))


def test_restoration_is_in_the_scans_units_and_untouched_outside_the_brain(require_data: Path,
                                                                           oracle: Ensemble) -> None:
    volume, _ = _load("BraTS LPS")
    result = oracle.analyse(volume, settings=engine.AnalysisSettings(steps=1))
    outside = volume.data <= 0
    assert np.array_equal(result.restored[outside], volume.data[outside])
    brain = ~outside & result.covered.reshape(1, 1, -1)
    ratio = np.median(result.restored[brain]) / np.median(volume.data[brain])
    assert 0.8 < ratio < 1.2
    assert np.all(result.anomaly_map[outside] == 0)


def test_whole_volume_uses_a_stride_and_fills_the_slices_between(require_data: Path, oracle: Ensemble) -> None:
    volume, _ = _load("BraTS LPS")
    result = oracle.analyse(volume, settings=engine.AnalysisSettings(steps=1))
    axis = result.slice_axis
    assert axis == engine.axial_axis(volume.affine) == 2
    assert result.covered.sum() > 100
    analysed = np.flatnonzero(result.analysed)
    assert 2 <= np.median(np.diff(analysed)) <= 3  # a 3 mm model on a 1 mm scan
    assert np.isnan(result.slice_scores[~result.analysed]).all()
    filled = np.flatnonzero(result.covered & ~result.analysed)
    assert result.anomaly_map[:, :, filled].max() > 0


def test_planned_slices_in_chunks_then_filled_match_a_whole_volume_run(require_data: Path, oracle: Ensemble) -> None:
    """The viewer's visible-slice-first path: the planned slices analysed in any order and chunks, merged, then
    filled between, give the whole-volume result."""
    volume, _ = _load("BraTS LPS")
    settings = engine.AnalysisSettings(steps=1)
    whole = oracle.analyse(volume, settings=settings)
    plan = oracle.plan_slices(volume, settings=settings)
    assert list(plan) == np.flatnonzero(whole.analysed).tolist()
    # Middle first, then outwards, four slices at a time, as a viewer would on a user looking at the centre.
    centre = plan[len(plan) // 2]
    order = sorted(plan, key=lambda k: abs(k - centre))
    merged = None
    for start in range(0, len(order), 4):
        part = oracle.analyse(volume, settings=settings, slices=order[start:start + 4])
        if merged is None:
            merged = part
            continue
        keep = part.analysed.reshape(1, 1, -1)
        merged = dataclasses.replace(
            merged, anomaly_map=np.where(keep, part.anomaly_map, merged.anomaly_map),
            member_spread=np.where(keep, part.member_spread, merged.member_spread),
            restored=np.where(keep, part.restored, merged.restored),
            slice_scores=np.where(part.analysed, part.slice_scores, merged.slice_scores),
            analysed=merged.analysed | part.analysed, covered=merged.covered | part.covered)
    assert merged is not None
    assert np.array_equal(merged.analysed, whole.analysed)
    before = {name: getattr(merged, name).copy() for name in ("anomaly_map", "member_spread", "restored")}
    filled = engine.fill_between_slices(merged, foreground_mask(volume.data))
    for name, values in before.items():  # the caller's result is left as it was
        assert np.array_equal(getattr(merged, name), values, equal_nan=True), name
    in_place = engine.fill_between_slices(merged, foreground_mask(volume.data), copy=False)
    assert in_place.anomaly_map is merged.anomaly_map
    assert np.array_equal(in_place.anomaly_map, filled.anomaly_map)
    assert np.array_equal(in_place.restored, filled.restored)
    between = whole.covered & ~whole.analysed
    assert between.sum() > 50
    # One analysis: chunks of any grouping, merged and filled on the native grid, are the whole-volume result, bit
    # for bit (the network always sees batches of one width, and both fill the same way).
    for name in ("anomaly_map", "member_spread", "restored", "analysed", "covered"):
        assert np.array_equal(getattr(filled, name), getattr(whole, name)), name
    assert np.array_equal(filled.slice_scores, whole.slice_scores, equal_nan=True)
    assert np.isnan(filled.slice_scores[between]).all()
    with pytest.raises(ValueError, match="brain mask shape"):
        engine.fill_between_slices(merged, np.ones((2, 2, 2), bool))


def test_cancel_stops_within_one_sampler_step(oracle: Ensemble) -> None:
    volume, _ = _load("MS LAS")
    token = engine.CancelToken()
    member = oracle._members[0][1]  # noqa: SLF001 - the test counts the network calls
    calls_before = member.calls
    original = member.forward

    def forward_then_cancel(*args: object) -> UNet2DOutput:
        out = original(*args)
        if member.calls - calls_before == 3:  # the user presses Cancel during the third network call
            token.cancel()
        return out

    member.forward = forward_then_cancel  # type: ignore[method-assign]
    try:
        with pytest.raises(engine.Cancelled):
            oracle.analyse(volume, settings=engine.AnalysisSettings(steps=20, batch_size=4),
                           slices=[90, 91, 92, 93], cancel=token)
    finally:
        member.forward = original  # type: ignore[method-assign]
    assert member.calls - calls_before == 3


def test_a_sampler_that_asks_the_members_about_timesteps_they_never_learned_says_so(oracle: Ensemble) -> None:
    volume, _ = _load("MS LAS")  # the oracle's members carry the small preset: trained on 5 timesteps

    def said(**settings: object) -> list[str]:
        result = oracle.analyse(volume, settings=engine.AnalysisSettings(**settings), slices=[90])
        return [w for w in result.warnings if "timesteps" in w]

    assert said() == []
    assert said(steps=2) == []  # two of its own timesteps (999, 399)
    (six,) = said(steps=6)
    assert "learned 5 timesteps only" in six
    assert "ddim with 6 steps also visits 5 others" in six
    (paper,) = said(sampler="paper")
    assert "paper with 50 steps also visits 50 others" in paper


def test_progress_reports_at_most_ten_a_second(oracle: Ensemble) -> None:
    volume, _ = _load("MS LAS")
    reports: list[engine.Progress] = []
    oracle.analyse(volume, settings=engine.AnalysisSettings(steps=30, batch_size=8), slices=range(60, 100),
                   on_progress=reports.append)
    assert reports[-1].done == reports[-1].total
    assert len(reports) >= 3
    # The reports' own clock: a callback's clock would add whatever delay a loaded machine puts between report and
    # callback, and made this test flaky there. The first and last reports are forced through.
    gaps = np.diff([report.elapsed_s for report in reports[1:-1]])
    assert (gaps >= 0.099).all()
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(reports, reports[1:], strict=False))


@pytest.mark.parametrize("sampler", ["ddim", "dpm", "paper"])
def test_same_seed_same_result_and_slices_do_not_depend_on_their_batch(require_data: Path, tiny_model: Path,
                                                                        sampler: str) -> None:
    """A slice's result depends on (seed, fold, slice) only, for every sampler (the paper's DDPM draws noise at
    every step, so its draws must be per slice too)."""
    model = engine.load_ensemble(tiny_model, device="cpu")
    volume, _ = _load("BraTS LPS")
    settings = engine.AnalysisSettings(sampler=sampler, steps=2, seed=3, batch_size=5)
    a = model.analyse(volume, settings=settings, slices=[70, 75, 80])
    b = model.analyse(volume, settings=settings, slices=[70, 75, 80])
    alone = model.analyse(volume, settings=settings, slices=[75])
    first = model.analyse(volume, settings=settings, slices=[75, 70])  # 75 now leads its batch
    other = model.analyse(volume, settings=engine.AnalysisSettings(sampler=sampler, steps=2, seed=4), slices=[75])
    assert np.array_equal(a.anomaly_map, b.anomaly_map)
    # batched convolutions may round differently from single ones, nothing more
    assert np.allclose(a.anomaly_map[:, :, 75], alone.anomaly_map[:, :, 75], atol=1e-5)
    assert np.allclose(a.anomaly_map[:, :, 70], first.anomaly_map[:, :, 70], atol=1e-5)
    assert np.allclose(a.restored[:, :, 75], alone.restored[:, :, 75], rtol=1e-4, atol=1e-3)
    assert not np.array_equal(a.anomaly_map[:, :, 75], other.anomaly_map[:, :, 75])
    assert a.analysed.sum() == 3
    assert a.model_id == "tiny-test-v1.0.0"
    assert a.seed == 3


def test_a_scan_with_skull_gets_a_warning(require_data: Path, oracle: Ensemble) -> None:
    skull_on = engine.load_volume(real_scan(SCANS["IXI PSR"][0]))
    stripped, _ = _load("BraTS LPS")
    assert any("skull" in w for w in oracle.input_warnings(skull_on, None))
    assert oracle.input_warnings(stripped, None) == ()
    mask = engine.load_mask(real_scan(SCANS["IXI PSR"][1]), skull_on)
    assert oracle.input_warnings(skull_on, mask) == ()


def test_the_model_card_chooses_the_slice_score(require_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from engine.anomaly import slice_scores
    from engine.errors import ModelLoadError

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    volume, _ = _load("BraTS LPS")
    settings = engine.AnalysisSettings(steps=1, seed=0)
    canvas = engine.load_ensemble(model_dir, device="cpu")
    ms = canvas.to_model_space(volume, None, [70, 80])
    plain = canvas.analyse_model_space(ms.slices, ms.brain, ms.native_index, settings)
    maps = torch.from_numpy(plain.mean_map)[:, None]
    assert np.allclose(plain.scores, slice_scores(maps).numpy())  # the paper's canvas mean by default
    meta = json.loads((model_dir / "model.json").read_text())
    meta["slice_score"] = "topk"
    (model_dir / "model.json").write_text(json.dumps(meta))
    topk = engine.load_ensemble(model_dir, device="cpu")
    assert topk.info.slice_score == "topk"
    result = topk.analyse_model_space(ms.slices, ms.brain, ms.native_index, settings)
    brain = torch.from_numpy(ms.brain)[:, None]
    assert np.allclose(result.scores, slice_scores(maps, brain, mode="topk").numpy())
    assert np.array_equal(result.mean_map, plain.mean_map)  # only the score changes
    meta["slice_score"] = "loudest"
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="slice_score"):
        engine.load_ensemble(model_dir, device="cpu")


def test_a_member_trained_on_other_tasks_than_its_fold_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from engine.errors import ModelLoadError

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["members"]["1"]["training"]["train_tasks"] == [0, 1, 3]
    engine.load_ensemble(model_dir, device="cpu")  # as trained: fine
    meta["members"]["1"]["training"]["train_tasks"] = [0, 1, 4]
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="fold 1 is tasks"):
        engine.load_ensemble(model_dir, device="cpu")
    assert engine.load_ensemble(model_dir, device="cpu", folds=[0]).info.folds == (0,)


def _torch_values(value: object, path: str, depth: int = 0) -> list[str]:
    """Paths of torch objects (tensors, modules, devices, dtypes) inside a public value."""
    if depth > 4:
        return []
    if isinstance(value, torch.Tensor | torch.nn.Module | torch.device | torch.dtype | torch.Generator):
        return [path]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [p for f in dataclasses.fields(value)
                for p in _torch_values(getattr(value, f.name), f"{path}.{f.name}", depth + 1)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _torch_values(v, f"{path}[{k!r}]", depth + 1)]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _torch_values(v, f"{path}[{i}]", depth + 1)]
    return []


def test_no_torch_type_leaves_the_public_api(oracle: Ensemble) -> None:
    """The engine promises numpy arrays and frozen dataclasses: an ensemble's public attributes, its info and a
    whole-volume result hold no torch object."""
    public = {name: getattr(oracle, name) for name in dir(oracle)
              if not name.startswith("_") and not callable(getattr(oracle, name))}
    found = [p for name, value in public.items() for p in _torch_values(value, f"ensemble.{name}")]
    volume = engine.load_volume(real_scan("ixi-t1/val/IXI056-HH-1327_T1.nii.gz"))
    brain = engine.load_mask(real_scan("ixi-t1/val/IXI056-HH-1327_brainmask.nii.gz"), volume)
    result = oracle.analyse(volume, settings=engine.AnalysisSettings(slice_stride=6), brain_mask=brain)
    found += _torch_values(result, "result")
    assert found == []
    assert isinstance(result.anomaly_map, np.ndarray)

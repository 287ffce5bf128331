"""The model shipped in resources/: complete, within its size budget, and working on the bundled sample.

These tests run the real bundled weights (CPU, one DDIM step, a handful of slices), so a member saved wrongly,
loaded into the wrong architecture, or calibrated with other settings than it runs with fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.checkpoints import read_model_json, sha256_file
from engine.config import Preset, get_preset
from tests.conftest import DATA_DIR, REPO_ROOT, SAMPLE_IXI, SAMPLE_IXI_MASK, SAMPLE_MS, SAMPLE_MS_LESION

MODEL = REPO_ROOT / "resources" / "models" / "condiff-t1-small"
SAMPLE = SAMPLE_MS
SAMPLE_LESION = SAMPLE_MS_LESION
HEALTHY_SAMPLE = SAMPLE_IXI
HEALTHY_SAMPLE_MASK = SAMPLE_IXI_MASK
SIZE_BUDGET = 50_000_000  # bytes for all member weights together (issue 5)


@pytest.fixture(scope="module")
def meta() -> dict:
    return read_model_json(MODEL)


def test_members_are_fp16_safetensors_within_the_size_budget(meta: dict) -> None:
    members = meta["members"]
    assert members, "the bundled model has no member"
    total = 0
    for fold, entry in members.items():
        path = MODEL / entry["file"]
        assert entry["dtype"] == "float16"
        assert int(fold) == entry["fold"]
        assert sha256_file(path) == entry["sha256"]
        total += path.stat().st_size
    # ten members of this size must fit: the budget is for the full ensemble, not for what is trained so far
    assert total / len(members) * 10 <= SIZE_BUDGET
    on_disk = {p.name for p in MODEL.glob("member-*.safetensors")}
    assert on_disk == {e["file"] for e in members.values()}  # no stray or missing weight file


def test_model_json_describes_the_small_preset_and_its_calibration(meta: dict) -> None:
    preset = Preset.from_dict(meta["preset"])
    # the shipped weights were trained with the preset the code names (its sampler default is chosen per model)
    assert preset.training_identity() == get_preset("small").training_identity()
    calibration = meta["calibration"]
    assert calibration["sampler"] == preset.default_sampler
    assert calibration["steps"] == preset.default_steps  # calibrated with the settings the viewer runs by default
    assert 0 < calibration["threshold"] < 1
    assert calibration["healthy_fpr"] <= 0.01
    card = meta["card"]
    assert card["training_command"].startswith("condiff-engine train ")
    for entry in meta["members"].values():
        training = entry["training"]
        assert training["steps"] > 0
        assert training["seconds"] > 0
        assert training["checks"], "each member keeps its healthy-restoration and anomaly-removal checks"
    for name, evaluation in meta.get("evaluations", {}).items():
        assert evaluation["command"].startswith("condiff-engine evaluate "), name
        assert sorted(evaluation["members"]) == sorted(int(f) for f in meta["members"]), (
            f"evaluation {name} was measured with other members than the ones shipped")


def test_bundled_model_analyses_the_bundled_sample_on_its_grid() -> None:
    import nibabel as nib  # noqa: PLC0415

    from engine import AnalysisSettings, load_ensemble, load_volume  # noqa: PLC0415
    from engine.preprocess import foreground_mask  # noqa: PLC0415

    ensemble = load_ensemble(MODEL, device="cpu")
    volume = load_volume(SAMPLE)
    lesion = np.asarray(nib.load(SAMPLE_LESION).dataobj) > 0
    axis = 2
    counts = lesion.sum(axis=(0, 1))
    chosen = [int(k) for k in np.argsort(counts)[-3:]]  # the three axial slices with the most lesion
    result = ensemble.analyse(volume, settings=AnalysisSettings(), slices=chosen)
    assert result.anomaly_map.shape == volume.data.shape
    assert result.slice_axis == axis
    assert np.isfinite(result.anomaly_map).all()
    assert result.anomaly_map.min() >= 0.0
    assert set(np.flatnonzero(result.analysed)) == set(chosen)
    brain = foreground_mask(volume.data)  # the brain the engine uses when no mask is given
    maps = result.anomaly_map[..., chosen]
    assert maps[brain[..., chosen]].mean() > 0
    assert (maps[~brain[..., chosen]] == 0).all()
    others = np.ones(volume.data.shape[axis], bool)
    others[chosen] = False
    assert (result.anomaly_map[..., others] == 0).all()  # nothing written where nothing was analysed


def test_bundled_healthy_sample_with_skull_is_analysed_inside_its_brain_mask() -> None:
    from engine import AnalysisSettings, load_ensemble, load_mask, load_volume  # noqa: PLC0415

    ensemble = load_ensemble(MODEL, device="cpu")
    volume = load_volume(HEALTHY_SAMPLE)
    brain = load_mask(HEALTHY_SAMPLE_MASK, volume)
    assert any("not skull-stripped" in w for w in ensemble.input_warnings(volume, None))  # the skull is noticed
    assert ensemble.input_warnings(volume, brain) == ()
    n = volume.data.shape[1]  # IXI is stored P-S-R: axis 1 is axial
    chosen = [n // 2 - 4, n // 2, n // 2 + 4]
    result = ensemble.analyse(volume, settings=AnalysisSettings(), slices=chosen, brain_mask=brain)
    assert result.slice_axis == 1
    assert result.warnings == ()
    maps = result.anomaly_map[:, chosen, :]
    inside = brain[:, chosen, :]
    assert (maps[~inside] == 0).all()  # the skull and background are never scored
    assert np.isfinite(maps).all()
    assert maps[inside].max() > 0
    # a healthy brain (one of the ten calibration scans) is flagged on a small fraction of its area only
    flagged = float((maps[inside] >= ensemble.info.calibration.threshold).mean())
    assert flagged < 0.05, flagged


def test_bundled_model_scores_a_glioma_above_the_healthy_brain_around_it(require_data: Path) -> None:
    import nibabel as nib  # noqa: PLC0415

    from engine import AnalysisSettings, load_ensemble, load_volume  # noqa: PLC0415

    case = DATA_DIR / "brats2018-dev" / "Brats18_TCIA10_637_1"
    volume = load_volume(case / "Brats18_TCIA10_637_1_t1.nii.gz")
    lesion = np.asarray(nib.load(case / "Brats18_TCIA10_637_1_seg.nii.gz").dataobj) > 0
    chosen = [int(k) for k in np.argsort(lesion.sum(axis=(0, 1)))[-3:]]  # BraTS is stored L-P-S: axis 2 is axial
    result = load_ensemble(MODEL, device="cpu").analyse(volume, settings=AnalysisSettings(), slices=chosen)
    assert result.slice_axis == 2
    maps = result.anomaly_map[..., chosen]
    brain = (volume.data > 0)[..., chosen]
    in_lesion = maps[lesion[..., chosen] & brain].mean()
    in_healthy = maps[brain & ~lesion[..., chosen]].mean()
    assert in_lesion > 1.2 * in_healthy, (in_lesion, in_healthy)


def test_bundled_model_restores_a_healthy_scan_faithfully(require_data: Path) -> None:
    import torch  # noqa: PLC0415

    from engine import AnalysisSettings, load_ensemble  # noqa: PLC0415
    from engine.anomaly import anomaly_map  # noqa: PLC0415
    from engine.data import HealthySlices, find_scans  # noqa: PLC0415

    ensemble = load_ensemble(MODEL, device="cpu")
    scan = find_scans(DATA_DIR / "ixi-t1" / "val")[0]
    healthy = HealthySlices([scan], ensemble.preset.preprocess)
    every = slice(None, None, 6)  # a dozen slices spread over the brain
    images, brain = healthy.images[every], healthy.foreground[every]
    result = ensemble.analyse_model_space(images, brain, healthy.native_index[every], AnalysisSettings())
    restored = torch.from_numpy(result.restored[:, None])
    dssim = anomaly_map(restored, torch.from_numpy(images[:, None]), convention="standard")[:, 0].numpy()
    # measured 0.156 over the 10 IXI validation scans; random weights give ~0.8
    assert dssim[brain].mean() < 0.3
    assert np.abs(result.restored - images)[brain].mean() < 0.1

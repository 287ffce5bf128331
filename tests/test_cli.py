"""The condiff-engine command line: the documented commands work, and every bad input gets one clear line.

Each bad input must give exit status != 0, a single ``condiff-engine: error: <file>: <problem>`` line naming the file,
no traceback, and nothing half-written in the output folder.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.cli import main
from engine.errors import EngineError
from tests.conftest import DATA_DIR, REPO_ROOT, SAMPLE_IXI, SAMPLE_IXI_MASK, SAMPLE_MS, real_scan

IXI_VAL = DATA_DIR / "ixi-t1" / "val"  # tests that use it take the require_data fixture
BRATS = DATA_DIR / "brats2018-dev"
MS_T1 = SAMPLE_MS


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_info_reports_the_papers_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "paper", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 72_410_241
    assert info["input_size"] == 128
    assert info["prediction_type"] == "epsilon"


def test_one_json_convention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the report on stdout instead of the table; --json FILE writes it and keeps the table."""
    assert main(["info", "--preset", "tiny", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    target = tmp_path / "info.json"
    assert main(["info", "--preset", "tiny", "--json", str(target)]) == 0
    assert json.loads(target.read_text()) == printed
    table = capsys.readouterr().out
    assert table.startswith("preset")
    for command in ("info", "evaluate", "bench"):
        action = next(a for a in _subparser(command)._actions if a.dest == "json")  # noqa: SLF001
        assert (action.nargs, action.const) == ("?", "-")


def _subparser(name: str):  # noqa: ANN202 - an argparse parser
    from engine.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices[name]  # noqa: SLF001


def test_info_describes_a_model_folder(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    assert main(["info", "--model", str(tiny_model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["members"] == [0, 1]
    assert info["preset"] == "tiny"
    assert info["sampler"] == {"name": "ddim", "steps": 2, "timesteps": [999, 499], "trained_timesteps": "all"}


def test_info_names_the_timesteps_the_bundled_model_runs_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(REPO_ROOT / "resources" / "models" / "condiff-t1-small"), "--json"]) == 0
    sampler = json.loads(capsys.readouterr().out)["sampler"]
    assert sampler["name"] == "ddim"
    assert set(sampler["timesteps"]) <= set(sampler["trained_timesteps"])  # only timesteps its members learned
    assert sampler["timesteps"][0] == 999


def test_train_the_done_when_command(tmp_path: Path, require_data: Path) -> None:
    out = tmp_path / "X"
    assert main(["train", "--data", str(IXI_VAL), "--preset", "tiny", "--fold", "0", "--max-steps", "20",
                 "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    import engine

    model = engine.load_ensemble(out, device="cpu")
    assert model.info.members == 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["members"]["0"]["training"]["steps"] == 20
    assert meta["training_data"]["val_scans"] == 1


def test_train_records_the_anomaly_weight_and_keeps_a_folder_to_one(tmp_path: Path, require_data: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "W"
    common = ["train", "--data", str(IXI_VAL), "--preset", "tiny", "--max-steps", "5", "--out", str(out),
              "--device", "cpu", "--threads", "1"]
    assert main([*common, "--fold", "0", "--anomaly-weight", "2.5"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["preset"]["train"]["anomaly_loss_weight"] == 2.5
    before = (out / "model.json").read_bytes()
    assert main([*common, "--fold", "1"]) == 1  # the preset's weight (0) differs from the folder's
    assert (out / "model.json").read_bytes() == before
    assert not (out / "member-1.safetensors").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(out) in err[0]
    assert "train.anomaly_loss_weight: 2.5 in the folder, 0.0 asked" in err[0]


@pytest.mark.parametrize("scan", [
    "brats2018-dev/Brats18_2013_2_1/Brats18_2013_2_1_t1.nii.gz",
    "ms-lesjak/patient07/patient07_T1.nii.gz",
    "ixi-t1/val/IXI056-HH-1327_T1.nii.gz",
])
def test_infer_writes_outputs_on_the_inputs_grid(tmp_path: Path, tiny_model: Path, scan: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = real_scan(scan)
    args = ["infer", str(source), "--model", str(tiny_model), "--out", str(tmp_path), "--threshold", "0.5",
            "--steps", "1", "--device", "cpu", "--threads", "1"]
    if "IXI" in scan:
        args += ["--brain-mask", str(source).replace("_T1.nii.gz", "_brainmask.nii.gz")]
    assert main(args) == 0
    reference = nib.load(source)
    written = sorted(tmp_path.glob("*.nii.gz"))
    assert len(written) == 4
    for path in written:
        img = nib.load(path)
        assert img.shape == reference.shape
        assert np.allclose(img.affine, reference.affine, atol=1e-5)
    sidecar = json.loads(next(tmp_path.glob("*_desc-anomaly_mask.json")).read_text())
    assert sidecar["Model"] == "tiny-test-v1.0.0"
    assert sidecar["Threshold"] == 0.5
    assert sidecar["ThresholdUnits"]
    assert sidecar["Seed"] == 0
    assert sidecar["SamplerSteps"] == 1
    assert "GeneratedBy" in sidecar
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # the findings: a table beside the mask, the same one printed
    table = next(tmp_path.glob("*_desc-anomaly_findings.tsv")).read_text().splitlines()
    assert table[0].split("\t")[:2] == ["id", "volume_ml"]
    findings = json.loads(next(tmp_path.glob("*_desc-anomaly_findings.json")).read_text())
    assert findings["threshold"] == 0.5
    assert findings["Model"] == "tiny-test-v1.0.0"
    assert len(findings["findings"]) == len(table) - 1
    mask = np.asarray(nib.load(next(tmp_path.glob("*_desc-anomaly_mask.nii.gz"))).dataobj)
    voxel_ml = float(np.prod(reference.header.get_zooms()[:3])) / 1000
    assert sum(f["voxels"] for f in findings["findings"]) <= int(mask.sum())
    assert all(f["volume_ml"] >= 0.05 for f in findings["findings"])
    assert all(abs(f["volume_ml"] - f["voxels"] * voxel_ml) < 1e-3 for f in findings["findings"])
    out = capsys.readouterr().out
    assert f"{len(findings['findings'])} finding(s) at threshold 0.5" in out
    printed = out.split("ranked by")[1].splitlines()[1:]
    if findings["findings"]:
        assert printed[0].split()[:2] == ["id", "volume_ml"]
        assert printed[1].split()[:2] == table[1].split("\t")[:2]  # the same first row as the TSV
    else:
        assert "no findings" in printed[0]


def test_evaluate_writes_the_documented_keys(tmp_path: Path, tiny_model: Path, require_data: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    argv = ["evaluate", "--model", str(model), "--dataset", str(BRATS), "--modality", "t1", "--max-cases", "2",
            "--steps", "1", "--json", str(report_path), "--device", "cpu", "--threads", "1", "--record", "dev"]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    # --record keeps the card's summary in model.json: the same numbers and the command that made them
    recorded = json.loads((model / "model.json").read_text())["evaluations"]["dev"]
    assert recorded["metrics"]["ap_pixel"] == pytest.approx(report["ap_pixel"], abs=1e-4)
    assert recorded["controls"]["noise"]["ap_pixel"] == pytest.approx(report["noise"]["ap_pixel"], abs=1e-4)
    assert recorded["counts"] == report["counts"]
    assert recorded["command"].split()[:2] == ["condiff-engine", "evaluate"]
    assert "--record dev" in recorded["command"]
    assert (recorded["sampler"], recorded["steps"]) == ("ddim", 1)
    for key in ("ap_image", "auroc_image", "ap_pixel", "max_dice", "best_threshold"):
        assert 0.0 <= report[key] <= 1.0 or key == "best_threshold"
        assert key in report["random"] or key == "best_threshold"
    assert set(report["noise"]) >= {"ap_image", "auroc_image", "ap_pixel", "max_dice"}
    assert set(report["brain_area"]) == {"ap_image", "auroc_image"}
    counts = report["counts"]
    assert counts["cases"] == 2
    assert 0 < counts["lesion_slices"] < counts["slices"]
    assert counts["pixels"] == counts["slices"] * 32 * 32
    # The random control is, like every map, zero outside the brain: chance is the lesion share of brain pixels.
    assert report["random"]["ap_pixel"] == pytest.approx(counts["lesion_pixels_in_brain"] / counts["brain_pixels"])
    assert counts["lesion_pixels_in_brain"] <= counts["lesion_pixels"]
    assert counts["brain_pixels"] < counts["pixels"]
    assert {"ap_image_topk", "auroc_image_topk", "ap_image_brain_mean"} <= set(report)
    assert set(report["at_threshold"]) == {"threshold", "lesion_sensitivity", "dice", "healthy_brain_flagged"}
    assert "AP_p" in capsys.readouterr().out


def test_evaluate_synthetic_scores_held_out_tasks_on_healthy_scans(tmp_path: Path, tiny_model: Path,
                                                                   require_data: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    report_path = tmp_path / "syn.json"
    argv = ["evaluate", "--model", str(model), "--synthetic", str(IXI_VAL), "--tasks", "2,3", "--members", "1",
            "--max-cases", "2", "--synthetic-slices", "30", "--steps", "1", "--threads", "1", "--json",
            str(report_path), "--record", "syn"]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["members"] == [1]
    assert report["tasks"] == [2, 3]
    assert report["counts"]["slices"] == 30
    assert 0 < report["counts"]["anomalous_slices"] < 30
    for key in ("ap_pixel", "max_dice", "ap_image", "auroc_image", "healthy_dssim"):
        assert 0.0 <= report[key] <= 1.0
    recorded = json.loads((model / "model.json").read_text())["evaluations"]["syn"]
    assert recorded["removal"]["mae_to_truth"] == pytest.approx(report["mae_to_truth"])
    assert "removal:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["infer", "scan.nii.gz", "--out", "o", "--steps", "0"],
    ["infer", "scan.nii.gz", "--out", "o", "--batch-size", "0"],
    ["infer", "scan.nii.gz", "--out", "o", "--slice-stride", "-2"],
    ["infer", "scan.nii.gz", "--out", "o", "--threshold", "nan"],
    ["calibrate", "--data", "d", "--fpr", "2"],
    ["calibrate", "--data", "d", "--fpr", "0"],
    ["evaluate", "--dataset", "d", "--max-cases", "0"],
    ["evaluate", "--synthetic", "d", "--tasks", "7"],
    ["train", "--data", "d", "--out", "o", "--max-steps", "0"],
    ["train", "--data", "d", "--out", "o", "--threads", "0"],
    ["train", "--data", "d", "--out", "o", "--train-timesteps", "-1"],
    ["train", "--data", "d", "--out", "o", "--condition-noise", "nan"],
    ["bench", "--train-steps", "0"],
])
def test_out_of_range_values_are_one_line_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("condiff-engine")


def test_settings_the_engine_refuses_are_one_line_errors(tiny_model: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    scan = SAMPLE_IXI
    # 2000 DDIM steps is more than the 1000 timesteps the model has: a ConfigError, shown as one line.
    assert main(["infer", str(scan), "--model", str(tiny_model), "--out", "unused", "--steps", "2000",
                 "--threshold", "0.5"]) == 1
    assert "steps" in _error_line(capsys)
    assert main(["evaluate", "--model", str(tiny_model)]) == 1
    assert "--dataset" in _error_line(capsys)


def test_calibrate_stores_a_threshold_that_infer_then_uses(tmp_path: Path, tiny_model: Path, require_data: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert main(["calibrate", "--model", str(model), "--data", str(IXI_VAL), "--max-scans", "2", "--steps", "1",
                 "--fpr", "0.05", "--device", "cpu", "--threads", "1"]) == 0
    calibration = json.loads((model / "model.json").read_text())["calibration"]
    assert 0.0 <= calibration["healthy_fpr"] <= 0.05  # never more than asked, even with ties
    assert calibration["threshold"] > 0
    assert calibration["scans"] == 2
    # the calibration also says how faithfully it restored its scans: the numbers `evaluate --healthy` reports
    from engine.calibration import healthy_report
    from engine.data import find_scans
    from engine.ensemble import load_ensemble
    from engine.results import AnalysisSettings

    report = healthy_report(load_ensemble(model, device="cpu"), find_scans(IXI_VAL)[:2],
                            AnalysisSettings(steps=1))
    assert 0 < calibration["restoration_dssim_in_brain"] < 1
    assert calibration["restoration_dssim_in_brain"] == pytest.approx(report.restoration_dssim_in_brain)
    assert calibration["restoration_mae_in_brain"] == pytest.approx(report.restoration_mae_in_brain)
    out = tmp_path / "out"
    assert main(["infer", str(MS_T1), "--model", str(model), "--out", str(out), "--steps", "1", "--device", "cpu",
                 "--threads", "1"]) == 0
    sidecar = json.loads(next(out.glob("*.json")).read_text())
    assert sidecar["Threshold"] == pytest.approx(calibration["threshold"])
    assert sidecar["ThresholdSource"] == "model calibration"


def test_calibrate_can_hold_scans_out_and_report_what_they_flag(tmp_path: Path, tiny_model: Path,
                                                               require_data: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert main(["calibrate", "--model", str(model), "--data", str(IXI_VAL), "--max-scans", "3", "--hold-out", "1",
                 "--steps", "1", "--fpr", "0.05", "--threads", "1", "--slice-score", "topk"]) == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["slice_score"] == "topk"  # the score the model reports, and whose healthy percentiles were measured
    calibration = meta["calibration"]
    assert (calibration["scans"], calibration["heldout_scans"]) == (2, 1)
    # The held-out scan's flagged share is measured, not chosen: it may differ from the target, but it is a share.
    assert 0.0 <= calibration["heldout_fpr"] <= 1.0
    assert 0.0 < calibration["heldout_dssim_in_brain"] < 1.0
    from engine.calibration import calibrate
    from engine.data import find_scans
    from engine.ensemble import load_ensemble
    from engine.results import AnalysisSettings

    ensemble = load_ensemble(model, device="cpu")
    scans = find_scans(IXI_VAL)[:3]
    settings = AnalysisSettings(steps=1)
    fitted = calibrate(ensemble, scans[:2], settings, fpr=0.05)
    assert fitted.threshold == pytest.approx(calibration["threshold"])  # the held-out scan did not move it
    with pytest.raises(EngineError, match="besides"):
        calibrate(ensemble, scans[:2], settings, hold_out=2)


# ---------------------------------------------------------------------------------------------------- bad input
def _bad_scans(tmp_path: Path) -> dict[str, Path]:
    good = nib.load(MS_T1)
    affine = good.affine
    files = {}
    files["4d"] = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), affine), files["4d"])
    files["2d"] = tmp_path / "two_d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), affine), files["2d"])
    files["zero"] = tmp_path / "zeros.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), affine), files["zero"])
    files["truncated"] = tmp_path / "truncated.nii.gz"
    files["truncated"].write_bytes(MS_T1.read_bytes()[:20000])
    files["text"] = tmp_path / "notes.nii.gz"
    files["text"].write_bytes(gzip.compress(b"this is not a scan"))
    files["missing"] = tmp_path / "missing.nii.gz"
    return files


@pytest.mark.parametrize("kind", ["4d", "2d", "zero", "truncated", "text", "missing"])
def test_infer_rejects_bad_scans_with_one_line(tmp_path: Path, tiny_model: Path, kind: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    scan = _bad_scans(tmp_path)[kind]
    out = tmp_path / "out"
    assert main(["infer", str(scan), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--device", "cpu"]) != 0
    line = _error_line(capsys)
    assert str(scan) in line
    assert _entries(out) == []


def test_infer_rejects_a_mask_on_another_grid(tmp_path: Path, tiny_model: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    mask = SAMPLE_IXI_MASK
    out = tmp_path / "out"
    assert main(["infer", str(MS_T1), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--brain-mask", str(mask), "--device", "cpu"]) != 0
    assert str(mask) in _error_line(capsys)
    assert _entries(out) == []


def test_infer_rejects_an_altered_model(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    member = model / "member-1.safetensors"
    member.write_bytes(member.read_bytes()[:-1] + b"\x00")
    out = tmp_path / "out"
    assert main(["infer", str(MS_T1), "--model", str(model), "--out", str(out), "--threshold", "0.5",
                 "--device", "cpu"]) != 0
    assert "sha256" in _error_line(capsys)
    assert _entries(out) == []


def test_infer_rejects_a_model_with_a_missing_member(tmp_path: Path, tiny_model: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "member-0.safetensors").unlink()
    assert main(["infer", str(MS_T1), "--model", str(model), "--out", str(tmp_path / "out"), "--threshold", "0.5",
                 "--device", "cpu"]) != 0
    assert "member-0.safetensors" in _error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_infer_into_an_unwritable_folder(tmp_path: Path, tiny_model: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    assert main(["infer", str(MS_T1), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--steps", "1", "--device", "cpu"]) != 0
    assert str(out) in _error_line(capsys)


def test_infer_into_a_path_that_is_a_file(tmp_path: Path, tiny_model: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a_file"
    out.write_text("x")
    assert main(["infer", str(MS_T1), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--steps", "1", "--device", "cpu"]) != 0
    assert str(out) in _error_line(capsys)
    assert out.read_text() == "x"


def _train(data: Path, out: Path) -> int:
    return main(["train", "--data", str(data), "--preset", "tiny", "--max-steps", "2", "--out", str(out),
                 "--device", "cpu", "--threads", "1"])


def test_train_on_a_folder_without_scans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train(empty, tmp_path / "model") != 0
    assert str(empty) in _error_line(capsys)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("problem", ["corrupt", "mask_grid", "4d", "zero"])
def test_train_on_a_folder_with_a_bad_scan(tmp_path: Path, problem: str, require_data: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for src in sorted(IXI_VAL.glob("*"))[:4]:  # two good scans with masks
        shutil.copy(src, data / src.name)
    bad = data / "IXI999-XX-0000_T1.nii.gz"
    mask = data / "IXI999-XX-0000_brainmask.nii.gz"
    good_img = nib.load(sorted(IXI_VAL.glob("*_T1.nii.gz"))[0])
    shutil.copy(sorted(IXI_VAL.glob("*_brainmask.nii.gz"))[0], mask)
    if problem == "corrupt":
        bad.write_bytes(sorted(IXI_VAL.glob("*_T1.nii.gz"))[0].read_bytes()[:5000])
    elif problem == "mask_grid":
        shutil.copy(sorted(IXI_VAL.glob("*_T1.nii.gz"))[0], bad)
        nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)), mask)
    elif problem == "4d":
        nib.save(nib.Nifti1Image(np.ones((*good_img.shape, 2), np.float32), good_img.affine), bad)
    else:
        nib.save(nib.Nifti1Image(np.zeros(good_img.shape, np.float32), good_img.affine), bad)
    out = tmp_path / "model"
    assert _train(data, out) != 0
    line = _error_line(capsys)
    assert "IXI999-XX-0000" in line
    assert not list(out.glob("member-*")) if out.exists() else True


def test_train_into_a_path_that_is_a_file(tmp_path: Path, require_data: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a_file"
    out.write_text("x")
    assert _train(IXI_VAL, out) != 0
    assert str(out) in _error_line(capsys)
    assert out.read_text() == "x"


def test_bad_arguments_exit_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "x", "--out", "y", "--fold", "11"])
    assert info.value.code == 2
    assert "fold" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "x", "--out", "y", "--anomaly-weight", "-1"])
    assert info.value.code == 2
    assert ">= 0" in capsys.readouterr().err


def test_infer_dicom_seg_from_a_dicom_series(tmp_path: Path, tiny_model: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import pydicom

    from tests.dicom_factory import write_series

    sample = nib.load(MS_T1)
    block = np.asarray(sample.dataobj, dtype=np.float32)[40:140, 50:180, 60:110]
    affine = sample.affine.copy()
    affine[:3, 3] = (sample.affine @ [40, 50, 60, 1])[:3]
    series = tmp_path / "series"
    write_series(block, affine, series)
    out = tmp_path / "out"
    assert main(["infer", str(series), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--steps", "1", "--device", "cpu", "--threads", "1", "--dicom-seg"]) == 0
    seg_path = out / "series_desc-anomaly_seg.dcm"
    assert f"dicom_seg     {seg_path}" in capsys.readouterr().out
    seg = pydicom.dcmread(seg_path)
    findings = json.loads((out / "series_desc-anomaly_findings.json").read_text())
    assert len(seg.SegmentSequence) == max(1, len(findings["findings"]))
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID


def test_infer_dicom_seg_needs_a_dicom_source(tmp_path: Path, tiny_model: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(MS_T1), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--dicom-seg"]) == 1
    line = _error_line(capsys)
    assert "--dicom-seg needs a DICOM series folder" in line
    assert str(MS_T1) in line
    assert _entries(out) == []


def test_infer_report_writes_one_pdf_page(tmp_path: Path, tiny_model: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(MS_T1), "--model", str(tiny_model), "--out", str(out), "--threshold", "0.5",
                 "--steps", "1", "--device", "cpu", "--threads", "1", "--report"]) == 0
    report = out / "patient07_desc-anomaly_report.pdf"
    assert f"report        {report}" in capsys.readouterr().out
    content = report.read_bytes()
    assert content.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", content)) == 1


def test_the_threshold_is_calibrated_on_the_map_infer_writes_and_across_shifted_acquisitions(
        tmp_path: Path, tiny_model: Path, require_data: Path) -> None:
    from engine.calibration import threshold_for_fpr
    from engine.data import find_scans
    from engine.ensemble import load_ensemble
    from engine.readers import load_mask, load_volume
    from engine.results import AnalysisSettings

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert main(["calibrate", "--model", str(model), "--data", str(IXI_VAL), "--max-scans", "2", "--fpr", "0.05",
                 "--shifts", "thick,noise", "--threads", "1"]) == 0
    calibration = json.loads((model / "model.json").read_text())["calibration"]
    assert calibration["grid"] == "native"
    assert set(calibration["shift_thresholds"]) == {"thick", "noise"}
    # The plain threshold is the one of the whole-volume maps `infer` writes (scan grid, stride, filled slices).
    ensemble = load_ensemble(model, device="cpu")
    values = []
    for scan in find_scans(IXI_VAL)[:2]:
        volume = load_volume(scan.image)
        brain = load_mask(scan.mask, volume)
        values.append(ensemble.analyse(volume, brain_mask=brain, settings=AnalysisSettings()).anomaly_map[brain])
    plain = threshold_for_fpr(np.concatenate(values), 0.05)
    assert calibration["threshold"] == pytest.approx(max(plain, *calibration["shift_thresholds"].values()))
    assert calibration["threshold"] >= plain
    # Infer with the calibrated settings: the threshold holds; with other steps, the sidecar says it does not.
    for steps, calibrated in ((None, True), ("1", False)):
        out = tmp_path / f"out{steps}"
        extra = ["--steps", steps] if steps else []
        assert main(["infer", str(MS_T1), "--model", str(model), "--out", str(out), "--threads", "1", *extra]) == 0
        sidecar = json.loads(next(out.glob("*.json")).read_text())
        assert sidecar["ThresholdCalibrated"] is calibrated
        assert bool(sidecar["UncalibratedFor"]) is not calibrated
    assert "1 steps (calibrated: 2)" in sidecar["UncalibratedFor"]


# Without --train-timesteps the small preset keeps its own choice: 2 DDIM steps on its 5-timestep grid (condiff 3.2).
@pytest.mark.parametrize(("timesteps", "steps"), [(None, 2), (2, 2), (3, 3), (0, 2)])
def test_members_trained_on_n_timesteps_are_run_with_the_n_step_sampler(timesteps: int | None, steps: int) -> None:
    from engine.cli import _training_preset, build_parser

    argv = ["train", "--data", "d", "--out", "o", "--preset", "small"]
    args = build_parser().parse_args(argv + (["--train-timesteps", str(timesteps)] if timesteps is not None else []))
    preset = _training_preset(args)
    assert preset.default_sampler == "ddim"
    assert preset.default_steps == steps
    if timesteps:
        assert preset.diffusion.train_timesteps == timesteps

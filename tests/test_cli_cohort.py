"""``condiff-engine infer`` on a cohort (issue 22): many scans, a table, failures recorded, resumable after a kill."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import pytest

from engine.cli import main
from tests.bad_inputs import head, save_nifti

THRESHOLD = "0.3"
NIFTI_KINDS = ("mask", "map", "spread", "restored")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.bad_inputs import make_model_folder

    return make_model_folder(tmp_path_factory.mktemp("cohort") / "model")


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """Five small heads of different sizes and one damaged file (a gzip cut in half)."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(5):
        save_nifti(folder / f"sub-{i:02d}_T1w.nii.gz", head((36 + 2 * i, 40, 32), seed=i))
    bad = save_nifti(folder / "sub-05_T1w.nii.gz", head((36, 40, 32), seed=9))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return folder


def infer(*scans: Path, model: Path, out: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["infer", *map(str, scans), "--model", str(model), "--out", str(out), "--threshold", THRESHOLD,
                 "--steps", "1", "--device", "cpu", "--threads", "1", *extra])


def table(out: Path, name: str = "cohort.tsv") -> list[dict[str, str]]:
    with (out / name).open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def payloads(out: Path) -> dict[str, bytes]:
    """Every NIfTI output's bytes (inside the gzip wrapper, whose header holds a time stamp)."""
    return {p.name: gzip.decompress(p.read_bytes()) for p in sorted(out.glob("*_desc-*.nii.gz"))}


def stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*_desc-*"))}


def test_a_cohort_records_its_bad_scan_and_goes_on(cohort: Path, model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert infer(cohort, model=model, out=out) == 1  # one scan failed: the exit status says so
    rows = table(out)
    assert len(rows) == 6
    assert [r["status"] for r in rows] == ["done"] * 5 + ["failed"]  # failures last
    loads = [float(r["flagged_ml"]) for r in rows[:5]]
    assert loads == sorted(loads, reverse=True)  # sorted by anomaly load
    (failure,) = table(out, "failures.tsv")
    assert failure["id"] == "sub-05_T1w"
    assert failure["path"].endswith("sub-05_T1w.nii.gz")
    assert "\n" not in failure["reason"]
    assert failure["reason"]
    for i in range(5):
        for kind in ("anomaly_mask.nii.gz", "anomaly_mask.json", "anomaly_findings.tsv", "anomalyscore_map.nii.gz"):
            assert (out / f"sub-{i:02d}_desc-{kind}").exists(), kind
    side = json.loads((out / "sub-00_desc-anomaly_mask.json").read_text())
    assert side["Summary"]["id"] == "sub-00_T1w"
    assert json.loads((out / "cohort.json").read_text())["settings"]["threshold"] == float(THRESHOLD)
    printed = capsys.readouterr().out
    assert "5 of 6 scans analysed" in printed
    assert "failures.tsv" in printed


def test_a_killed_cohort_resumes_without_redoing_finished_scans(cohort: Path, model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole"
    assert infer(cohort, model=model, out=whole) == 1

    # The same cohort, killed after its third scan (an interrupt the cohort does not catch), then run again.
    import engine.cohort as cohort_module

    real = cohort_module.infer_scan
    calls: list[str] = []

    def dies_after_three(*args, **kwargs):  # noqa: ANN002, ANN003
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(kwargs["stem"])
        return real(*args, **kwargs)

    killed = tmp_path / "killed"
    monkeypatch.setattr(cohort_module, "infer_scan", dies_after_three)
    assert infer(cohort, model=model, out=killed) == 130  # what Ctrl-C or a kill signal's handler gives
    monkeypatch.setattr(cohort_module, "infer_scan", real)
    assert calls == ["sub-00_T1w", "sub-01_T1w", "sub-02_T1w"]
    before = stamps(killed)
    assert sorted(r["id"] for r in table(killed)) == calls  # the table holds what was finished

    assert infer(cohort, model=model, out=killed) == 1
    rows = {r["id"]: r["status"] for r in table(killed)}
    assert [rows[f"sub-0{i}_T1w"] for i in range(3)] == ["up to date"] * 3
    assert [rows[f"sub-0{i}_T1w"] for i in (3, 4)] == ["done"] * 2
    after = stamps(killed)
    assert all(after[name] == stamp for name, stamp in before.items())  # nothing of the first three rewritten
    assert payloads(killed) == payloads(whole)  # and everything equals an uninterrupted run's

    # --force redoes them all; the files come out the same.
    assert infer(cohort, model=model, out=killed, extra=("--force",)) == 1
    assert {r["status"] for r in table(killed)} == {"done", "failed"}
    assert all(stamps(killed)[name] != stamp for name, stamp in before.items() if name.endswith(".nii.gz"))
    assert payloads(killed) == payloads(whole)


def test_a_changed_setting_makes_a_scan_out_of_date(cohort: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scan = cohort / "sub-00_T1w.nii.gz"
    other = cohort / "sub-01_T1w.nii.gz"
    assert infer(scan, other, model=model, out=out) == 0
    assert infer(scan, other, model=model, out=out, extra=("--seed", "1")) == 0  # another seed: redone
    assert {r["status"] for r in table(out)} == {"done"}
    assert infer(scan, other, model=model, out=out, extra=("--seed", "1")) == 0
    assert {r["status"] for r in table(out)} == {"up to date"}


def test_a_manifest_names_ids_and_brain_masks(cohort: Path, model: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import nibabel as nib
    import numpy as np

    scan = cohort / "sub-00_T1w.nii.gz"
    mask = cohort / "sub-00_brainmask.nii.gz"
    image = nib.load(scan)
    nib.save(nib.Nifti1Image((np.asarray(image.dataobj) > 0).astype(np.uint8), image.affine), mask)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("image,brain_mask,id\n"
                        f"{scan},{mask.name},alpha\n"
                        f"{cohort / 'sub-01_T1w.nii.gz'},,beta\n")
    out = tmp_path / "out"
    # the mask is named relative to the manifest's folder: not there, so that scan fails with its path named
    assert infer(manifest, model=model, out=out) == 1
    (failure,) = table(out, "failures.tsv")
    assert failure["id"] == "alpha"
    assert str(tmp_path / mask.name) in failure["reason"]
    manifest.write_text(f"image,brain_mask,id\n{scan},{mask},alpha\n{cohort / 'sub-01_T1w.nii.gz'},,beta\n")
    assert infer(manifest, model=model, out=out) == 0
    side = json.loads((out / "alpha_desc-anomaly_mask.json").read_text())
    assert side["BrainMask"] == str(mask)
    assert (out / "beta_desc-anomaly_mask.nii.gz").exists()


def test_colliding_ids_and_a_brain_mask_for_many_scans_are_one_line_errors(
        cohort: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    twin = tmp_path / "twin"
    twin.mkdir()
    copy = twin / "sub-00_T1w.nii.gz"
    copy.write_bytes((cohort / "sub-00_T1w.nii.gz").read_bytes())
    with caplog_off():
        assert infer(cohort / "sub-00_T1w.nii.gz", copy, model=model, out=tmp_path / "o") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("condiff-engine: error: ")
    assert "would collide" in err[-1]
    assert infer(cohort, model=model, out=tmp_path / "o", extra=("--brain-mask", str(copy))) == 1
    assert "manifest" in capsys.readouterr().err


class caplog_off:  # noqa: N801 - a tiny context manager
    def __enter__(self) -> None:
        logging.disable(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        logging.disable(logging.NOTSET)


def test_torchrun_shards_a_cohort_and_writes_what_one_process_writes(cohort: Path, model: Path,
                                                                       tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    one, two = tmp_path / "one", tmp_path / "two"
    assert infer(cohort, model=model, out=one) == 1
    args = ["-m", "engine", "infer", str(cohort), "--model", str(model), "--out", str(two), "--threshold",
            THRESHOLD, "--steps", "1", "--device", "cpu", "--threads", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0  # one scan failed, so the run says so
    assert payloads(two) == payloads(one)  # byte-identical maps, masks and restorations, whichever rank ran them
    rows_one = {r["id"]: (r["status"], r["flagged_ml"], r["findings"]) for r in table(one)}
    rows_two = {r["id"]: (r["status"], r["flagged_ml"], r["findings"]) for r in table(two)}
    assert rows_two == rows_one
    assert [r["id"] for r in table(two)] == [r["id"] for r in table(one)]
    assert len(table(two, "failures.tsv")) == 1


def test_a_cohorts_results_read_back_equal_a_fresh_analysis(cohort: Path, model: Path, tmp_path: Path) -> None:
    import numpy as np

    import engine

    out = tmp_path / "out"
    assert infer(cohort, model=model, out=out) == 1
    summaries = engine.read_cohort(out)
    assert [s.status for s in summaries] == ["done"] * 5 + ["failed"]
    first = summaries[0]
    volume = engine.load_volume(first.image)
    kept = engine.read_outputs(volume, out / first.files["sidecar"])
    fresh = engine.load_ensemble(model, device="cpu").analyse(volume, settings=engine.AnalysisSettings(steps=1))
    for name in ("anomaly_map", "member_spread", "restored", "analysed"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(fresh, name), err_msg=name)
    np.testing.assert_allclose(kept.slice_scores, fresh.slice_scores, atol=1e-6)  # NaN where not analysed, in both
    assert kept.covered.sum() >= kept.analysed.sum()
    assert kept.threshold == float(THRESHOLD)
    # A map from another scan does not open over this one.
    other = engine.load_volume(summaries[1].image)
    with pytest.raises(engine.VolumeError, match="does not lie on the grid"):
        engine.read_outputs(other, out / first.files["sidecar"])


# ------------------------------------------------------------------------------------------------------------ BIDS
@pytest.fixture
def bids_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A BIDS dataset from the bundled sample and a synthetic head: ``sub-01`` (the IXI sample, with its brain mask in
    a derivatives folder), ``sub-02/ses-1`` (a T1w and a FLAIR the T1 model must leave alone)."""
    import shutil

    from engine.ensemble import default_model_path

    samples = default_model_path().parents[1] / "samples"
    root = tmp_path / "ds"
    (root / "sub-01/anat").mkdir(parents=True)
    (root / "sub-02/ses-1/anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "fixture", "BIDSVersion": "1.10.0"}))
    shutil.copy(samples / "IXI056-HH-1327_T1.nii.gz", root / "sub-01/anat/sub-01_T1w.nii.gz")
    save_nifti(root / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz", head((36, 40, 32), seed=3))
    save_nifti(root / "sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz", head((36, 40, 32), seed=4))
    masks = tmp_path / "deriv"
    (masks / "sub-01/anat").mkdir(parents=True)
    (masks / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "hand"}]}))
    shutil.copy(samples / "IXI056-HH-1327_brainmask.nii.gz", masks / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    return root, masks


def test_a_bids_dataset_finds_its_t1_scans_and_their_masks(bids_dataset: tuple[Path, Path]) -> None:
    from engine.cohort import collect_inputs

    root, masks = bids_dataset
    items = collect_inputs([root], bids_masks=masks)
    assert [(i.id, i.out_subdir) for i in items] == [("sub-01_T1w", "sub-01/anat"),
                                                    ("sub-02_ses-1_T1w", "sub-02/ses-1/anat")]
    assert items[0].brain_mask == masks / "sub-01/anat/sub-01_desc-brain_mask.nii.gz"
    assert items[1].brain_mask is None  # none in the derivatives: the scan's foreground
    assert [i.id for i in collect_inputs([root], bids_suffix="FLAIR")] == ["sub-02_ses-1_FLAIR"]


def test_a_bids_dataset_becomes_a_derivatives_dataset(bids_dataset: tuple[Path, Path], model: Path,
                                                      tmp_path: Path) -> None:
    from engine.bids import DESCRIPTION, layout_problems, parse_path
    from engine.card import read_card

    root, masks = bids_dataset
    out = tmp_path / "derivatives" / "condiff"
    assert infer(root, model=model, out=out, extra=("--bids-masks", str(masks))) == 0
    for sub in ("sub-01/anat/sub-01", "sub-02/ses-1/anat/sub-02_ses-1"):
        for name in ("desc-anomaly_mask.nii.gz", "desc-anomaly_mask.json", "desc-pseudohealthy_T1w.nii.gz",
                     "desc-anomalyscore_map.nii.gz", "desc-anomaly_findings.tsv"):
            assert (out / f"{sub}_{name}").is_file(), f"{sub}_{name}"
    assert not list(out.glob("sub-*/**/*FLAIR*"))
    # The schema's own derivative rules accept every file, bar those .bidsignore lists.
    assert layout_problems(out) == []
    mask_entities = parse_path("sub-02/ses-1/anat/sub-02_ses-1_desc-anomaly_mask.nii.gz", derivative=True)
    assert mask_entities is not None
    assert (mask_entities["subject"], mask_entities["session"], mask_entities["suffix"]) == ("02", "1", "mask")
    description = json.loads((out / DESCRIPTION).read_text())
    assert description["DatasetType"] == "derivative"
    (generated,) = description["GeneratedBy"]
    card = read_card(model)
    assert generated["Name"] == "condiff"
    assert generated["Model"]["MemberSHA256"] == {str(f): m.sha256 for f, m in card.members.items()}
    assert generated["Settings"]["threshold"] == float(THRESHOLD)
    assert description["SourceDatasets"] == [{"URL": root.resolve().as_uri()}]
    # The sub-01 analysis used the derivatives' brain mask; the table's file names lead to the nested outputs.
    side = json.loads((out / "sub-01/anat/sub-01_desc-anomaly_mask.json").read_text())
    assert side["BrainMask"].endswith("sub-01_desc-brain_mask.nii.gz")
    rows = json.loads((out / "cohort.json").read_text())["scans"]
    assert all((out / row["files"]["sidecar"]).is_file() for row in rows)
    # A rerun keeps everything: the nested outputs count as up to date.
    assert infer(root, model=model, out=out, extra=("--bids-masks", str(masks))) == 0
    assert {r["status"] for r in table(out)} == {"up to date"}


def test_bids_masks_without_a_bids_dataset_is_an_error(cohort: Path, model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert infer(cohort, model=model, out=tmp_path / "out", extra=("--bids-masks", str(tmp_path))) != 0
    assert not (tmp_path / "out").exists()  # refused before anything was written
    err = capsys.readouterr().err
    assert "need a BIDS dataset" in err
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------------------- evaluate --results
def test_evaluate_reads_a_cohorts_maps_and_agrees_with_running_the_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cases analysed by a cohort run are scored from its written maps; the counts at the threshold equal those of
    ``evaluate`` running the model on the same cases (the same maps on the same grids)."""
    import numpy as np

    rows = ["name,image,label"]
    for i in range(2):
        data = head((36, 40, 32), seed=20 + i)
        lesion = np.zeros(data.shape, np.uint8)
        lesion[14 + i:20 + i, 16:22, 12:18] = 1
        data[lesion > 0] *= 1.8  # a bright blob the map can find
        save_nifti(tmp_path / f"case{i}_T1w.nii.gz", data)
        save_nifti(tmp_path / f"case{i}_seg.nii.gz", lesion)
        rows.append(f"case{i},case{i}_T1w.nii.gz,case{i}_seg.nii.gz")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("\n".join(rows) + "\n")
    from dataclasses import replace

    from engine.card import update_card
    from engine.results import Calibration
    from tests.bad_inputs import make_model_folder

    model = make_model_folder(tmp_path / "calibrated")
    calibration = Calibration(threshold=0.3, healthy_fpr=0.01, display_max=0.6, grid="native")
    update_card(model, lambda card: replace(card, calibration=calibration))
    out = tmp_path / "out"  # the cohort at the model's own threshold, which evaluate applies
    assert main(["infer", str(manifest), "--model", str(model), "--out", str(out), "--steps", "1", "--device", "cpu",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--dataset", str(manifest), "--results", str(out), "--json"]) == 0
    from_results = json.loads(capsys.readouterr().out)
    assert from_results["cases"] == ["case0", "case1"]
    assert 0.0 < from_results["random_ap_pixel"] < 0.2
    assert from_results["transfer"]["scans"] == 2
    assert main(["evaluate", "--dataset", str(manifest), "--model", str(model), "--steps", "1", "--device", "cpu",
                 "--threads", "1", "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)["transfer"]
    got = from_results["transfer"]
    assert got["threshold"] == pytest.approx(direct["threshold"]) == pytest.approx(calibration.threshold)
    for key in ("brain_flagged", "sensitivity", "precision", "nonlesion_flagged", "far_flagged"):
        assert got[key] == pytest.approx(direct[key], abs=1e-6), key
    assert got["brain_flagged"] > 0  # the comparison is not between two empty masks


def test_evaluate_results_names_a_case_the_cohort_did_not_analyse(tmp_path: Path, cohort: Path, model: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    infer(cohort / "sub-00_T1w.nii.gz", cohort / "sub-01_T1w.nii.gz", model=model, out=out)
    import numpy as np

    save_nifti(tmp_path / "lab.nii.gz", np.ones((40, 40, 32), np.uint8))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,label\n{cohort / 'sub-02_T1w.nii.gz'},{tmp_path / 'lab.nii.gz'}\n")
    capsys.readouterr()
    assert main(["evaluate", "--dataset", str(manifest), "--results", str(out)]) != 0
    err = capsys.readouterr().err
    assert "sub-02_T1w.nii.gz: not among the cohort results" in err
    assert err.count("\n") == 1

"""The worklist (issue 22): a folder's scans or a cohort run's results, most flagged first, opened by click or key."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.bad_inputs import head, make_model_folder, save_nifti


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort run of four small scans (one damaged) with an untrained tiny model: its output folder."""
    from engine.cli import main

    root = tmp_path_factory.mktemp("worklist")
    scans = root / "scans"
    scans.mkdir()
    for i in range(3):
        save_nifti(scans / f"sub-{i}_T1w.nii.gz", head((36 + 4 * i, 40, 32), seed=i))
    bad = save_nifti(scans / "sub-9_T1w.nii.gz", head((36, 40, 32), seed=9))
    bad.write_bytes(bad.read_bytes()[:200])
    out = root / "out"
    model = make_model_folder(root / "model")
    assert main(["infer", str(scans), "--model", str(model), "--out", str(out), "--threshold", "0.3", "--steps", "1",
                 "--device", "cpu", "--threads", "1"]) == 1
    return out


def test_a_cohort_opens_most_flagged_first_with_its_results(qtbot, make_window, cohort_run: Path) -> None:
    window = make_window()
    assert window.open_worklist(cohort_run)
    table = window.worklist_dock.table
    assert window.worklist_dock.isVisible()
    assert table.rowCount() == 4
    cohort = json.loads((cohort_run / "cohort.json").read_text())["scans"]
    flagged = [s["flagged_ml"] for s in cohort if s["status"] != "failed"]
    shown = [float(table.item(row, 2).text()) for row in range(3)]
    assert shown == pytest.approx(sorted(flagged, reverse=True), abs=0.01)
    assert table.item(3, 1).text() == "failed"
    assert table.item(3, 0).toolTip()  # the one-line reason the cohort recorded
    # The first (most flagged) is open, with the cohort's map, without the model running.
    first = window.worklist.entries[0]
    assert Path(window.state.volume.path) == first.image
    result = window.state.result
    assert result is not None
    written = nib.load(first.sidecar.parent / json.loads(first.sidecar.read_text())["Files"]["map"])
    np.testing.assert_array_equal(result.anomaly_map, np.asarray(written.dataobj, dtype=np.float32))
    assert window.state.threshold == pytest.approx(0.3)
    assert not window.controller.scheduler.busy
    # A model loading or a setting changing looks for a cached result; the cohort's result stays on screen.
    window.controller.models.set_settings(seed=5)
    window.controller.show_cached_result()
    assert window.state.result is result
    assert window.errors == []
    # ] and [ walk the list; past the end nothing changes.
    window.step_worklist(1)
    assert Path(window.state.volume.path) == window.worklist.entries[1].image
    assert table.currentRow() == 1
    window.step_worklist(1)
    window.step_worklist(1)  # the damaged scan: one line, the last good scan stays on screen
    assert window.errors
    assert Path(window.state.volume.path) == window.worklist.entries[2].image
    window.step_worklist(1)  # past the end
    assert window.worklist.current == 3
    window.step_worklist(-1)
    assert Path(window.state.volume.path) == window.worklist.entries[2].image


def test_a_folder_of_scans_lists_them_unanalysed(qtbot, make_window, cohort_run: Path) -> None:
    window = make_window()
    window.worklist_analyser.enabled = False  # the list as it opens (background analysis: the tests below)
    scans = cohort_run.parent / "scans"
    assert window.open_worklist(scans)
    assert [e.status for e in window.worklist.entries] == ["not analysed"] * 4
    assert window.state.result is None  # nothing to show until it is analysed
    table = window.worklist_dock.table
    assert table.item(0, 2).text() == ""
    table.cellClicked.emit(2, 0)
    assert Path(window.state.volume.path) == window.worklist.entries[2].image


def test_a_folder_that_is_no_worklist_is_one_line(qtbot, make_window, tmp_path: Path) -> None:
    window = make_window()
    (tmp_path / "cohort.json").write_text("{not json")
    assert not window.open_worklist(tmp_path)
    assert len(window.errors) == 1
    assert "cohort.json" in window.errors[0]
    assert not window.worklist_dock.isVisible()


def test_the_command_line_opens_a_cohort_folder_as_the_worklist(cohort_run: Path, tmp_path: Path) -> None:
    """``condiff-viewer OUT --screenshot`` on a cohort's output folder renders its most flagged scan with its map."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    shot = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, "-m", "app", str(cohort_run), "--screenshot", str(shot)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 10_000


# ------------------------------------------------------------------------------------------- background analysis
@pytest.fixture
def scan_folder(tmp_path: Path) -> Path:
    """Four small heads of different sizes (different flagged volumes) and one damaged file."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(4):
        data = head((30 + 4 * i, 40, 32), seed=30 + i)
        save_nifti(folder / f"sub-{i}_T1w.nii.gz", data)
    bad = save_nifti(folder / "sub-8_T1w.nii.gz", head((36, 40, 32), seed=8))
    bad.write_bytes(bad.read_bytes()[:200])
    return folder


def _all_settled(window) -> bool:  # noqa: ANN001
    settled = all(e.status in ("analysed", "failed") for e in window.worklist.entries)
    return settled and window.controller.scheduler.is_idle()


def test_a_folder_is_analysed_in_the_background_open_scan_first(qtbot, make_window, scan_folder: Path,
                                                                tmp_path: Path) -> None:
    window = make_window()
    order: list[str] = []
    window.worklist_analyser.scan_analysed.connect(lambda row: order.append(window.worklist.entries[row].id))
    assert window.open_worklist(scan_folder)
    listed = [e.id for e in window.worklist.entries]
    assert listed[0] == "sub-0_T1w"  # not analysed yet: by name
    qtbot.waitUntil(lambda: _all_settled(window), timeout=60_000)
    # The open scan first, then the list in order; the damaged one failed with its reason, the rest went on.
    assert order == ["sub-0_T1w", "sub-1_T1w", "sub-2_T1w", "sub-3_T1w"]
    entries = {e.id: e for e in window.worklist.entries}
    assert entries["sub-8_T1w"].status == "failed"
    assert "sub-8_T1w" in entries["sub-8_T1w"].reason
    assert window.errors == []  # a background failure is told in its row (tooltip), not in a dialog
    # Once all are done the list is ordered by anomaly load, the failure last; the open scan stays open.
    assert window.worklist.entries[-1].id == "sub-8_T1w"
    assert window.worklist.entries[window.worklist.current].id == "sub-0_T1w"
    loads = [e.flagged_ml for e in window.worklist.entries[:-1]]
    assert loads == sorted(loads, reverse=True)
    # Each result lies in the viewer's cache, on the scan's grid; opening a scan shows it without the model.
    for entry in window.worklist.entries[:-1]:
        assert entry.sidecar is not None
        assert entry.sidecar.is_file()
        assert tmp_path in entry.sidecar.parents
    calls = len(window.backend.ensembles[-1].calls)
    window.open_worklist_entry(0)
    assert window.state.result is not None
    top = window.worklist.entries[0]
    written = nib.load(top.sidecar.parent / f"{top.id.removesuffix('_T1w')}_desc-anomalyscore_map.nii.gz")
    np.testing.assert_array_equal(window.state.result.anomaly_map, np.asarray(written.dataobj, np.float32))
    assert len(window.backend.ensembles[-1].calls) == calls
    # The same folder opened again: every scan is up to date in the cache, nothing is analysed twice.
    assert window.open_worklist(scan_folder)
    qtbot.waitUntil(lambda: _all_settled(window), timeout=60_000)
    assert len(window.backend.ensembles[-1].calls) == calls


def test_the_users_analysis_comes_before_the_background(qtbot, make_window, scan_folder: Path) -> None:
    window = make_window(delay_s=0.05)  # each slice takes a while: the background scan is caught mid-way
    assert window.open_worklist(scan_folder)
    qtbot.waitUntil(lambda: window.worklist_analyser.running, timeout=10_000)
    assert not window.controller.scheduler.busy  # a background scan is not the user's: no busy state, no cancel button
    ensemble = window.backend.ensembles[-1]
    window.controller.scheduler.request_analysis("slice")
    assert window.controller.scheduler.busy or window.controller.scheduler._pending  # noqa: SLF001 - queued behind the cancel
    with qtbot.waitSignal(window.controller.scheduler.analysis_done, timeout=30_000):
        pass
    assert window.state.result is not None  # the user's slice, analysed
    assert any(len(call) == 1 for call in ensemble.calls)
    qtbot.waitUntil(lambda: _all_settled(window), timeout=120_000)
    assert sum(e.status == "analysed" for e in window.worklist.entries) == 4


def test_a_bids_dataset_opens_as_a_worklist_of_its_t1_scans(qtbot, make_window, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for sub in ("sub-01/anat", "sub-02/ses-1/anat"):
        (root / sub).mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    save_nifti(root / "sub-01/anat/sub-01_T1w.nii.gz", head((36, 40, 32), seed=1))
    save_nifti(root / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz", head((36, 40, 32), seed=2))
    save_nifti(root / "sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz", head((36, 40, 32), seed=3))
    window = make_window()
    window.worklist_analyser.enabled = False
    assert window.open_path(root)
    assert [e.id for e in window.worklist.entries] == ["sub-01_T1w", "sub-02_ses-1_T1w"]

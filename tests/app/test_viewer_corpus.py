"""The bad-input corpus (tests/bad_inputs.py) through the viewer, on the real engine, headless.

Opening a bad scan shows a one-line error dialog naming the file and keeps the scan that was open; a scan the loader
warns about opens with the warning in the banner and can be analysed; a damaged model folder is one dialog line, and
the viewer goes on working (the good model loads again afterwards); an export into a folder that cannot be written
(simulated: a file in the way, no permission, a full disk) is one dialog line and leaves nothing behind. Never an
exception out of a slot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs import MODEL_CASES, SCAN_CASES, by_name, head, make_model_folder, save_nifti

SCANS = by_name(SCAN_CASES)
MODELS = by_name(MODEL_CASES)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("viewer-corpus") / "model")


@pytest.fixture
def window(qtbot, settings, model: Path, tmp_path: Path):  # noqa: ANN201 - a MainWindow
    """The real viewer on the real engine with the corpus model loaded, showing a good synthetic scan."""
    from app.main_window import MainWindow

    window = MainWindow(None, settings, model_path=model)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=120000)
    assert window.controller.models.model is not None, window.controller.models.model_error
    window.controller.models.set_settings(device="cpu", steps=1)
    good = save_nifti(tmp_path / "good_T1.nii.gz", head())
    assert window.open_scan(good)
    window.good_scan = good
    return window


def _dialog_line(window) -> str:  # noqa: ANN001
    dialog = window.error_dialog
    assert dialog is not None
    assert dialog.isVisible()
    line = dialog.text()
    assert "\n" not in line
    return line


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SCANS))
def test_open_a_scan_case(qtbot, window, tmp_path: Path, name: str) -> None:
    case = SCANS[name]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = case.build(inputs)
    if case.outcome == "error":
        assert not window.open_scan(path)
        line = _dialog_line(window)
        assert str(path) in line
        assert case.says in line.lower()
        assert window.state.volume.path == window.good_scan  # the scan that was open stays open
        assert window.errors[-1] == line
        return
    assert window.open_scan(path)
    assert window.state.volume.path == path
    if case.outcome == "warning":
        assert any(case.says in w.lower() for w in window.warnings), window.warnings
        assert window.banner.isVisible()
    else:
        assert window.state.volume.warnings == ()
    errors = len(window.errors)
    with qtbot.waitSignal(window.controller.scheduler.analysis_done, timeout=120000):
        window.controller.scheduler.request_analysis("slice")
    assert len(window.errors) == errors, window.errors[errors:]
    assert window.state.result is not None
    assert window.state.result.anomaly_map.shape == window.state.volume.shape


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_choose_a_model_case(qtbot, window, model: Path, tmp_path: Path, name: str) -> None:
    case = MODELS[name]
    path = case.build(tmp_path)
    window.controller.scheduler.load_model(path, explicit=True)
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=60000)
    line = _dialog_line(window)
    assert str(path) in line
    assert case.says in line.lower()
    assert window.controller.models.model is None
    window.controller.scheduler.load_model(model, explicit=True)  # and the viewer goes on: the good model loads again
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=60000)
    assert window.controller.models.model is not None
    assert window.open_scan(window.good_scan)


OUTPUT_CASES = ["out_is_a_file", "folder_unwritable", "disk_full_at_once", "disk_full_midway"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_export_into_an_output_that_cannot_be_written(qtbot, window, tmp_path: Path, name: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:

    from tests.engine.test_bad_input_corpus import snapshot
    from tests.test_cli_corpus import break_output

    with qtbot.waitSignal(window.controller.scheduler.analysis_done, timeout=120000):
        window.controller.scheduler.request_analysis("slice")
    assert window.state.result is not None
    out = tmp_path / "export"
    break_output(name, out, monkeypatch)
    before = snapshot(tmp_path)
    assert window.export_results(out) is None
    line = _dialog_line(window)
    assert str(out) in line
    assert snapshot(tmp_path) == before  # nothing half-written, the file in the way untouched
    monkeypatch.undo()
    assert window.export_results(tmp_path / "elsewhere")  # and the viewer exports fine afterwards

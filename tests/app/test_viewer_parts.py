"""The viewer's parts on their own: key map, preference table, analysis controller without widgets, text rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import scan_path
from PySide6.QtCore import QSettings, Qt

from app import keymap, prefs, state, text
from app.controller import AnalysisController
from app.model_session import ModelLoad
from app.scheduler import Analysis, AnalysisMode
from app.state import ViewerState

APP = Path(__file__).resolve().parents[2] / "app"


# ------------------------------------------------------------------------------------------------ key map
def test_every_binding_is_in_the_help_and_every_menu_shortcut_comes_from_the_table(qtbot, make_window) -> None:
    window = make_window()
    help_html = keymap.KeyMap().help_html()
    for binding in keymap.BINDINGS:
        for key in binding.keys:
            assert f"<b>{key}" in help_html or f"/ {key}" in help_html, key
        assert binding.help in help_html
    assert "Left" in help_html
    assert "Right" in help_html
    for command, action in window._actions.items():
        binding = next(b for b in keymap.BINDINGS if b.command == command)
        assert binding.menu
        assert action.shortcut().toString() == keymap.KeyMap().shortcut(command).toString()
    menu_commands = {b.command for b in keymap.BINDINGS if b.menu}
    assert menu_commands == set(window._actions)


def test_left_and_right_step_slices_like_down_and_up(qtbot, make_window) -> None:
    window = make_window()
    assert window.open_scan(scan_path("brats"))
    start = window.state.slice_index
    qtbot.keyClick(window.view, Qt.Key.Key_Right)
    assert window.state.slice_index == start + 1
    qtbot.keyClick(window.view, Qt.Key.Key_Left)
    qtbot.keyClick(window.view, Qt.Key.Key_Left)
    assert window.state.slice_index == start - 1


def test_a_key_bound_twice_is_refused() -> None:
    twice = (keymap.Binding(keymap.Command.ZOOM_IN, ("Z",), "a"), keymap.Binding(keymap.Command.ZOOM_OUT, ("Z",), "b"))
    with pytest.raises(ValueError, match="two commands"):
        keymap.KeyMap(twice)


# ------------------------------------------------------------------------------------------------ preferences
def test_preference_keys_are_unique_and_overlay_defaults_come_from_the_state(qtbot) -> None:
    keys = [p.key for p in prefs.ALL]
    assert len(keys) == len(set(keys))
    assert prefs.OPACITY.default == state.DEFAULT_OPACITY == ViewerState().opacity
    assert {n: p.default for n, p in prefs.OVERLAY_VISIBLE.items()} == state.DEFAULT_VISIBLE
    assert tuple(prefs.OVERLAY_VISIBLE) == state.OVERLAYS


def test_preferences_keep_their_types_through_an_ini_file(tmp_path: Path) -> None:
    path = str(tmp_path / "p.ini")
    settings = QSettings(path, QSettings.Format.IniFormat)
    prefs.RADIOLOGICAL.write(settings, False)
    prefs.OPACITY.write(settings, 0.25)
    prefs.SEED.write(settings, 7)
    prefs.RECENT_FILES.write(settings, ["/a.nii.gz"])
    settings.sync()
    again = QSettings(path, QSettings.Format.IniFormat)
    assert prefs.RADIOLOGICAL.read(again) is False
    assert prefs.OPACITY.read(again) == pytest.approx(0.25)
    assert prefs.SEED.read(again) == 7
    assert prefs.RECENT_FILES.read(again) == ["/a.nii.gz"]
    assert prefs.PLANE.read(again) == "axial"  # never written: the default
    again.setValue(prefs.SEED.key, "not a number")
    assert prefs.SEED.read(again) == 0
    assert prefs.WINDOW_GEOMETRY.read(again) is None


# ------------------------------------------------------------------------------------------------ controller
def test_controller_analyses_without_any_widget(qtbot, model_dir: Path) -> None:
    from fake_engine import make_backend

    backend = make_backend(model_dir, delay_s=0.01)
    view_state = ViewerState()
    controller = AnalysisController(backend, view_state)
    tasks = []
    controller.scheduler.runner.busy_changed.connect(
        lambda busy: busy and tasks.append(type(controller.scheduler.runner.current.task)))
    try:
        assert controller.scan.open_scan(scan_path("ixi")) is not None
        assert controller.models.model is None
        progress = []
        controller.scheduler.analysis_progress.connect(progress.append)
        with qtbot.waitSignal(controller.scheduler.analysis_done, timeout=20000):
            # no model yet: it is loaded first, then the slice runs
            controller.scheduler.request_analysis(AnalysisMode.SLICE)
        assert tasks == [ModelLoad, Analysis]
        result = view_state.result
        assert result is not None
        assert result.analysed.sum() == 1
        assert progress[0].slices == 1
        assert progress[0].fraction == 0.0
        assert progress[0].first_slice == view_state.cursor[result.slice_axis]
        assert controller.scheduler.is_idle()
        key = controller.result_key()
        controller.models.set_settings(seed=3)
        assert controller.result_key() != key
        assert view_state.result is None  # nothing cached for seed 3
        controller.models.set_settings(seed=0)
        assert view_state.result is result
    finally:
        controller.shutdown()


def test_controller_volume_progress_counts_slices_of_the_scan(qtbot, model_dir: Path) -> None:
    from fake_engine import make_backend

    controller = AnalysisController(make_backend(model_dir, delay_s=0.002), ViewerState())
    try:
        volume = controller.scan.open_scan(scan_path("ixi"))
        controller.scheduler.load_model()
        assert controller.scheduler.wait_idle(20)
        reports = []
        controller.scheduler.analysis_progress.connect(reports.append)
        with qtbot.waitSignal(controller.scheduler.analysis_done, timeout=30000):
            controller.scheduler.request_analysis("volume")
        n = volume.data.shape[controller.scan.analysis_axis]
        result = controller.state.result
        with_map = int(result.covered.sum())
        assert all(r.volume and r.n_slices == n for r in reports)
        assert reports[0].slices == 0  # while the engine plans the run
        assert all(r.slices == with_map for r in reports[1:])  # then: the slices that carry a map at the end
        assert reports[-1].slices_done == with_map
        assert reports[-1].fraction == 1.0
        assert [r.slices_done for r in reports] == sorted(r.slices_done for r in reports)
        assert [r.fraction for r in reports] == sorted(r.fraction for r in reports)
    finally:
        controller.shutdown()


# ------------------------------------------------------------------------------------------------ text rules
_TEXT_CALLS = {"setText", "showMessage", "setToolTip", "setWindowTitle", "report_error", "QLabel", "QPushButton",
               "QCheckBox", "QGroupBox", "setFormat", "addMenu", "QAction"}


@pytest.mark.parametrize("path", sorted(p for p in APP.rglob("*.py") if p.name != "text.py"),
                         ids=lambda p: str(p.relative_to(APP)))
def test_user_strings_live_in_text_py(path: Path) -> None:
    offenders = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in _TEXT_CALLS:
            continue
        for arg in node.args:
            if isinstance(arg, ast.JoinedStr) or (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                                                  and arg.value.strip()):
                offenders.append(f"{path.name}:{node.lineno} {name}")
    assert not offenders


def test_the_headless_renderer_uses_no_private_part_of_the_window() -> None:
    tree = ast.parse((APP / "main.py").read_text())
    private = [f"{n.attr} (line {n.lineno})" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "window"
               and n.attr.startswith("_")]
    assert not private


def test_shortcut_help_names_the_mouse_too() -> None:
    help_html = keymap.KeyMap().help_html()
    for gesture, _ in text.MOUSE_HELP:
        assert gesture in help_html


def test_progress_sentences_count_slices_of_the_scan() -> None:
    from app.scheduler import AnalysisProgress
    from app.views.progress_panel import describe

    planning = AnalysisProgress(slices=0, n_slices=155, first_slice=77, fraction=0.0, eta_s=None, volume=True)
    assert describe(planning) == "Analysing the whole scan: finding the slices with brain, estimating the time..."
    whole = AnalysisProgress(slices=140, n_slices=155, first_slice=0, fraction=0.4, eta_s=95.0, done=62, volume=True)
    assert describe(whole) == "Analysing the whole scan: 62 of its 140 slices with brain have a map, about 1:35 left"
    one = AnalysisProgress(slices=1, n_slices=155, first_slice=77, fraction=0.5, eta_s=2.2)
    assert describe(one) == "Analysing axial slice 77/154, about 2 s left"
    some = AnalysisProgress(slices=10, n_slices=155, first_slice=3, fraction=0.02, eta_s=400.0)
    assert describe(some) == "Analysing 10 of the scan's 155 slices: 0 done, estimating the time..."

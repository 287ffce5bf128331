"""The main window driven through its real widgets, on real scans, with the fake engine."""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import scan_path
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app import slicing, text


def open_scan(qtbot, window, name: str = "brats") -> Path:
    path = scan_path(name)
    assert window.open_scan(path), window.errors
    return path


def test_open_scan_shows_middle_axial_slice_with_letters(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")
    layout = window.state.layout()
    assert layout.plane == "axial"
    assert layout.n_slices == 155
    image = window.view.base_item.image
    assert image.shape == (240, 240)
    assert image.dtype == np.float32
    assert window.view.base_item.levels is not None
    assert [window.view.letters[k].textItem.toPlainText() for k in ("left", "right", "top", "bottom")] == [
        "R", "L", "A", "P"]
    assert "RADIOLOGICAL" in window.view.convention_label.textItem.toPlainText()
    assert window.controller.models.model is not None
    assert "fake-t1" in window.analysis_panel.model_label.text()
    assert window.recent_files()[0].endswith("flair.nii.gz")


def test_keys_and_wheel_change_the_slice(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")
    view = window.view
    start = window.state.slice_index
    first_image = view.base_item.image.copy()
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert window.state.slice_index == start + 1  # LPS: +index is superior
    assert not np.array_equal(view.base_item.image, first_image)
    qtbot.keyClick(view, Qt.Key.Key_PageDown)
    assert window.state.slice_index == start - 9
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert window.state.slice_index == 154
    qtbot.keyClick(view, Qt.Key.Key_Home)
    assert window.state.slice_index == 0
    assert window.slice_slider.value() == 0
    window.state.set_slice_index(50)
    centre = view.viewport().rect().center()
    wheel = QWheelEvent(QPointF(centre), QPointF(view.viewport().mapToGlobal(centre)), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert window.state.slice_index == 52
    qtbot.keyClick(view, Qt.Key.Key_2)
    assert window.state.plane == "coronal"
    assert view.letters["top"].textItem.toPlainText() == "S"


def test_slider_radiological_switch_and_window_fields(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "ms")
    window.slice_slider.setValue(30)
    assert window.state.slice_index == 30
    before = window.view.base_item.image.copy()
    window.plane_bar.radiological_check.setChecked(False)
    assert window.view.letters["left"].textItem.toPlainText() == "L"
    np.testing.assert_array_equal(window.view.base_item.image, before[:, ::-1])
    window.contrast_panel.window_spin.setValue(200.0)
    window.contrast_panel.level_spin.setValue(300.0)
    assert window.state.window == pytest.approx((200.0, 400.0))
    assert tuple(window.view.base_item.levels) == pytest.approx((200.0, 400.0))
    window.contrast_panel.auto_button.click()
    assert window.state.window == window.state.auto_window


def test_right_drag_changes_window_level(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")
    lo, hi = window.state.window
    vb = window.view.viewbox
    emitted = []
    vb.window_drag.connect(lambda *a: emitted.append(a))
    vb.window_drag.emit(60.0, -30.0, True)  # what a right-drag reports (pixels moved, finished)
    new_lo, new_hi = window.state.window
    assert new_hi - new_lo > hi - lo  # dragging right widens the window
    assert (new_hi + new_lo) / 2 > (hi + lo) / 2  # dragging up raises the level


def analyse(qtbot, window, mode: str = "slice", timeout: int | None = None) -> None:
    # an upper bound for a busy 2-core machine, not a speed target (those live in tests/benchmarks)
    timeout = timeout or (10000 if mode == "slice" else 60000)
    with qtbot.waitSignal(window.controller.scheduler.analysis_done, timeout=timeout):
        if mode == "slice":
            window.analysis_panel.analyse_slice_button.click()
        else:
            window.analysis_panel.analyse_volume_button.click()


def test_analyse_slice_then_another_keeps_both_and_caches(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")
    analyse(qtbot, window)
    result = window.state.result
    k = window.state.slice_index
    assert result is not None
    assert result.analysed[k]
    assert result.analysed.sum() == 1
    assert window.view.heat_item.image is not None
    assert window.view.heat_item.isVisible()
    assert window.view.colour_bar.isVisible()
    window.state.step_slice(10)
    analyse(qtbot, window)
    result = window.state.result
    assert result.analysed[k]
    assert result.analysed[k + 10]
    assert result.analysed.sum() == 2
    ensemble = window.backend.ensembles[-1]
    calls = len(ensemble.calls)
    window.state.step_slice(-10)
    analyse(qtbot, window)  # already analysed: no new engine call
    assert len(ensemble.calls) == calls
    assert np.isfinite(window.score_plot.curve.yData).sum() == 2
    assert window.score_plot.current_line.value() == k
    window.analysis_panel.seed_spin.setValue(5)  # other settings: not cached
    assert window.state.result is None
    window.analysis_panel.seed_spin.setValue(0)
    assert window.state.result is not None
    assert window.state.result.analysed.sum() == 2


def test_threshold_and_opacity_sliders_change_the_overlay(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")
    analyse(qtbot, window)
    view = window.view
    assert window.state.threshold == pytest.approx(0.1)
    assert window.state.display_max == pytest.approx(0.3)
    assert window.overlay_panel.threshold_slider.value() == 333
    lut_before = view.heat_item.lut.copy()
    mask_before = int((view.mask_alpha() > 0).sum())
    window.overlay_panel.threshold_slider.setValue(600)
    assert window.state.threshold == pytest.approx(0.18)
    assert window.overlay_panel.threshold_spin.value() == pytest.approx(0.18)
    lut = view.heat_item.lut
    assert (lut[:, 3] == 0).sum() > (lut_before[:, 3] == 0).sum()
    assert int((view.mask_alpha() > 0).sum()) < mask_before
    assert view.threshold_line.value() == pytest.approx(0.18)
    window.overlay_panel.opacity_slider.setValue(30)
    assert view.heat_item.opacity() == pytest.approx(0.3)
    window.overlay_panel.overlay_checks["heat"].setChecked(False)
    assert not view.heat_item.isVisible()
    window.overlay_panel.fill_check.setChecked(True)
    assert (view.mask_alpha() == 90).any()
    window.overlay_panel.overlay_checks["spread"].setChecked(True)
    assert view.spread_item.isVisible()
    assert view.spread_item.image is not None
    qtbot.keyClick(view, Qt.Key.Key_R)
    assert window.state.base_layer == "restored"
    np.testing.assert_array_equal(
        view.base_item.image, slicing.take_slice(window.state.result.restored, window.state.layout(),
                                                 window.state.slice_index))
    qtbot.keyClick(view, Qt.Key.Key_D)
    assert window.state.base_layer == "difference"
    assert view.base_item.levels[0] < 0
    window.overlay_panel.side_check.setChecked(True)
    assert view.side_widget.isVisible()
    assert view.side_item.image is not None


def test_score_plot_click_jumps_to_slice(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "ixi")
    analyse(qtbot, window, "volume")
    window.state.set_plane("sagittal")
    plot = window.score_plot
    plot.slice_clicked.emit(20)
    assert window.state.plane == "axial"
    assert window.state.cursor[window.state.result.slice_axis] == 20
    assert plot.current_line.value() == 20


def test_progress_and_cancel_mid_run(qtbot, make_window) -> None:
    window = make_window(delay_s=0.03)
    open_scan(qtbot, window, "ixi")
    progress_values = []
    window.controller.scheduler.runner.progress.connect(lambda job, p: progress_values.append(p.done))
    window.analysis_panel.analyse_volume_button.click()
    cancel = window.progress.cancel_button
    assert cancel.isEnabled()
    qtbot.waitUntil(lambda: window.state.result is not None and len(progress_values) >= 3, timeout=5000)
    assert window.progress.isVisible()
    assert cancel.isVisible()
    with_map = int(window.controller.scheduler._run.total)
    words = window.progress.label.text()
    assert f"of its {with_map} slices with brain have a map" in words  # slices of this scan, not network calls
    qtbot.waitUntil(lambda: "left" in window.progress.label.text(), timeout=5000)  # after the first 5 %
    assert 0 < window.progress.bar.value() < window.progress.bar.maximum()
    ensemble = window.backend.ensembles[-1]
    start = time.monotonic()
    with qtbot.waitSignal(window.controller.scheduler.runner.cancelled, timeout=5000):
        qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    assert time.monotonic() - start < 1.0
    calls = len(ensemble.calls)
    kept = window.state.result  # the chunks done before the cancel stay on screen
    assert kept is not None
    assert 0 < kept.analysed.sum() < len(ensemble.plan_slices(window.state.volume))
    assert not cancel.isEnabled()
    assert not window.progress.isVisible()
    assert "cancelled" in window.statusBar().currentMessage().lower()
    assert window.controller.scheduler.is_idle()
    qtbot.wait(200)
    assert len(ensemble.calls) == calls  # no chunk after the cancel


def test_volume_analysis_shows_the_slice_on_screen_first_and_follows_the_user(qtbot, make_window) -> None:
    window = make_window(delay_s=0.01)
    open_scan(qtbot, window, "ixi")
    state = window.state
    ensemble = window.backend.ensembles[-1]
    plan = ensemble.plan_slices(state.volume)
    k = plan[len(plan) // 3] + 1  # between two planned slices
    state.set_plane("axial")
    state.set_slice_index(k)
    m = plan[-5]  # where the user goes once the first maps are drawn
    seen = []

    def on_result() -> None:
        result = state.result
        if result is not None:
            seen.append((np.isfinite(window.score_plot.curve.yData).sum(), bool(result.covered[k]),
                         float(np.max(window.view.heat_item.image))))
            if len(seen) == 1:
                state.set_slice_index(m)  # before the controller chooses the next chunk

    state.result_changed.connect(on_result)
    analyse(qtbot, window, "volume")
    # the first chunk: the planned slices nearest the one on screen, which is then filled in at once
    assert ensemble.calls[0] == sorted(sorted(plan, key=lambda s: (abs(s - k), s))[:3])
    assert seen[0][0] == 3  # three slice scores in the plot
    assert seen[0][1]
    assert seen[0][2] > 0  # the map of the slice on screen is drawn
    # the next chunk follows the user
    assert ensemble.calls[1] == sorted(sorted(set(plan) - set(ensemble.calls[0]), key=lambda s: (abs(s - m), s))[:6])
    assert len(seen) == len(ensemble.calls)  # one redraw per chunk
    assert [n for n, _, _ in seen] == sorted(n for n, _, _ in seen)  # the score plot fills as it goes
    assert sorted(s for call in ensemble.calls for s in call) == list(plan)  # each planned slice once
    # the end result is what a whole-volume analysis gives
    whole = ensemble.analyse(state.volume)
    result = state.result
    np.testing.assert_array_equal(result.analysed, whole.analysed)
    np.testing.assert_array_equal(result.covered, whole.covered)
    np.testing.assert_allclose(result.anomaly_map, whole.anomaly_map, atol=1e-6)
    np.testing.assert_allclose(result.restored, whole.restored, atol=1e-4)
    np.testing.assert_array_equal(np.isnan(result.slice_scores), np.isnan(whole.slice_scores))
    assert "carry a map" in window.statusBar().currentMessage()
    calls = len(ensemble.calls)
    analyse(qtbot, window, "volume")  # again: cached
    assert len(ensemble.calls) == calls
    assert window.state.result is result or np.array_equal(window.state.result.covered, result.covered)


def test_opening_another_scan_stops_a_volume_analysis(qtbot, make_window) -> None:
    window = make_window(delay_s=0.02)
    open_scan(qtbot, window, "ixi")
    ensemble = window.backend.ensembles[-1]
    window.analysis_panel.analyse_volume_button.click()
    qtbot.waitUntil(lambda: len(ensemble.calls) >= 2, timeout=5000)
    open_scan(qtbot, window, "brats")
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=5000)
    calls = len(ensemble.calls)
    assert calls < len(ensemble.plan_slices(window.backend.load_volume(scan_path("ixi")))) // 6
    assert "stopped" in window.statusBar().currentMessage()
    assert window.state.result is None  # the other scan has no result
    assert window.analysis_panel.seed_spin.isEnabled()


def test_closing_during_analysis_stops_the_worker(qtbot, make_window) -> None:
    window = make_window(delay_s=0.05)
    open_scan(qtbot, window, "ixi")
    window.analysis_panel.analyse_volume_button.click()
    qtbot.waitUntil(lambda: window.progress.bar.value() >= 20, timeout=5000)
    start = time.monotonic()
    window.close()
    assert time.monotonic() - start < 2.0
    assert not window.controller.scheduler.runner._thread.isRunning()


def test_engine_error_in_analysis_is_shown(qtbot, make_window) -> None:
    from engine.errors import VolumeError

    window = make_window(fail_with=VolumeError("scan.nii.gz: brain too small"))
    open_scan(qtbot, window, "ixi")
    analyse(qtbot, window)
    assert window.error_dialog is not None
    assert window.error_dialog.isVisible()
    assert "brain too small" in window.error_dialog.text()


def test_missing_model_is_reported_when_analysing(qtbot, make_window) -> None:
    window = make_window(model_error="weights hash mismatch")
    assert window.controller.models.model is None
    assert "hash mismatch" in window.analysis_panel.model_label.text()
    open_scan(qtbot, window, "ixi")
    window.analysis_panel.analyse_slice_button.click()
    assert window.error_dialog is not None
    assert "No model" in window.error_dialog.text()


def test_modality_warning_is_visible(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")  # a FLAIR on a T1 model
    assert window.banner.isVisible()
    assert "FLAIR" in window.banner.text()
    open_scan(qtbot, window, "ixi")
    assert not window.banner.isVisible()


def _write_bad_file(kind: str, folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / f"{kind}.nii.gz"
    if kind == "four_d":
        nib.save(nib.Nifti1Image(rng.random((8, 8, 8, 3), dtype=np.float32), np.eye(4)), path)
    elif kind == "two_d":
        nib.save(nib.Nifti1Image(rng.random((8, 8), dtype=np.float32), np.eye(4)), path)
    elif kind == "truncated":
        good = folder / "good.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((32, 32, 32), dtype=np.float32), np.eye(4)), good)
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind == "text":
        path.write_text("this is not a scan\n")
    elif kind == "gzipped_text":
        path.write_bytes(gzip.compress(b"hello"))
    return path  # "missing": never written


@pytest.mark.parametrize("kind", ["four_d", "two_d", "truncated", "text", "gzipped_text", "missing"])
def test_bad_file_gives_a_one_line_error_dialog(qtbot, make_window, tmp_path: Path, kind: str) -> None:
    window = make_window()
    good = open_scan(qtbot, window, "ixi")
    path = _write_bad_file(kind, tmp_path)
    assert not window.open_scan(path)
    dialog = window.error_dialog
    assert dialog is not None
    assert dialog.isVisible()
    assert "\n" not in dialog.text()
    assert path.name in dialog.text()
    assert window.state.volume.path == good, "the previous scan stays open"


def test_uncaught_exception_in_a_slot_shows_a_dialog(qtbot, make_window) -> None:
    from app.main import install_excepthook

    window = make_window()
    previous = sys.excepthook
    install_excepthook(lambda: window)
    try:
        try:
            raise RuntimeError("boom in a slot")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = previous
    assert window.error_dialog is not None
    assert "boom in a slot" in window.error_dialog.text()


def test_settings_are_remembered(qtbot, make_window, settings) -> None:
    window = make_window()
    window.plane_bar.radiological_check.setChecked(False)
    window.overlay_panel.opacity_slider.setValue(35)
    window.analysis_panel.sampler_combo.setCurrentText("dpm")
    window.close()
    again = make_window()
    assert again.settings is settings
    assert not again.state.radiological
    assert not again.plane_bar.radiological_check.isChecked()
    assert again.state.opacity == pytest.approx(0.35)
    assert again.analysis_panel.sampler_combo.currentText() == "dpm"


@pytest.mark.parametrize("name", ["brats", "ms", "ixi", "stroke"])
def test_export_mask_on_the_source_grid(qtbot, make_window, tmp_path: Path, name: str) -> None:
    window = make_window()
    path = open_scan(qtbot, window, name)
    analyse(qtbot, window)
    out = tmp_path / "out"
    written = window.export_results(out)
    assert written is not None, window.errors
    source = nib.load(str(path))
    mask = nib.load(str(written["mask"]))
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(source.affine)
    assert mask.get_data_dtype() == np.uint8
    values = np.asarray(mask.dataobj)
    expected = window.state.result.anomaly_map >= window.state.threshold
    np.testing.assert_array_equal(values.astype(bool), expected)
    assert values.any()
    assert written["sidecar"].exists()
    assert "Exported" in window.statusBar().currentMessage()
    table = written["findings_tsv"].read_text().splitlines()  # the findings table beside the mask
    assert written["findings_tsv"].name.endswith("_desc-anomaly_findings.tsv")
    assert len(table) - 1 == len(window.controller.findings.findings.items)
    assert written["findings_json"].exists()


def test_export_failure_is_reported(qtbot, make_window, tmp_path: Path) -> None:
    window = make_window()
    assert window.export_results(tmp_path) is None  # nothing open
    open_scan(qtbot, window, "ixi")
    analyse(qtbot, window)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert window.export_results(blocker / "sub") is None
    assert window.error_dialog is not None
    assert window.error_dialog.isVisible()


def test_screenshot_of_the_view(qtbot, make_window, tmp_path: Path) -> None:
    from PySide6.QtGui import QImage

    window = make_window()
    open_scan(qtbot, window, "stroke")
    analyse(qtbot, window)
    png = window.save_screenshot(tmp_path / "shot.png")
    image = QImage(str(png))
    assert not image.isNull()
    assert image.width() > 300


def test_launch_to_first_image_and_redraw_are_fast(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "brats")
    assert window.first_image_s is not None
    assert window.first_image_s < 5.0
    analyse(qtbot, window, "volume", timeout=60000)
    for name in ("heat", "mask", "spread"):
        window.state.set_overlay_visible(name, True)
    window.state.set_side_by_side(True)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        window.state.step_slice(1)
        QApplication.processEvents()
        times.append(time.perf_counter() - start)
    assert float(np.median(times)) < 0.25


@pytest.mark.parametrize("name", ["brats", "ms", "ixi", "stroke"])
def test_export_with_the_real_engine_writer(qtbot, make_window, tmp_path: Path, name: str) -> None:
    import engine

    try:
        write_outputs, output_paths = engine.write_outputs, engine.output_paths
    except (AttributeError, ImportError) as error:
        pytest.skip(f"engine.write_outputs not available yet: {error}")
    window = make_window()
    window.backend.write_outputs = write_outputs
    window.backend.output_paths = output_paths
    path = open_scan(qtbot, window, name)
    analyse(qtbot, window)
    written = window.export_results(tmp_path)
    assert written is not None, window.errors
    source = nib.load(str(path))
    mask = nib.load(str(written["mask"]))
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj).astype(bool),
                                  window.state.result.anomaly_map >= window.state.threshold)


def test_real_tiny_model_analyses_a_slice(qtbot, settings, tiny_model: Path) -> None:
    """The real engine end to end: a tiny model trained on IXI in the test session analyses the shown slice."""
    from app.main_window import MainWindow

    window = MainWindow(None, settings, model_path=tiny_model)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=120000)
    window.analysis_panel.device_combo.setCurrentText("cpu")
    assert window.controller.models.model is not None, window.controller.models.model_error
    assert window.controller.models.model.info.model_id == "tiny-test-v1.0.0"
    assert window.open_scan(scan_path("ixi"))
    with qtbot.waitSignal(window.controller.scheduler.analysis_done, timeout=300000):
        window.controller.scheduler.request_analysis("slice")
    result = window.state.result
    assert result is not None
    assert result.anomaly_map.shape == window.state.volume.shape
    assert result.analysed[window.state.cursor[result.slice_axis]]
    assert result.analysed.sum() == 1
    assert window.view.heat_item.image is not None


def test_drop_a_file_and_reopen_it_from_recent(qtbot, make_window) -> None:
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDropEvent

    window = make_window()
    path = scan_path("stroke")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert Path(window.state.volume.path).resolve() == path.resolve()
    open_scan(qtbot, window, "ixi")
    recent = [a for a in window.recent_menu.actions() if a.text() == str(path.resolve())]
    assert len(recent) == 1
    recent[0].trigger()
    assert Path(window.state.volume.path).resolve() == path.resolve()


def test_brain_mask_confines_the_analysis_and_keys_the_cache(qtbot, make_window, tmp_path: Path) -> None:
    import json

    window = make_window()
    scan = open_scan(qtbot, window, "ixi")  # IXI scans keep the skull; the data ship a brain mask beside each
    mask_path = scan.with_name(scan.name.replace("_T1", "_brainmask"))
    brain = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    analyse(qtbot, window)
    without = window.state.result
    k = window.state.slice_index
    axis = without.slice_axis
    outside = ~np.take(brain, k, axis=axis)
    assert np.take(without.anomaly_map, k, axis=axis)[outside].any()  # the skull is scored without a mask

    assert window.open_brain_mask(mask_path), window.errors
    assert window.analysis_panel.brain_mask_label.text() == mask_path.name
    assert "Brain mask" in window.statusBar().currentMessage()
    assert window.state.result is None  # results made without the mask are not shown for it
    analyse(qtbot, window)
    with_mask = window.state.result
    ensemble = window.backend.ensembles[-1]
    np.testing.assert_array_equal(ensemble.brain_masks[-1], brain)
    assert not np.take(with_mask.anomaly_map, k, axis=axis)[outside].any()
    written = window.export_results(tmp_path)
    assert written is not None, window.errors
    assert json.loads(written["sidecar"].read_text())["BrainMask"] == str(mask_path)

    calls = len(ensemble.calls)
    window.controller.scan.clear_brain_mask()
    assert window.controller.scan.brain_mask is None
    assert window.state.result is without
    assert window.open_brain_mask(mask_path)
    assert window.state.result is with_mask
    analyse(qtbot, window)
    assert len(ensemble.calls) == calls  # cached under the mask's key

    # a mask from another grid, an empty mask and a missing file are refused; the current mask stays
    for bad, expected in ((scan_path("ms").with_name("patient07_lesion.nii.gz"), "differs from the scan's"),
                          (tmp_path / "missing.nii.gz", "missing.nii.gz")):
        assert not window.open_brain_mask(bad)
        assert expected in window.errors[-1]
        assert str(bad) in window.errors[-1]
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(brain.shape, np.uint8), nib.load(str(mask_path)).affine), str(empty))
    assert not window.open_brain_mask(empty)
    assert "empty" in window.errors[-1]
    assert window.controller.scan.brain_mask_path == mask_path

    open_scan(qtbot, window, "brats")  # another scan: the mask does not carry over
    assert window.controller.scan.brain_mask is None
    assert window.analysis_panel.brain_mask_label.text() == text.BRAIN_MASK_NONE


def test_the_image_takes_most_of_the_window_and_the_score_strip_waits_for_a_result(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "ixi")
    QApplication.processEvents()
    assert not window.score_plot.isVisible()  # nothing to plot yet: the image gets the room
    analyse(qtbot, window, "volume")
    QApplication.processEvents()
    assert window.score_plot.isVisible()
    central = window.centralWidget().size()
    assert window.view_panel.height() > 0.7 * central.height()
    assert window.score_plot.height() < 0.25 * central.height()
    assert window.view_panel.width() > 0.6 * window.width()
    window._score_strip_action.setChecked(False)  # View > Slice-score strip
    assert not window.score_plot.isVisible()
    window._score_strip_action.setChecked(True)
    assert window.score_plot.isVisible()


@pytest.mark.parametrize(("screen", "maximised"), [((1280, 770), True), ((1920, 1050), False), ((2560, 1400), False)])
def test_first_start_fits_the_screen(screen: tuple[int, int], maximised: bool) -> None:
    from PySide6.QtCore import QSize

    from app.main_window import start_size

    size, maximise = start_size(QSize(*screen))
    assert maximise == maximised
    assert size.width() <= screen[0]
    assert size.height() <= screen[1]
    assert size.width() >= min(0.85 * screen[0], 1700)


def test_a_window_without_saved_layout_starts_at_the_fitted_size(qtbot, make_window) -> None:
    window = make_window()
    window.settings.clear()
    window.showNormal()
    window.restore_settings()
    QApplication.processEvents()
    available = window.screen().availableGeometry()
    assert window.isMaximized() or window.width() <= available.width()


def test_splitter_dock_and_strip_layout_are_remembered(qtbot, make_window) -> None:
    window = make_window()
    open_scan(qtbot, window, "ixi")
    analyse(qtbot, window)
    window.splitter.setSizes([300, 250])
    sizes = window.splitter.sizes()
    window.controls_dock.hide()
    window._score_strip_action.setChecked(False)
    window.close()
    again = make_window()
    assert not again.controls_dock.isVisible()
    assert not again._score_strip_action.isChecked()
    again._score_strip_action.setChecked(True)
    open_scan(qtbot, again, "ixi")
    analyse(qtbot, again)  # cached: the strip shows again, at the height it was left
    QApplication.processEvents()
    assert again.score_plot.isVisible()
    assert abs(again.splitter.sizes()[1] - sizes[1]) <= 0.1 * sizes[1] + 5


def test_a_slice_change_reuses_tables_layout_and_placement(qtbot, make_window, monkeypatch) -> None:
    """Browsing recomputes only the slices: no new lookup tables, plane layout, RGBA images or image rects."""
    window = make_window()
    open_scan(qtbot, window, "brats")
    analyse(qtbot, window, "volume", timeout=60000)
    state, view = window.state, window.view
    for name in ("heat", "mask", "spread"):
        state.set_overlay_visible(name, True)
    state.set_mask_fill(True)
    state.set_side_by_side(True)
    QApplication.processEvents()
    items = (view.base_item, view.heat_item, view.spread_item, view.mask_item, view.side_item)
    luts = [item.lut for item in items]
    layouts, rects = [], []
    monkeypatch.setattr(slicing, "plane_layout", lambda *a, **k: layouts.append(a))
    for item in items:
        monkeypatch.setattr(item, "setRect", lambda *a, _rects=rects: _rects.append(a))
    before = view.mask_item.image.copy()
    for _ in range(5):
        state.step_slice(1)
        QApplication.processEvents()
    assert all(item.lut is lut for item, lut in zip(items, luts, strict=True))  # the very same table objects
    assert not layouts
    assert not rects
    mask = view.mask_item.image
    assert mask.dtype == np.uint8
    assert mask.ndim == 2  # labels drawn through a table, not an RGBA image per slice
    assert not np.array_equal(mask, before)


def test_findings_table_lists_the_regions_and_a_click_goes_to_one(qtbot, make_window) -> None:
    from app import prefs
    from engine.findings import DEFAULT_MIN_VOLUME_ML

    assert prefs.FINDINGS_MIN_ML.default == DEFAULT_MIN_VOLUME_ML
    window = make_window()
    open_scan(qtbot, window, "brats")
    dock, model = window.findings_dock, window.controller.findings
    assert dock.isVisible()
    assert dock.table.rowCount() == 0
    assert dock.summary.text() == text.FINDINGS_NONE
    with qtbot.waitSignal(model.findings_changed, timeout=60000, check_params_cb=lambda f: f is not None):
        analyse(qtbot, window, "volume")
    findings = model.findings
    result = window.state.result
    assert len(findings.items) >= 2
    assert findings.threshold == pytest.approx(window.state.threshold)
    assert dock.table.rowCount() == len(findings.items)
    assert [dock.table.finding_id(r) for r in range(dock.table.rowCount())] == [f.id for f in findings.items]
    assert dock.table.item(0, 1).text() == f"{findings.items[0].volume_ml:.2f}"
    assert f"{len(findings.items)} finding(s)" in dock.summary.text()
    # every listed voxel is in the mask, and the volumes add up on the scan's own grid
    assert (result.anomaly_map[findings.labels > 0] >= window.state.threshold).all()
    voxel_ml = float(np.prod(slicing.voxel_sizes(window.state.volume.affine))) / 1000
    assert sum(f.volume_ml for f in findings.items) == pytest.approx((findings.labels > 0).sum() * voxel_ml)
    # a click on a row puts the cursor on that finding's peak
    second = findings.items[1]
    rect = dock.table.visualItemRect(dock.table.item(1, 0))
    qtbot.mouseClick(dock.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.state.cursor == second.peak_voxel
    assert result.anomaly_map[second.peak_voxel] == pytest.approx(second.max_score)
    # a higher threshold or a larger smallest size lists fewer findings
    with qtbot.waitSignal(model.findings_changed, timeout=5000):
        window.overlay_panel.threshold_spin.setValue(window.state.threshold * 1.5)
    assert model.findings.threshold == pytest.approx(window.state.threshold)
    assert dock.table.rowCount() == len(model.findings.items) < len(findings.items)
    with qtbot.waitSignal(model.findings_changed, timeout=5000):
        dock.min_spin.setValue(1.0)
    assert all(f.volume_ml >= 1.0 for f in model.findings.items)
    assert dock.table.rowCount() == len(model.findings.items)


def test_export_dicom_seg_from_a_dicom_series(qtbot, make_window, tmp_path: Path) -> None:
    import pydicom

    from tests.dicom_factory import write_series

    sample = nib.load(scan_path("ms"))
    affine = sample.affine.copy()
    affine[:3, 3] = (sample.affine @ [40, 50, 70, 1])[:3]
    series = tmp_path / "series"
    write_series(np.asarray(sample.dataobj, np.float32)[40:140, 50:180, 70:110], affine, series)
    window = make_window()
    nifti = open_scan(qtbot, window, "ms")
    analyse(qtbot, window)
    window.controller.exports.export_dicom_seg(tmp_path / "out")  # a NIfTI scan: one line, nothing written
    assert "needs a scan opened from a DICOM series folder" in window.errors[-1]
    assert nifti.name in window.errors[-1]
    assert not (tmp_path / "out").exists()
    assert window.open_scan(series), window.errors
    analyse(qtbot, window, "volume")
    findings = window.controller.findings.findings
    assert findings.items
    path = window.controller.exports.export_dicom_seg(None)  # beside the series folder
    assert path == tmp_path / "series_desc-anomaly_seg.dcm"
    seg = pydicom.dcmread(path)
    assert len(seg.SegmentSequence) == len(findings.items)
    assert "checked" in window.statusBar().currentMessage()


def test_save_report_writes_one_pdf_page(qtbot, make_window, tmp_path: Path) -> None:
    import re

    window = make_window()
    window.controller.exports.save_report(tmp_path)
    assert window.errors[-1] == text.ERR_NO_SCAN
    open_scan(qtbot, window, "ms")
    analyse(qtbot, window, "volume")
    path = window.controller.exports.save_report(tmp_path)
    assert path == tmp_path / "patient07_desc-anomaly_report.pdf"
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", path.read_bytes())) == 1
    assert "Report written" in window.statusBar().currentMessage()

"""A study in the viewer (issue 23): other sequences under the map with one cursor, a reference segmentation's
outline and scores, on a BraTS dev case and on the MS sample."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import data_path


def _analysed(qtbot, window) -> None:  # noqa: ANN001
    window.controller.scheduler.request_analysis("volume")
    qtbot.waitUntil(lambda: window.controller.scheduler.is_idle() and window.state.result is not None, timeout=60_000)


def _scores(line: str) -> dict[str, float]:
    found = re.findall(r"(slice|volume) Dice (\d+|–) ?%?, sensitivity (\d+|–) ?%?, precision (\d+|–)", line)
    return {f"{where}_{k}": (float(v) if v != "–" else None) for where, *vals in found
            for k, v in zip(("dice", "sens", "prec"), vals, strict=True)}


def test_a_brats_case_opens_as_a_study_with_its_segmentation(qtbot, make_window) -> None:
    case = data_path("brats2018-dev/Brats18_2013_20_1")
    window = make_window()
    assert window.open_path(case)
    state = window.state
    assert Path(state.volume.path).name.endswith("_t1.nii.gz")  # the model's sequence is the analysed one
    assert set(state.sequences) == {"T2", "FLAIR"}
    assert state.reference is not None
    assert not window.worklist_dock.isVisible()  # a study, not a worklist of four scans
    seg = np.asarray(nib.load(next(case.glob("*_seg.nii.gz"))).dataobj) > 0
    np.testing.assert_array_equal(state.reference.data, seg)
    # One cursor for every sequence: S switches what is drawn under the map, the slice stays.
    _analysed(qtbot, window)
    cursor = state.cursor
    flair = np.asarray(nib.load(next(case.glob("*_flair.nii.gz"))).dataobj, np.float32)
    for _ in range(len(state.sequence_names())):
        qtbot.keyClick(window.view, "S")
        assert state.cursor == cursor
        if state.sequence == "FLAIR":
            break
    assert state.sequence == "FLAIR"
    view = window.view
    shown = view.base_item.image
    from app import slicing

    np.testing.assert_array_equal(shown, slicing.take_slice(flair, state.layout(), state.slice_index))
    assert view.heat_item.isVisible()  # the map is drawn over FLAIR
    assert view.base_item.levels is not None
    assert "FLAIR" in view.slice_label.toPlainText()
    state.step_slice(3)
    np.testing.assert_array_equal(view.base_item.image,
                                  slicing.take_slice(flair, state.layout(), state.slice_index))
    # Dice in the status equals an independent count, at two thresholds.
    amap = state.result.anomaly_map
    for threshold in (0.05, 0.12):
        state.set_threshold(threshold)
        line = window.reference_label.text()
        assert window.reference_label.isVisibleTo(window)
        scores = _scores(line)
        mask = (amap >= threshold) & (amap > 0)
        tp = np.sum(mask & seg)
        assert scores["volume_dice"] == pytest.approx(round(100 * 2 * tp / (mask.sum() + seg.sum())), abs=0.5)
        assert scores["volume_sens"] == pytest.approx(round(100 * tp / seg.sum()), abs=0.5)
        k = state.slice_index
        cut_m, cut_s = mask[:, :, k], seg[:, :, k]
        if cut_m.sum() + cut_s.sum():
            tp_k = np.sum(cut_m & cut_s)
            assert scores["slice_dice"] == pytest.approx(round(100 * 2 * tp_k / (cut_m.sum() + cut_s.sum())), abs=0.5)
    assert window.errors == []


def test_the_ms_sample_with_a_flair_on_another_grid_and_another_subject_refused(qtbot, make_window,
                                                                               tmp_path: Path) -> None:
    folder = data_path("ms-lesjak/patient07")
    flair_img = nib.load(folder / "patient07_FLAIR.nii.gz")
    coarse_affine = flair_img.affine.copy()
    coarse_affine[:3, :3] *= 2
    coarse = tmp_path / "patient07_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(flair_img.dataobj, np.float32)[::2, ::2, ::2], coarse_affine), coarse)
    far_affine = flair_img.affine.copy()
    far_affine[:3, 3] += 400
    far = tmp_path / "other_T2.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(flair_img.dataobj, np.float32), far_affine), far)
    window = make_window()
    assert window.open_scan(folder / "patient07_T1.nii.gz")
    assert window.study.open_study([folder / "patient07_T2.nii.gz", coarse], folder / "patient07_lesion.nii.gz")
    assert set(window.state.sequences) == {"T2", "FLAIR"}
    assert window.state.sequences["FLAIR"].resampled
    assert "patient07_FLAIR.nii.gz: on another grid" in window.statusBar().currentMessage()
    assert window.errors == []
    assert not window.study.open_study([far])  # another space: refused in one line, the study kept
    assert len(window.errors) == 1
    assert "other_T2.nii.gz: covers 0 %" in window.errors[0]
    assert set(window.state.sequences) == {"T2", "FLAIR"}
    # Each sequence keeps its own contrast.
    t1_window = window.state.window
    window.state.set_sequence("FLAIR")
    assert window.state.window != t1_window
    window.state.set_window(0, 10)
    window.state.set_sequence("")
    assert window.state.window == t1_window


def test_the_grid_shows_every_sequence_in_linked_views(qtbot, make_window) -> None:
    from app import slicing

    case = data_path("brats2018-dev/Brats18_2013_20_1")
    window = make_window()
    assert window.open_path(case)
    _analysed(qtbot, window)
    state, area = window.state, window.image_area
    qtbot.keyClick(window.view, "G")
    assert state.study_grid
    shown = [p for p in area.panes if p.isVisible()]
    assert [p.name for p in shown] == ["T2", "FLAIR"]
    t2 = np.asarray(nib.load(next(case.glob("*_t2.nii.gz"))).dataobj, np.float32)
    for step in (0, 5):
        state.step_slice(step)
        np.testing.assert_array_equal(shown[0].base_item.image,
                                      slicing.take_slice(t2, state.layout(), state.slice_index))
        np.testing.assert_array_equal(shown[1].heat_item.image, window.view.heat_item.image)  # one map over all
    assert shown[0].base_item.levels is not None
    assert tuple(shown[0].base_item.levels) == pytest.approx(state.window_of("T2"))
    # Zoom and pan are shared; a click in a pane moves the one cursor.
    window.view.zoom(2.0)
    for pane in shown:  # the same centre and the same mm per screen pixel in every view
        own, main = pane.viewbox.viewRect(), window.view.viewbox.viewRect()
        assert (own.center().x(), own.center().y()) == pytest.approx((main.center().x(), main.center().y()), abs=0.5)
        scale = own.width() / pane.viewbox.boundingRect().width()
        assert scale == pytest.approx(main.width() / window.view.viewbox.boundingRect().width(), rel=0.02)
    layout = state.layout()
    from PySide6.QtCore import QPointF

    shown[1]._on_clicked(QPointF(10.5 * layout.col_spacing, 20.5 * layout.row_spacing))  # noqa: SLF001
    assert slicing.voxel_to_display(layout, state.cursor) == (20, 10)
    # Switching the main view's sequence moves the others into the panes.
    qtbot.keyClick(window.view, "S")
    assert state.sequence != ""
    assert "" in [p.name for p in area.panes if p.isVisible()]
    qtbot.keyClick(window.view, "G")
    assert not any(p.isVisible() for p in area.panes)


def test_file_menu_adds_sequences_and_a_reference(qtbot, make_window, monkeypatch) -> None:
    from app.views import dialogs

    folder = data_path("ms-lesjak/patient07")
    window = make_window()
    assert window.open_scan(folder / "patient07_T1.nii.gz")
    chosen = [str(folder / "patient07_FLAIR.nii.gz"), str(folder / "patient07_lesion.nii.gz")]
    monkeypatch.setattr(dialogs, "pick_study_files", lambda _parent, _folder: chosen)
    window.open_study_dialog()  # the menu's slot, its dialog answered
    assert list(window.state.sequences) == ["FLAIR"]
    lesion = np.asarray(nib.load(folder / "patient07_lesion.nii.gz").dataobj) > 0
    np.testing.assert_array_equal(window.state.reference.data, lesion)
    assert window.errors == []


def test_the_report_draws_the_shown_sequence_and_names_the_reference(qtbot, make_window, tmp_path: Path) -> None:
    folder = data_path("ms-lesjak/patient07")
    window = make_window()
    assert window.open_scan(folder / "patient07_T1.nii.gz")
    assert window.study.open_study([folder / "patient07_FLAIR.nii.gz"], folder / "patient07_lesion.nii.gz")
    _analysed(qtbot, window)
    window.state.set_sequence("FLAIR")
    backend, calls = window.backend, []
    real = backend.write_report

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs)
        return real(*args, **kwargs, png_path=tmp_path / "page.png")

    backend.write_report = recording
    path = window.controller.exports.save_report(tmp_path)
    assert path is not None
    assert path.is_file()
    assert (tmp_path / "page.png").stat().st_size > 10_000
    (options,) = calls
    name, image = options["underlay"]
    assert "FLAIR" in name
    np.testing.assert_array_equal(image, window.state.sequences["FLAIR"].data)
    lesion = np.asarray(nib.load(folder / "patient07_lesion.nii.gz").dataobj) > 0
    amap, threshold = window.state.result.anomaly_map, window.state.threshold
    mask = (amap >= threshold) & (amap > 0)
    dice = 2 * np.sum(mask & lesion) / (mask.sum() + lesion.sum())
    ((label, line),) = options["notes"]
    assert label == "Reference"
    assert f"Dice {100 * dice:.0f} %" in line
    assert options["reference"][0] == "patient07_lesion.nii.gz"


def test_file_open_folder_opens_a_case_folder_as_a_study(qtbot, make_window, monkeypatch) -> None:
    from app.views import dialogs

    case = data_path("brats2018-dev/Brats18_2013_20_1")
    window = make_window()
    monkeypatch.setattr(dialogs, "pick_worklist_folder", lambda _parent, _folder: str(case))
    window.open_worklist_dialog()  # the menu's slot, its dialog answered
    assert Path(window.state.volume.path).name.endswith("_t1.nii.gz")
    assert set(window.state.sequences) == {"T2", "FLAIR"}
    assert not window.worklist.entries

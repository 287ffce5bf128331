"""MainWindow: assembles the viewer from its parts and wires them together.

The parts: :class:`~app.state.ViewerState` (what is shown), :class:`~app.controller.AnalysisController` (which wires
the scan session, the model session, the analysis scheduler and the export layer, and reports errors and status),
:class:`~app.study_session.StudySession` (other sequences and a reference), the worklist and its background analysis,
the image view and the control panels in :mod:`app.views` (each bound to the state or the controller), the menus
(:mod:`app.views.menus`) and keys from :mod:`app.keymap`, and the preferences in :mod:`app.prefs`. The window itself
adds dialogs, the status bar and the layout. It reaches the engine only through the controller's *backend* (by default
the ``engine`` module; tests hand in a fake with the same names).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QMessageBox,
)

from app import prefs, slicing, study, text
from app.controller import AnalysisController
from app.keymap import Command, KeyMap
from app.state import ViewerState
from app.study_session import StudySession
from app.views import dialogs, view_commands
from app.views.controls_dock import ControlsDock
from app.views.findings_table import FindingsDock
from app.views.image_area import ImageArea
from app.views.menus import build_menus
from app.views.readout import Readout
from app.views.worklist_dock import WorklistDock
from app.worklist import Worklist, entries_from, is_worklist_folder
from app.worklist_analysis import WorklistAnalyser
from engine import file_stem

logger = logging.getLogger(__name__)

KEYS = KeyMap()
SMALL_SCREEN = (1500, 900)  # below this the window starts maximised
WORKLIST_WIDTH = 380  # px: id, status, flagged volume and findings side by side


class MainWindow(QMainWindow):
    """The viewer's main window.

    Args:
        backend: an object with the engine's public API (default: the ``engine`` module).
        settings: where preferences and layout are kept (default: the user's INI file).
        model_path: model folder to use (default: ``backend.default_model_path()``).
        interactive: False for headless rendering: errors are collected in :attr:`errors` instead of dialogs.
        autoload_model: load the model in the background right away (else: when :attr:`first_image_drawn` fires, or
            when the first analysis is asked for).
    """

    first_image_drawn = Signal()  # once: the first scan is on screen (then the model may load without delaying it)

    def __init__(self, backend: Any = None, settings: QSettings | None = None, model_path: str | Path | None = None,
                 *, interactive: bool = True, autoload_model: bool = True) -> None:
        super().__init__()
        if backend is None:
            import engine as backend
        self.settings = settings if settings is not None else prefs.default_settings()
        self.interactive = interactive
        self.error_dialog: QMessageBox | None = None
        self.shortcuts_dialog: QMessageBox | None = None
        self.first_image_s: float | None = None
        self.state = ViewerState(self)
        self.controller = AnalysisController(backend, self.state, model_path, self)
        self.study = StudySession(backend, self.state, self.controller, self.controller.models,
                                  self.controller.exports)
        self.worklist = Worklist(self)
        self.worklist_analyser = WorklistAnalyser(self.worklist, self.controller, prefs.cache_folder(self.settings),
                                                  self)
        self.worklist_analyser.scan_analysed.connect(self._on_worklist_scan_analysed)
        for signal in (self.state.threshold_changed, self.state.result_changed, self.state.study_changed,
                       self.state.cursor_changed, self.state.plane_changed):
            signal.connect(self._show_reference_status)
        self.setWindowTitle(text.WINDOW_TITLE)
        self.setAcceptDrops(True)
        self._build_central()
        self._build_docks()
        self._build_menus()
        c = self.controller
        c.error_reported.connect(self._show_error_dialog)
        c.status.connect(self.statusBar().showMessage)
        c.scheduler.busy_changed.connect(lambda busy: self._actions[Command.CANCEL].setEnabled(busy))
        self._actions[Command.CANCEL].setEnabled(False)
        self._awaiting_first_image = True
        self.view.viewport().installEventFilter(self)
        self.restore_settings()
        if not self.worklist.entries:  # a saved layout may have shown it; it waits for a worklist
            self.worklist_dock.hide()
        if autoload_model:
            c.scheduler.load_model()

    # ============================================================================================ parts
    @property
    def backend(self) -> Any:
        return self.controller.backend

    @property
    def errors(self) -> list[str]:
        """Every problem reported so far, one line each (newest last)."""
        return self.controller.errors

    @property
    def warnings(self) -> list[str]:
        """Warnings shown in the banner above the view."""
        return list(self.controller.warnings)

    def _build_central(self) -> None:
        self.image_area = ImageArea(self.state, self.controller, self.handle_key, self)
        self.setCentralWidget(self.image_area)
        area = self.image_area  # short names for the parts tests and the headless renderer reach
        self.plane_bar, self.banner, self.view = area.plane_bar, area.banner, area.view
        self.view_panel = area.view_panel
        self.slice_slider, self.score_plot, self.splitter = area.slice_slider, area.score_plot, area.splitter
        self.progress = area.progress
        self.readout = Readout(self.state)
        self.view.hovered.connect(self.readout.show_voxel)
        self.statusBar().addPermanentWidget(self.readout, 1)
        self.reference_label = QLabel()  # the mask against a reference segmentation, kept while one is open
        self.reference_label.setStyleSheet("color:#3cc8ff;")
        self.reference_label.hide()
        self.statusBar().addPermanentWidget(self.reference_label)

    def _build_docks(self) -> None:
        self.controls_dock = ControlsDock(self.state, self.controller, self)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.controls_dock)
        dock = self.controls_dock
        self.analysis_panel, self.overlay_panel, self.contrast_panel = (dock.analysis_panel, dock.overlay_panel,
                                                                        dock.contrast_panel)
        self.contrast_panel.reset_view_requested.connect(self.reset_view)
        self.findings_dock = FindingsDock(self.controller.findings, self)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.findings_dock)
        self.splitDockWidget(self.controls_dock, self.findings_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.controls_dock, self.findings_dock], [self.controls_dock.panel_height(), 200],
                         Qt.Orientation.Vertical)  # the controls whole, the findings below them
        self.worklist_dock = WorklistDock(self.worklist, self)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.worklist_dock)
        self.worklist_dock.chosen.connect(self.open_worklist_entry)
        self.worklist_dock.hide()  # until a worklist is opened

    def _build_menus(self) -> None:
        menus = build_menus(self, KEYS)
        self._actions, self.recent_menu, self._score_strip_action = menus.by_command, menus.recent, menus.score_strip

    # ============================================================================================ preferences
    def restore_settings(self) -> None:
        """Window layout, view, overlay and analysis choices as the user left them."""
        st = self.settings
        geometry = prefs.WINDOW_GEOMETRY.read(st)
        if geometry is None or not self.restoreGeometry(geometry):
            if self.interactive:
                self._fit_to_screen()
            else:
                self.resize(1400, 900)
        layout = prefs.WINDOW_STATE.read(st)
        if layout is not None:
            self.restoreState(layout, prefs.LAYOUT_VERSION)  # a layout from other docks is ignored
        splitter = prefs.SPLITTER_STATE.read(st)
        if splitter is not None:
            self.splitter.restoreState(splitter)
        self._score_strip_action.setChecked(prefs.SCORE_STRIP.read(st))
        prefs.restore_viewer(st, self.state, self.controller)

    def _fit_to_screen(self) -> None:
        """First start: most of the screen, centred; maximised on a small screen."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            self.resize(1400, 900)
            return
        area = screen.availableGeometry()
        size, maximised = start_size(area.size())
        self.resize(size)
        self.move(area.center() - self.rect().center())
        if maximised:
            self.setWindowState(self.windowState() | Qt.WindowState.WindowMaximized)

    def save_settings(self) -> None:
        """Write preferences and window layout to the settings store."""
        st = self.settings
        prefs.WINDOW_GEOMETRY.write(st, self.saveGeometry())
        prefs.WINDOW_STATE.write(st, self.saveState(prefs.LAYOUT_VERSION))
        prefs.SPLITTER_STATE.write(st, self.splitter.saveState())
        prefs.SCORE_STRIP.write(st, self._score_strip_action.isChecked())
        prefs.save_viewer(st, self.state, self.controller)
        st.sync()

    def recent_files(self) -> list[str]:
        return self.recent_menu.files()

    # ============================================================================================ errors
    def show_error(self, title: str, message: str) -> None:
        """Tell the user about a problem in one line (a non-modal dialog; headless: kept in :attr:`errors`)."""
        self.controller.report_error(title, message)

    def show_unexpected(self, error: BaseException) -> None:
        """Report an exception that is not an engine error (the traceback goes to the log)."""
        self.controller.report_unexpected(error)

    def _show_error_dialog(self, title: str, line: str) -> None:
        if not self.interactive:
            return
        if self.error_dialog is not None:
            self.error_dialog.close()
        self.error_dialog = dialogs.non_modal(self, QMessageBox.Icon.Critical, title, line)

    # ============================================================================================ files
    def open_scan(self, path: str | Path) -> bool:
        """Load a scan (file or DICOM folder) and show it; on failure show the reason and keep the current scan."""
        start = time.perf_counter()
        path = Path(path)
        volume = self.controller.scan.open_scan(path)
        if volume is None:
            return False
        self.recent_menu.add(path)
        self.setWindowTitle(text.WINDOW_TITLE_WITH_SCAN.format(name=path.name))
        self.statusBar().showMessage(text.STATUS_LOADED.format(
            name=path.name, shape="x".join(str(n) for n in volume.data.shape),
            zooms="x".join(f"{z:.3g}" for z in slicing.voxel_sizes(volume.affine)),
            axcodes="".join(slicing.axcodes(volume.affine))))
        self.view.setFocus()
        self.first_image_s = time.perf_counter() - start
        logger.info("opened %s in %.2f s", path, self.first_image_s)
        return True

    def open_brain_mask(self, path: str | Path) -> bool:
        """Use a brain mask on the open scan's grid for the analyses (see the controller)."""
        return self.controller.scan.open_brain_mask(path)

    # ============================================================================================ study
    def open_study_folder(self, folder: str | Path) -> bool:
        """A study folder (a BraTS case): the model's sequence opens for analysis, the others and the segmentation
        come with it."""
        found, reference = study.study_files(folder)
        analysed = found.get(self.study.analysed_sequence())
        if analysed is None:
            self.controller.report_error(text.ERR_STUDY, text.ERR_STUDY_NO_ANALYSED.format(
                folder=folder, sequence=self.study.analysed_sequence()))
            return False
        if not self.open_scan(analysed):
            return False
        return self.study.open_study([p for n, p in found.items() if p != analysed], reference)

    def _show_reference_status(self, *_: Any) -> None:
        line = self.study.reference_status()
        self.reference_label.setText(line or "")
        self.reference_label.setVisible(line is not None)

    # ============================================================================================ worklist
    def open_path(self, path: str | Path) -> bool:
        """A scan or DICOM folder opens; a study folder (one subject's sequences) opens as a study; a folder of
        scans or a cohort's output folder becomes the worklist."""
        if study.is_study_folder(path):
            return self.open_study_folder(path)
        if is_worklist_folder(Path(path), self.backend):
            return self.open_worklist(path)
        return self.open_scan(path)

    def open_worklist(self, folder: str | Path) -> bool:
        """List a folder's scans, or a cohort run's scans with their results (most flagged first), and open the
        first; on failure say why and keep the current list."""
        folder = Path(folder)
        try:
            entries = entries_from(folder, self.backend)
        except self.backend.EngineError as error:
            self.controller.report_error(text.ERR_WORKLIST, str(error))
            return False
        self.worklist.set_entries(folder, entries)
        self.worklist_dock.show()
        self.resizeDocks([self.worklist_dock], [WORKLIST_WIDTH], Qt.Orientation.Horizontal)  # every column readable
        self.statusBar().showMessage(text.STATUS_WORKLIST.format(count=len(entries), folder=folder))
        if entries:
            self.open_worklist_entry(0)
        return True

    def open_worklist_entry(self, index: int) -> bool:
        """Open a listed scan, with its brain mask, and the cohort's result for it when there is one."""
        entry = self.worklist.entries[index]
        self.worklist.set_current(index)
        if not self.open_scan(entry.image):
            return False
        if entry.brain_mask is not None and not self.open_brain_mask(entry.brain_mask):
            return False
        return entry.sidecar is None or self._show_entry_result(entry)

    def _show_entry_result(self, entry: Any) -> bool:
        """Show a listed scan's written result (on the open scan) without running the model; False after saying
        why it could not be read."""
        try:
            result = self.backend.read_outputs(self.state.volume, entry.sidecar)
        except self.backend.EngineError as error:
            self.controller.report_error(text.ERR_WORKLIST_RESULT, str(error))
            return False
        self.controller.show_result(result)
        self.statusBar().showMessage(text.STATUS_WORKLIST_RESULT.format(name=entry.id, threshold=self.state.threshold))
        return True

    def _on_worklist_scan_analysed(self, index: int) -> None:
        """A background result for the open scan shows at once unless the user has a result on screen already."""
        entry = self.worklist.entries[index]
        volume = self.state.volume
        if index != self.worklist.current or volume is None or self.state.result is not None or entry.sidecar is None:
            return
        if volume.path is not None and Path(volume.path) == entry.image:
            self._show_entry_result(entry)

    def step_worklist(self, delta: int) -> None:
        index = self.worklist.step(delta)
        if index is not None:
            self.open_worklist_entry(index)

    def open_worklist_dialog(self) -> None:
        folder = dialogs.pick_worklist_folder(self, prefs.RECENT_FOLDER.read(self.settings))
        if folder:
            self.open_path(folder)  # one subject's sequences open as a study, anything else as a worklist

    def open_dialog(self) -> None:
        path = dialogs.pick_scan(self, prefs.RECENT_FOLDER.read(self.settings))
        if path:
            self.open_scan(path)

    def open_dicom_dialog(self) -> None:
        path = dialogs.pick_dicom_folder(self, prefs.RECENT_FOLDER.read(self.settings))
        if path:
            self.open_scan(path)

    def open_study_dialog(self) -> None:
        """Other sequences of the open scan's subject, and a reference segmentation among them by its name."""
        volume = self.state.volume
        paths = dialogs.pick_study_files(self, str(Path(volume.path).parent) if volume and volume.path else "")
        if paths:
            references = [p for p in paths if study.is_reference(p)]
            others = [p for p in paths if not study.is_reference(p)]
            self.study.open_study(others, references[0] if references else None)

    def open_brain_mask_dialog(self) -> None:
        volume = self.state.volume
        path = dialogs.pick_brain_mask(self, str(Path(volume.path).parent) if volume and volume.path else "")
        if path:
            self.open_brain_mask(path)

    def choose_model_dialog(self) -> None:
        path = dialogs.pick_model_folder(self, str(self.controller.models.model_path or ""))
        if path:
            self.controller.scheduler.load_model(path, explicit=True)

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        for url in event.mimeData().urls():
            if url.isLocalFile():
                event.acceptProposedAction()
                self.open_scan(url.toLocalFile())
                return

    def export_results(self, folder: str | Path | None) -> dict[str, Path] | None:
        """Write mask, map, restored volume, spread and sidecar (BIDS-like names) and verify the mask's grid.

        Args:
            folder: output folder; None writes beside the scan.

        Returns:
            The written paths, or None after showing why nothing (or something wrong) was written.
        """
        return self.controller.exports.export(folder, lambda count, out_dir: not self.interactive or
                                              dialogs.confirm_overwrite(self, count, out_dir))

    def export_dialog(self) -> None:
        folder = dialogs.pick_export_folder(self, prefs.EXPORT_FOLDER.read(self.settings))
        if folder:
            prefs.EXPORT_FOLDER.write(self.settings, folder)
            self.export_results(folder)

    def screenshot_dialog(self) -> None:
        volume = self.state.volume
        default = ""
        if volume is not None and volume.path is not None:
            default = str(Path(volume.path).parent / (file_stem(volume.path) + "_viewer.png"))
        path = dialogs.pick_screenshot(self, default)
        if path:
            self.save_screenshot(path)

    def save_screenshot(self, path: str | Path) -> Path | None:
        """Save the view (image, overlays, letters, colour bar) as a PNG at the screen's physical resolution."""
        path = Path(path)
        volume = self.state.volume
        if volume is not None and volume.path is not None and path.resolve() == Path(volume.path).resolve():
            self.show_error(text.ERR_EXPORT, text.ERR_OVERWRITE_SCAN.format(path=path))
            return None
        if not self.view_panel.grab().toImage().save(str(path), "PNG"):
            self.show_error(text.ERR_EXPORT, text.ERR_PNG.format(path=path))
            return None
        self.statusBar().showMessage(text.STATUS_SCREENSHOT.format(path=path))
        return path

    # ============================================================================================ keys
    def handle_key(self, event: QKeyEvent) -> bool:
        """Viewer keys from the key map (slices, planes, zoom, layers); True if the key was used."""
        command = KEYS.command_for(event.key())
        return command is not None and view_commands.run(command, self.state, self.view)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """Notice the first paint of the view with a scan in it (then announce it, once)."""
        if (self._awaiting_first_image and event.type() == QEvent.Type.Paint and self.state.volume is not None
                and watched is self.view.viewport()):
            self._awaiting_first_image = False
            QTimer.singleShot(0, self.first_image_drawn.emit)  # after this paint has finished
        return False

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if not self.handle_key(event):
            super().keyPressEvent(event)

    def reset_view(self) -> None:
        """Auto contrast and fit the slice in the view."""
        self.state.reset_window()
        self.view.reset_zoom()

    def show_shortcuts(self) -> None:
        self.shortcuts_dialog = dialogs.non_modal(self, QMessageBox.Icon.Information, text.SHORTCUTS_TITLE,
                                                  KEYS.help_html(), rich=True)

    def show_about(self) -> None:
        dialogs.about(self, getattr(self.backend, "__version__", ""))

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Save settings, cancel any analysis and stop the worker thread before closing."""
        try:
            self.save_settings()
        except Exception:  # settings trouble must not block closing
            logger.exception("could not save settings")
        self.worklist_analyser.enabled = False  # nothing new starts; the running scan is cancelled below
        self.controller.shutdown()
        super().closeEvent(event)


def start_size(available: QSize) -> tuple[QSize, bool]:
    """The window's first size on a screen with ``available`` room, and whether to maximise it."""
    size = QSize(min(int(available.width() * 0.9), 1800), min(int(available.height() * 0.9), 1150))
    small = available.width() < SMALL_SCREEN[0] or available.height() < SMALL_SCREEN[1]
    return size, small


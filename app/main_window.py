"""MainWindow: composes the slice view, the controls, the slice-score plot, menus, dialogs and the worker.

The window talks to the engine only through a *backend* object with the engine's public API (by default the
``engine`` module itself); tests hand in a fake with the same names.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PySide6.QtCore import QByteArray, QEventLoop, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import slicing, text
from app.results_cache import ResultCache, covered
from app.state import ViewerState
from app.views.score_plot import SliceScorePlot
from app.views.slice_view import SliceView
from app.workers import BackgroundRunner, Job

logger = logging.getLogger(__name__)

MAX_RECENT = 10
SLIDER_STEPS = 1000
SAMPLERS = ("ddim", "dpm", "paper")


def default_settings() -> QSettings:
    """The user's settings store (INI format, per user)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, text.ORG_NAME, "viewer")


def _setting(settings: QSettings, key: str, default: Any) -> Any:
    """Read a setting with the type of ``default`` (INI files store strings)."""
    value = settings.value(key, default)
    if value is None:
        return default
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [value]
            return [str(v) for v in value]
    except (TypeError, ValueError):
        return default
    return value


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class MainWindow(QMainWindow):
    """The viewer's main window.

    Args:
        backend: an object with the engine's public API (default: the ``engine`` module).
        settings: where preferences and layout are kept (default: the user's INI file).
        model_path: model folder to use (default: ``backend.default_model_path()``).
        interactive: False for headless rendering: errors are collected in :attr:`errors` instead of dialogs.
        autoload_model: load the model in the background right away.
    """

    analysis_done = Signal()  # any analysis job ended (finished, failed or cancelled)
    model_ready = Signal()

    def __init__(self, backend: Any = None, settings: QSettings | None = None, model_path: str | Path | None = None,
                 *, interactive: bool = True, autoload_model: bool = True) -> None:
        super().__init__()
        if backend is None:
            import engine as backend
        self.backend = backend
        self.settings = settings if settings is not None else default_settings()
        self.interactive = interactive
        self.errors: list[str] = []
        self.error_dialog: QMessageBox | None = None
        self.state = ViewerState(self)
        self.cache = ResultCache()
        self.runner = BackgroundRunner(backend.CancelToken, backend.Cancelled, self)
        self.model: Any = None
        self.model_error: str | None = None
        self._model_path: Path | None = Path(model_path) if model_path is not None else None
        self._pending: list[tuple[str, Any]] = []
        self._scan_key: Any = None
        self.brain_mask: np.ndarray | None = None
        self.brain_mask_path: Path | None = None
        self._brain_mask_key: Any = None
        self._analysis_axis: int | None = None
        self._warnings: list[str] = []
        self._closing = False
        self.first_image_s: float | None = None

        self.setWindowTitle(text.WINDOW_TITLE)
        self.setAcceptDrops(True)
        self._build_central()
        self._build_controls()
        self._build_score_dock()
        self._build_menus()
        self._connect_state()
        self.runner.progress.connect(self._on_job_progress)
        self.runner.finished.connect(self._on_job_finished)
        self.runner.failed.connect(self._on_job_failed)
        self.runner.cancelled.connect(self._on_job_cancelled)
        self.runner.busy_changed.connect(self._on_busy_changed)
        self._restore_settings()
        self._on_busy_changed(False)
        self._update_model_label()
        self._on_display_max_changed(self.state.display_max)
        if autoload_model:
            self.load_model(self._model_path)

    # ================================================================================================ building
    def _build_central(self) -> None:
        central = QWidget(self)
        outer = QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(QLabel(text.LBL_PLANE))
        self.plane_buttons = QButtonGroup(self)
        for i, plane in enumerate(slicing.PLANES):
            button = QToolButton()
            button.setText(text.PLANE_NAMES[plane])
            button.setCheckable(True)
            button.setToolTip(f"{text.PLANE_NAMES[plane]} ({i + 1})")
            self.plane_buttons.addButton(button, i)
            top.addWidget(button)
        self.plane_buttons.idClicked.connect(lambda i: self.state.set_plane(slicing.PLANES[i]))
        self.radiological_check = QCheckBox(text.CHK_RADIOLOGICAL)
        self.radiological_check.toggled.connect(self.state.set_radiological)
        top.addSpacing(12)
        top.addWidget(self.radiological_check)
        top.addStretch(1)
        outer.addLayout(top)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#5a4500; color:#ffe9a0; padding:4px; font-weight:bold;")
        self.banner.hide()
        outer.addWidget(self.banner)
        row = QHBoxLayout()
        self.view_panel = QWidget(central)  # what a screenshot shows: the view, the side view, the colour bar
        panel_layout = QHBoxLayout(self.view_panel)
        panel_layout.setContentsMargins(0, 0, 0, 0)
        panel_layout.setSpacing(2)
        self.view = SliceView(self.state, self.view_panel)
        self.view.key_handler = self.handle_key
        self.view.hovered.connect(self._on_hovered)
        panel_layout.addWidget(self.view.side_widget, 1)
        panel_layout.addWidget(self.view, 1)
        row.addWidget(self.view_panel, 1)
        self.slice_slider = QSlider(Qt.Orientation.Vertical)
        self.slice_slider.setToolTip(text.LBL_SLICE)
        self.slice_slider.valueChanged.connect(self.state.set_slice_index)
        row.addWidget(self.slice_slider)
        outer.addLayout(row, 1)
        self.setCentralWidget(central)
        self.readout = QLabel()
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusBar().addPermanentWidget(self.readout, 1)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(320)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.statusBar().addPermanentWidget(self.progress)

    def _build_controls(self) -> None:
        panel = QWidget()
        layout = QVBoxLayout(panel)

        contrast = QGroupBox(text.PANEL_CONTRAST)
        form = QFormLayout(contrast)
        self.window_spin = QDoubleSpinBox()
        self.level_spin = QDoubleSpinBox()
        for spin in (self.window_spin, self.level_spin):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(2)
            spin.setKeyboardTracking(False)
            spin.setToolTip(text.TIP_WL_DRAG)
        self.window_spin.setMinimum(1e-3)
        self.window_spin.valueChanged.connect(self._on_wl_fields)
        self.level_spin.valueChanged.connect(self._on_wl_fields)
        form.addRow(text.LBL_WINDOW, self.window_spin)
        form.addRow(text.LBL_LEVEL, self.level_spin)
        buttons = QHBoxLayout()
        self.auto_button = QPushButton(text.BTN_AUTO)
        self.auto_button.setToolTip(text.TIP_AUTO)
        self.auto_button.clicked.connect(self.state.reset_window)
        self.reset_button = QPushButton(text.BTN_RESET)
        self.reset_button.clicked.connect(self.reset_view)
        buttons.addWidget(self.auto_button)
        buttons.addWidget(self.reset_button)
        form.addRow(buttons)
        layout.addWidget(contrast)

        overlays = QGroupBox(text.PANEL_OVERLAYS)
        form = QFormLayout(overlays)
        self.base_combo = QComboBox()
        self.base_combo.addItems([text.BASE_SCAN, text.BASE_RESTORED, text.BASE_DIFFERENCE])
        self.base_combo.currentIndexChanged.connect(
            lambda i: self.state.set_base_layer(("scan", "restored", "difference")[i])
        )
        form.addRow(text.LBL_BASE, self.base_combo)
        self.overlay_checks: dict[str, QCheckBox] = {}
        for name, label in (("heat", text.CHK_HEAT), ("mask", text.CHK_MASK), ("spread", text.CHK_SPREAD)):
            check = QCheckBox(label)
            check.toggled.connect(lambda on, n=name: self.state.set_overlay_visible(n, on))
            self.overlay_checks[name] = check
            form.addRow(check)
        self.fill_check = QCheckBox(text.CHK_FILL)
        self.fill_check.toggled.connect(self.state.set_mask_fill)
        form.addRow(self.fill_check)
        self.side_check = QCheckBox(text.CHK_SIDE_BY_SIDE)
        self.side_check.toggled.connect(self.state.set_side_by_side)
        form.addRow(self.side_check)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.valueChanged.connect(
            lambda v: self.state.set_threshold(v / SLIDER_STEPS * self.state.display_max)
        )
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(4)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.valueChanged.connect(self.state.set_threshold)
        row = QHBoxLayout()
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        form.addRow(text.LBL_THRESHOLD, row)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.valueChanged.connect(lambda v: self.state.set_opacity(v / 100.0))
        form.addRow(text.LBL_OPACITY, self.opacity_slider)
        layout.addWidget(overlays)

        analysis = QGroupBox(text.PANEL_ANALYSIS)
        form = QFormLayout(analysis)
        self.model_label = QLabel(text.MODEL_NONE)
        self.model_label.setWordWrap(True)
        form.addRow(text.PANEL_MODEL, self.model_label)
        self.brain_mask_label = QLabel(text.BRAIN_MASK_NONE)
        self.brain_mask_label.setWordWrap(True)
        self.brain_mask_label.setToolTip(text.TIP_BRAIN_MASK)
        form.addRow(text.LBL_BRAIN_MASK, self.brain_mask_label)
        self.device_combo = QComboBox()
        # The full list (with CUDA) comes with the model, loaded in the background: listing devices imports torch.
        self.device_combo.addItems(["auto", "cpu"])
        form.addRow(text.LBL_DEVICE, self.device_combo)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(SAMPLERS)
        form.addRow(text.LBL_SAMPLER, self.sampler_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1000)
        self.steps_spin.setSpecialValueText(text.STEPS_DEFAULT)
        form.addRow(text.LBL_STEPS, self.steps_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        form.addRow(text.LBL_SEED, self.seed_spin)
        for widget in (self.device_combo, self.sampler_combo):
            widget.currentIndexChanged.connect(self._on_settings_changed)
        for widget in (self.steps_spin, self.seed_spin):
            widget.valueChanged.connect(self._on_settings_changed)
        self.analyse_slice_button = QPushButton(text.ACT_ANALYSE_SLICE.replace("&", ""))
        self.analyse_slice_button.clicked.connect(self.analyse_slice)
        self.analyse_volume_button = QPushButton(text.ACT_ANALYSE_VOLUME.replace("&", ""))
        self.analyse_volume_button.clicked.connect(self.analyse_volume)
        self.cancel_button = QPushButton(text.ACT_CANCEL.replace("&", ""))
        self.cancel_button.clicked.connect(self.cancel_analysis)
        buttons = QHBoxLayout()
        buttons.addWidget(self.analyse_slice_button)
        buttons.addWidget(self.analyse_volume_button)
        form.addRow(buttons)
        form.addRow(self.cancel_button)
        layout.addWidget(analysis)
        layout.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        self.controls_dock = QDockWidget(text.PANEL_ANALYSIS, self)
        self.controls_dock.setObjectName("controls")
        self.controls_dock.setWidget(scroll)
        self.controls_dock.setMinimumWidth(300)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.controls_dock)

    def _build_score_dock(self) -> None:
        self.score_plot = SliceScorePlot()
        self.score_plot.slice_clicked.connect(self._on_score_clicked)
        self.score_dock = QDockWidget(text.SLICE_PLOT_TITLE, self)
        self.score_dock.setObjectName("slice_scores")
        self.score_dock.setWidget(self.score_plot)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.score_dock)

    def _action(self, label: str, slot: Any, shortcut: Any = None) -> QAction:
        action = QAction(label, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu(text.MENU_FILE)
        menu.addAction(self._action(text.ACT_OPEN, self._open_dialog, QKeySequence.StandardKey.Open))
        menu.addAction(self._action(text.ACT_OPEN_DICOM, self._open_dicom_dialog))
        menu.addAction(self._action(text.ACT_OPEN_BRAIN_MASK, self._open_brain_mask_dialog))
        menu.addAction(self._action(text.ACT_CLEAR_BRAIN_MASK, self.clear_brain_mask))
        self.recent_menu = menu.addMenu(text.MENU_RECENT)
        menu.addSeparator()
        menu.addAction(self._action(text.ACT_CHOOSE_MODEL, self._choose_model_dialog))
        menu.addSeparator()
        menu.addAction(self._action(text.ACT_EXPORT, lambda: self.export_results(None), "Ctrl+E"))
        menu.addAction(self._action(text.ACT_EXPORT_TO, self._export_dialog, "Ctrl+Shift+E"))
        menu.addAction(self._action(text.ACT_SCREENSHOT, self._screenshot_dialog, "Ctrl+Shift+S"))
        menu.addSeparator()
        menu.addAction(self._action(text.ACT_QUIT, self.close, QKeySequence.StandardKey.Quit))
        menu = self.menuBar().addMenu(text.MENU_VIEW)
        menu.addAction(self._action(text.ACT_RESET_VIEW, self.reset_view))
        menu.addAction(self.controls_dock.toggleViewAction())
        menu.addAction(self.score_dock.toggleViewAction())
        menu = self.menuBar().addMenu(text.MENU_ANALYSIS)
        self.analyse_slice_action = self._action(text.ACT_ANALYSE_SLICE, self.analyse_slice, "Ctrl+Return")
        self.analyse_volume_action = self._action(text.ACT_ANALYSE_VOLUME, self.analyse_volume, "Ctrl+Shift+Return")
        self.cancel_action = self._action(text.ACT_CANCEL, self.cancel_analysis, "Esc")
        for action in (self.analyse_slice_action, self.analyse_volume_action, self.cancel_action):
            menu.addAction(action)
        menu = self.menuBar().addMenu(text.MENU_HELP)
        menu.addAction(self._action(text.ACT_SHORTCUTS, self.show_shortcuts, QKeySequence.StandardKey.HelpContents))
        menu.addAction(self._action(text.ACT_ABOUT, self._show_about))
        self._rebuild_recent_menu()

    def _connect_state(self) -> None:
        s = self.state
        s.volume_changed.connect(self._on_volume_changed)
        s.plane_changed.connect(self._on_geometry_changed)
        s.radiological_changed.connect(self._on_geometry_changed)
        s.cursor_changed.connect(self._on_cursor_changed)
        s.window_changed.connect(self._on_window_changed)
        s.threshold_changed.connect(self._on_threshold_changed)
        s.display_max_changed.connect(self._on_display_max_changed)
        s.opacity_changed.connect(lambda v: self._set_quietly(self.opacity_slider, round(v * 100)))
        s.overlay_visible_changed.connect(lambda n, on: self._set_quietly(self.overlay_checks[n], on))
        s.mask_fill_changed.connect(lambda on: self._set_quietly(self.fill_check, on))
        s.side_by_side_changed.connect(lambda on: self._set_quietly(self.side_check, on))
        s.base_layer_changed.connect(
            lambda n: self._set_quietly(self.base_combo, ("scan", "restored", "difference").index(n))
        )
        s.result_changed.connect(self._on_result_changed)

    @staticmethod
    def _set_quietly(widget: Any, value: Any) -> None:
        widget.blockSignals(True)
        try:
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, QComboBox):
                widget.setCurrentIndex(int(value))
            else:
                widget.setValue(value)
        finally:
            widget.blockSignals(False)

    # ================================================================================================ settings
    def _restore_settings(self) -> None:
        st = self.settings
        geometry = st.value("window/geometry")
        if isinstance(geometry, QByteArray | bytes):
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
        layout = st.value("window/state")
        if isinstance(layout, QByteArray | bytes):
            self.restoreState(layout)
        self.state.set_radiological(_setting(st, "view/radiological", True))
        self._set_quietly(self.radiological_check, self.state.radiological)
        plane = str(_setting(st, "view/plane", "axial"))
        self.state.set_plane(plane if plane in slicing.PLANES else "axial")
        self.plane_buttons.button(slicing.PLANES.index(self.state.plane)).setChecked(True)
        self.state.set_opacity(_setting(st, "overlay/opacity", 0.6))
        for name, default in (("heat", True), ("mask", True), ("spread", False)):
            self.state.set_overlay_visible(name, _setting(st, f"overlay/{name}", default))
        self.state.set_mask_fill(_setting(st, "overlay/fill", False))
        self._set_quietly(self.opacity_slider, round(self.state.opacity * 100))
        for name, check in self.overlay_checks.items():
            self._set_quietly(check, self.state.overlay_visible(name))
        self._set_quietly(self.fill_check, self.state.mask_fill)
        device = str(_setting(st, "analysis/device", "auto"))
        if self.device_combo.findText(device) < 0:
            self.device_combo.addItem(device)  # checked against the real list once the model has loaded
        self.device_combo.setCurrentText(device)
        sampler = str(_setting(st, "analysis/sampler", "ddim"))
        if sampler in SAMPLERS:
            self.sampler_combo.setCurrentText(sampler)
        self.steps_spin.setValue(_setting(st, "analysis/steps", 0))
        self.seed_spin.setValue(_setting(st, "analysis/seed", 0))

    def save_settings(self) -> None:
        """Write preferences and window layout to the settings store."""
        st = self.settings
        st.setValue("window/geometry", self.saveGeometry())
        st.setValue("window/state", self.saveState())
        st.setValue("view/radiological", self.state.radiological)
        st.setValue("view/plane", self.state.plane)
        st.setValue("overlay/opacity", self.state.opacity)
        for name in ("heat", "mask", "spread"):
            st.setValue(f"overlay/{name}", self.state.overlay_visible(name))
        st.setValue("overlay/fill", self.state.mask_fill)
        st.setValue("analysis/device", self.device_combo.currentText())
        st.setValue("analysis/sampler", self.sampler_combo.currentText())
        st.setValue("analysis/steps", self.steps_spin.value())
        st.setValue("analysis/seed", self.seed_spin.value())
        st.sync()

    def recent_files(self) -> list[str]:
        return _setting(self.settings, "recent/files", [])

    def _add_recent(self, path: Path) -> None:
        entry = str(Path(path).resolve())
        files = [f for f in self.recent_files() if f != entry]
        self.settings.setValue("recent/files", [entry, *files][:MAX_RECENT])
        self.settings.setValue("recent/folder", str(Path(entry).parent))
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for f in files:
            action = self.recent_menu.addAction(f)
            action.triggered.connect(lambda _=False, p=f: self.open_scan(p))
        self.recent_menu.addSeparator()
        clear = self.recent_menu.addAction(text.ACT_CLEAR_RECENT)
        clear.triggered.connect(self._clear_recent)
        self.recent_menu.setEnabled(bool(files))

    def _clear_recent(self) -> None:
        self.settings.setValue("recent/files", [])
        self._rebuild_recent_menu()

    # ================================================================================================ errors
    def show_error(self, title: str, message: str) -> None:
        """Tell the user about a problem in one line (a non-modal dialog; headless: kept in :attr:`errors`)."""
        line = " ".join(str(message).split())
        logger.info("%s: %s", title, line)  # the dialog (or the CLI's stderr line) is the user's report
        self.errors.append(line)
        if not self.interactive:
            return
        if self.error_dialog is not None:
            self.error_dialog.close()
        box = QMessageBox(QMessageBox.Icon.Critical, title, line, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.error_dialog = box
        box.show()

    def show_unexpected(self, error: BaseException) -> None:
        """Report an exception that is not an engine error (the traceback goes to the log)."""
        self.show_error(text.ERR_UNEXPECTED,
                        text.ERR_UNEXPECTED_LINE.format(kind=type(error).__name__, message=error))

    # ================================================================================================ scans
    def _open_dialog(self) -> None:
        folder = _setting(self.settings, "recent/folder", "")
        path, _ = QFileDialog.getOpenFileName(self, text.OPEN_TITLE, folder, text.OPEN_FILTER)
        if path:
            self.open_scan(path)

    def _open_dicom_dialog(self) -> None:
        folder = _setting(self.settings, "recent/folder", "")
        path = QFileDialog.getExistingDirectory(self, text.OPEN_DICOM_TITLE, folder)
        if path:
            self.open_scan(path)

    def open_scan(self, path: str | Path) -> bool:
        """Load a scan (file or DICOM folder) and show it; on failure show the reason and keep the current scan."""
        start = time.perf_counter()
        path = Path(path)
        volume = self._read(text.ERR_OPEN, path, self.backend.load_volume)
        if volume is None:
            return False
        if np.ndim(volume.data) != 3:
            self.show_error(text.ERR_OPEN, f"{path}: expected a 3-D volume, got shape {np.shape(volume.data)}")
            return False
        self._scan_key = _file_key(path)
        self._analysis_axis = self._axial_axis(volume)
        self._set_brain_mask(None, None, None)  # a mask belongs to the scan it was opened for
        self.state.set_volume(volume)
        self._add_recent(path)
        self.setWindowTitle(text.WINDOW_TITLE_WITH_SCAN.format(name=path.name))
        zooms = "x".join(f"{z:.3g}" for z in slicing.voxel_sizes(volume.affine))
        self.statusBar().showMessage(text.STATUS_LOADED.format(
            name=path.name, shape="x".join(str(n) for n in np.shape(volume.data)), zooms=zooms,
            axcodes="".join(slicing.axcodes(volume.affine))))
        self._update_warnings()
        self._show_cached_result()
        self.view.setFocus()
        self.first_image_s = time.perf_counter() - start
        logger.info("opened %s in %.2f s", path, self.first_image_s)
        return True

    def _read(self, title: str, path: Path, load: Any) -> Any:
        """``load(path)``, or None after telling the user why it failed (never an exception out of a bad file)."""
        try:
            return load(path)
        except self.backend.EngineError as error:
            self.show_error(title, str(error))
        except Exception as error:  # never let a bad file take the viewer down
            logger.exception("unexpected error reading %s", path)
            self.show_error(title, f"{path}: {type(error).__name__}: {error}")
        return None

    def _open_brain_mask_dialog(self) -> None:
        volume = self.state.volume
        folder = str(Path(volume.path).parent) if volume is not None and volume.path is not None else ""
        path, _ = QFileDialog.getOpenFileName(self, text.OPEN_BRAIN_MASK_TITLE, folder, text.OPEN_FILTER)
        if path:
            self.open_brain_mask(path)

    def open_brain_mask(self, path: str | Path) -> bool:
        """Use a brain mask (on the open scan's grid) for the analyses; on failure say why and keep the current one.

        Results already computed without the mask (or with another one) stay cached under their own key.
        """
        volume = self.state.volume
        if volume is None:
            self.show_error(text.ERR_BRAIN_MASK, text.ERR_NO_SCAN)
            return False
        path = Path(path)
        mask = self._read(text.ERR_BRAIN_MASK, path, lambda p: np.asarray(self.backend.load_mask(p, volume), bool))
        if mask is None:
            return False
        if not mask.any():
            self.show_error(text.ERR_BRAIN_MASK, text.ERR_BRAIN_MASK_EMPTY.format(path=path))
            return False
        self._set_brain_mask(mask, path, _file_key(path))
        self._show_cached_result()
        self._update_warnings()
        voxels = int(mask.sum())
        litres = voxels * float(np.prod(slicing.voxel_sizes(volume.affine))) / 1e6
        self.statusBar().showMessage(text.STATUS_BRAIN_MASK.format(name=path.name, voxels=voxels, litres=litres))
        return True

    def clear_brain_mask(self) -> None:
        """Analyse without a brain mask again (the scan is taken as skull-stripped)."""
        if self.brain_mask is None:
            return
        self._set_brain_mask(None, None, None)
        self._show_cached_result()
        self._update_warnings()
        self.statusBar().showMessage(text.STATUS_BRAIN_MASK_CLEARED)

    def _set_brain_mask(self, mask: np.ndarray | None, path: Path | None, key: Any) -> None:
        """Set the mask, its path and cache key and the panel label (callers refresh the result and warnings)."""
        self.brain_mask, self.brain_mask_path, self._brain_mask_key = mask, path, key
        self.brain_mask_label.setText(path.name if path is not None else text.BRAIN_MASK_NONE)
        self.brain_mask_label.setToolTip(str(path) if path is not None else text.TIP_BRAIN_MASK)

    def _axial_axis(self, volume: Any) -> int:
        try:
            return int(self.backend.axial_axis(volume.affine))
        except (AttributeError, ImportError):
            return slicing.plane_layout(volume.affine, np.shape(volume.data), "axial").slice_axis

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        for url in event.mimeData().urls():
            if url.isLocalFile():
                event.acceptProposedAction()
                self.open_scan(url.toLocalFile())
                return

    # ================================================================================================ model
    def _choose_model_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, text.MODEL_DIR_TITLE, str(self._model_path or ""))
        if path:
            self.load_model(path, explicit=True)

    def load_model(self, path: str | Path | None = None, *, explicit: bool = False) -> None:
        """Load a model folder in the background (default: the bundled model)."""
        if path is None:
            try:
                path = self.backend.default_model_path()
            except Exception as error:  # the engine part that knows the default may be missing
                self._set_no_model(str(error), show=explicit)
                return
        self._model_path = Path(path)
        if not self._model_path.exists():
            self._set_no_model(f"{self._model_path}: model folder not found", show=explicit)
            return
        device = self.device_combo.currentText() or "auto"
        if self.runner.busy:
            self._pending.insert(0, ("model", explicit))
            return
        model_path = self._model_path
        self.model_label.setText(text.STATUS_MODEL_LOADING)
        self.statusBar().showMessage(text.STATUS_MODEL_LOADING)
        backend = self.backend

        def load(_progress: Any, _cancel: Any) -> Any:
            try:
                devices = list(backend.available_devices())
            except Exception as error:  # an engine without the listing still works on the CPU
                logger.warning("cannot list devices: %s", error)
                devices = ["auto", "cpu"]
            if device not in devices:
                raise backend.ModelLoadError(f"device {device!r} is not available here (have {', '.join(devices)})")
            return backend.load_ensemble(model_path, device=device), devices

        self.runner.submit("model", load, context={"explicit": explicit, "device": device})

    def _set_devices(self, devices: list[str]) -> None:
        current = self.device_combo.currentText()
        self.device_combo.blockSignals(True)
        self.device_combo.clear()
        self.device_combo.addItems(devices)
        self.device_combo.setCurrentText(current if current in devices else devices[0])
        self.device_combo.blockSignals(False)

    def _set_no_model(self, reason: str, *, show: bool) -> None:
        self.model = None
        self.model_error = reason
        self._update_model_label()
        self.statusBar().showMessage(text.STATUS_NO_MODEL.format(reason=reason))
        if show:
            self.show_error(text.ERR_MODEL, reason)

    def _update_model_label(self) -> None:
        if self.model is None:
            self.model_label.setText(text.MODEL_NONE if self.model_error is None else
                                     text.STATUS_NO_MODEL.format(reason=self.model_error))
            return
        info = self.model.info
        self.model_label.setText(text.MODEL_SUMMARY.format(
            name=info.name, version=info.version, modality=info.modality.upper(), members=info.members,
            device=info.device))
        self.model_label.setToolTip(str(info.path))

    def _apply_calibration(self) -> None:
        calibration = getattr(self.model.info, "calibration", None) if self.model is not None else None
        if calibration is not None:
            self.state.set_display_max(max(float(calibration.display_max), 1e-6))
            self.state.set_threshold(float(calibration.threshold))
            units = calibration.units
            default = f"{calibration.threshold:.4g}"
        else:
            units, default = "1 - SSIM", "none (uncalibrated model)"
        self._on_display_max_changed(self.state.display_max)  # sync the widgets even if nothing changed
        tip = text.TIP_THRESHOLD.format(units=units, default=default)
        self.threshold_slider.setToolTip(tip)
        self.threshold_spin.setToolTip(tip)

    # ================================================================================================ analysis
    def analysis_settings(self) -> Any:
        """The ``AnalysisSettings`` chosen in the panel."""
        steps = self.steps_spin.value()
        return self.backend.AnalysisSettings(
            sampler=self.sampler_combo.currentText(), steps=steps if steps > 0 else None,
            seed=self.seed_spin.value(), device=self.device_combo.currentText() or "auto")

    def _result_key(self) -> Any:
        if self.model is None or self._scan_key is None:
            return None
        s = self.analysis_settings()
        return (self._scan_key, self._brain_mask_key, self.model.info.model_id, s.sampler, s.steps, s.seed, s.device)

    def _on_settings_changed(self, *_: Any) -> None:
        self._show_cached_result()

    def _show_cached_result(self) -> None:
        key = self._result_key()
        cached = self.cache.get(key) if key is not None else None
        if cached is not self.state.result and self.state.volume is not None:
            self.state.set_result(cached)

    def analyse_slice(self) -> None:
        """Analyse the axial slice under the cursor (instant if already analysed with these settings)."""
        self._request_analysis("slice")

    def analyse_volume(self) -> None:
        """Analyse every slice not yet analysed with these settings."""
        self._request_analysis("volume")

    def _request_analysis(self, mode: str) -> None:
        if self.state.volume is None:
            self.show_error(text.ERR_ANALYSIS, text.ERR_NO_SCAN)
            return
        if self.runner.busy:
            if self.runner.current is not None and self.runner.current.kind == "model":
                self._pending.append(("analysis", mode))
            else:
                self.statusBar().showMessage(text.STATUS_BUSY)
            return
        wanted_device = self.device_combo.currentText() or "auto"
        if self.model is not None and wanted_device != "auto" and self.model.info.device != wanted_device:
            self._pending.append(("analysis", mode))
            self.load_model(self._model_path, explicit=True)
            return
        if self.model is None:
            self.show_error(text.ERR_ANALYSIS, text.ERR_NO_MODEL.format(reason=self.model_error or "none chosen"))
            self.analysis_done.emit()
            return
        axis = self._analysis_axis if self._analysis_axis is not None else 2
        n = int(np.shape(self.state.volume.data)[axis])
        wanted = [int(self.state.cursor[axis])] if mode == "slice" else list(range(n))
        key = self._result_key()
        missing = self.cache.missing(key, wanted, count_interpolated=mode == "volume")
        if not missing:
            self._show_cached_result()
            self.statusBar().showMessage(text.STATUS_CACHED)
            self.analysis_done.emit()
            return
        volume, model, settings, brain_mask = self.state.volume, self.model, self.analysis_settings(), self.brain_mask
        slices = None if len(missing) == n else missing

        def run(on_progress: Any, cancel: Any) -> Any:
            return model.analyse(volume, settings=settings, slices=slices, brain_mask=brain_mask,
                                 on_progress=on_progress, cancel=cancel)

        self.progress.setRange(0, len(missing))
        self.progress.setValue(0)
        self.progress.setFormat(text.PROGRESS_FORMAT.format(done=0, total=len(missing)))
        self.progress.show()
        self.statusBar().showMessage(text.STATUS_ANALYSING.format(count=len(missing)))
        self.runner.submit("analysis", run, context={"key": key, "count": len(missing), "volume": volume})

    def cancel_analysis(self) -> None:
        """Stop the running analysis at the engine's next step."""
        self._pending = [p for p in self._pending if p[0] != "analysis"]
        if self.runner.busy and self.runner.current is not None and self.runner.current.kind == "analysis":
            self.runner.cancel()

    def is_idle(self) -> bool:
        """No background job running or queued."""
        return not self.runner.busy and not self._pending

    def wait_idle(self, timeout_s: float = 600.0) -> bool:
        """Process events until no background job runs or waits (for headless use); True if idle in time."""
        deadline = time.monotonic() + timeout_s
        loop = QEventLoop()
        while not self.is_idle() and time.monotonic() < deadline:
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        return self.is_idle()

    def _on_job_progress(self, job: Job, progress: Any) -> None:
        if job.kind != "analysis":
            return
        self.progress.setRange(0, max(1, int(progress.total)))
        self.progress.setValue(int(progress.done))
        eta = progress.eta_s
        if eta is None:
            self.progress.setFormat(text.PROGRESS_FORMAT.format(done=progress.done, total=progress.total))
        else:
            self.progress.setFormat(text.PROGRESS_ETA.format(done=progress.done, total=progress.total,
                                                             eta=_format_seconds(eta)))

    def _on_job_finished(self, job: Job, result: Any, seconds: float) -> None:
        if job.kind == "model":
            self.model, devices = result
            self.model_error = None
            self._set_devices(devices)
            self._update_model_label()
            self._apply_calibration()
            self.statusBar().showMessage(self.model_label.text().replace("\n", ", "))
            self._update_warnings()
            self._show_cached_result()
            self.model_ready.emit()
        else:
            key = job.context["key"]
            merged = self.cache.add(key, result)
            if key == self._result_key() and job.context["volume"] is self.state.volume:
                self.state.set_result(merged)
            self.statusBar().showMessage(text.STATUS_DONE.format(count=job.context["count"], seconds=seconds))
            self._update_warnings()
        self._after_job(job)

    def _on_job_failed(self, job: Job, error: Any) -> None:
        if job.kind == "model":
            wanted_by_user = bool(job.context["explicit"]) or any(p[0] == "analysis" for p in self._pending)
            self._pending = [p for p in self._pending if p[0] != "analysis"]
            self._set_no_model(str(error), show=wanted_by_user)
        elif isinstance(error, self.backend.EngineError):
            self.show_error(text.ERR_ANALYSIS, str(error))
        else:
            self.show_unexpected(error)
        self._after_job(job)

    def _on_job_cancelled(self, job: Job) -> None:
        self.statusBar().showMessage(text.STATUS_CANCELLED)
        self._after_job(job)

    def _after_job(self, job: Job) -> None:
        if job.kind == "analysis":
            self.progress.hide()
        if self._closing:
            return
        if self._pending:
            kind, arg = self._pending.pop(0)
            if kind == "model":
                self.load_model(self._model_path, explicit=bool(arg))
            else:
                self._request_analysis(arg)
            if self.runner.busy:
                return
        if job.kind == "analysis" or not self._pending:
            self.analysis_done.emit()

    def _on_busy_changed(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        self.cancel_action.setEnabled(busy)
        for widget in (self.device_combo, self.sampler_combo, self.steps_spin, self.seed_spin):
            widget.setEnabled(not busy)

    # ================================================================================================ export
    def _export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, text.EXPORT_DIR_TITLE,
                                                  _setting(self.settings, "recent/export_folder", ""))
        if folder:
            self.settings.setValue("recent/export_folder", folder)
            self.export_results(folder)

    def export_results(self, folder: str | Path | None) -> dict[str, Path] | None:
        """Write mask, map, restored volume, spread and sidecar (BIDS-like names) and verify the mask's grid.

        Args:
            folder: output folder; None writes beside the scan.

        Returns:
            The written paths, or None after showing why nothing (or something wrong) was written.
        """
        volume, result = self.state.volume, self.state.result
        if volume is None or result is None:
            self.show_error(text.ERR_EXPORT, text.ERR_NO_RESULT if volume is not None else text.ERR_NO_SCAN)
            return None
        out_dir = Path(folder) if folder is not None else (Path(volume.path).parent if volume.path else Path.cwd())
        try:
            planned = self.backend.output_paths(volume, out_dir)
            existing = [p for p in planned.values() if Path(p).exists()]
            if volume.path is not None and any(Path(p).resolve() == Path(volume.path).resolve()
                                               for p in planned.values()):
                self.show_error(text.ERR_EXPORT, text.ERR_OVERWRITE_SCAN.format(path=volume.path))
                return None
            if existing and self.interactive:
                answer = QMessageBox.question(self, text.ERR_TITLE, text.ASK_OVERWRITE.format(
                    count=len(existing), folder=out_dir))
                if answer != QMessageBox.StandardButton.Yes:
                    return None
            written = self.backend.write_outputs(volume, result, out_dir, threshold=self.state.threshold, extra={
                "BrainMask": str(self.brain_mask_path) if self.brain_mask_path is not None else None})
        except self.backend.EngineError as error:
            self.show_error(text.ERR_EXPORT, str(error))
            return None
        except OSError as error:
            self.show_error(text.ERR_EXPORT, f"{out_dir}: {error.strerror or error}")
            return None
        problem = verify_on_grid(written.get("mask"), volume)
        if problem is not None:
            self.show_error(text.ERR_EXPORT, problem)
            return None
        message = text.STATUS_EXPORTED.format(count=len(written), folder=out_dir)
        analysed = np.asarray(result.analysed, dtype=bool)
        if not analysed.all():
            message += "  " + text.PARTIAL_EXPORT.format(done=int(analysed.sum()), total=analysed.size)
        self.statusBar().showMessage(message)
        return written

    def _screenshot_dialog(self) -> None:
        volume = self.state.volume
        default = ""
        if volume is not None and volume.path is not None:
            default = str(Path(volume.path).parent / (_stem(Path(volume.path)) + "_viewer.png"))
        path, _ = QFileDialog.getSaveFileName(self, text.SCREENSHOT_TITLE, default, text.SCREENSHOT_FILTER)
        if path:
            self.save_screenshot(path)

    def save_screenshot(self, path: str | Path) -> Path | None:
        """Save the view (image, overlays, letters, colour bar) as a PNG at the screen's physical resolution."""
        path = Path(path)
        volume = self.state.volume
        if volume is not None and volume.path is not None and path.resolve() == Path(volume.path).resolve():
            self.show_error(text.ERR_EXPORT, text.ERR_OVERWRITE_SCAN.format(path=path))
            return None
        image = self.view_panel.grab().toImage()
        if not image.save(str(path), "PNG"):
            self.show_error(text.ERR_EXPORT, f"{path}: cannot write the PNG file")
            return None
        self.statusBar().showMessage(text.STATUS_SCREENSHOT.format(path=path))
        return path

    # ================================================================================================ state -> widgets
    def _on_volume_changed(self) -> None:
        self._on_geometry_changed()
        self._on_window_changed(*self.state.window)

    def _on_geometry_changed(self, *_: Any) -> None:
        self._set_quietly(self.radiological_check, self.state.radiological)
        button = self.plane_buttons.button(slicing.PLANES.index(self.state.plane))
        button.setChecked(True)
        layout = self.state.layout()
        if layout is None:
            return
        self.slice_slider.blockSignals(True)
        self.slice_slider.setRange(0, layout.n_slices - 1)
        self.slice_slider.setInvertedAppearance(layout.step_sign < 0)
        self.slice_slider.setInvertedControls(layout.step_sign < 0)
        self.slice_slider.setValue(self.state.slice_index)
        self.slice_slider.blockSignals(False)

    def _on_cursor_changed(self, *_: Any) -> None:
        self._set_quietly(self.slice_slider, self.state.slice_index)
        result = self.state.result
        self.score_plot.set_current(self.state.cursor[result.slice_axis] if result is not None else
                                    (self.state.cursor[self._analysis_axis] if self._analysis_axis is not None
                                     else None))

    def _on_window_changed(self, lo: float, hi: float) -> None:
        self._set_quietly(self.window_spin, hi - lo)
        self._set_quietly(self.level_spin, (hi + lo) / 2)
        step = max((hi - lo) / 100, 1e-3)
        self.window_spin.setSingleStep(step)
        self.level_spin.setSingleStep(step)

    def _on_wl_fields(self, *_: Any) -> None:
        self.state.set_window_level(self.window_spin.value(), self.level_spin.value())

    def _on_threshold_changed(self, value: float) -> None:
        top = self.state.display_max
        self._set_quietly(self.threshold_slider, round(value / top * SLIDER_STEPS) if top > 0 else 0)
        self._set_quietly(self.threshold_spin, value)

    def _on_display_max_changed(self, top: float) -> None:
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setRange(0.0, top)
        self.threshold_spin.setSingleStep(top / 100)
        self.threshold_spin.blockSignals(False)
        self._on_threshold_changed(self.state.threshold)

    def _on_result_changed(self) -> None:
        result = self.state.result
        volume = self.state.volume
        if result is None or volume is None:
            n = np.shape(volume.data)[self._analysis_axis] if volume is not None and self._analysis_axis is not None \
                else 0
            self.score_plot.set_scores(None, n)
        else:
            if self.model is None or getattr(self.model.info, "calibration", None) is None:
                self._calibrate_from_result(result)
            reference = None
            calibration = getattr(self.model.info, "calibration", None) if self.model is not None else None
            if calibration is not None:
                percentiles = calibration.slice_score_percentiles
                key = "99" if "99" in percentiles else (max(percentiles, key=float) if percentiles else None)
                reference = float(percentiles[key]) if key is not None else None
            self.score_plot.set_scores(result.slice_scores, len(result.slice_scores), reference)
        self._on_cursor_changed()
        self._update_warnings()
        has = result is not None
        for widget in (self.base_combo, self.side_check):
            widget.setEnabled(has)

    def _calibrate_from_result(self, result: Any) -> None:
        values = result.anomaly_map[result.anomaly_map > 0]
        if values.size:
            top = float(np.percentile(values, 99.9))
            if top > 0 and math.isfinite(top):
                self.state.set_display_max(top)

    def _update_warnings(self) -> None:
        warnings: list[str] = []
        volume = self.state.volume
        if volume is not None and self.model is not None:
            try:
                message = self.backend.modality_warning(volume, self.model.info.modality)
            except (AttributeError, ImportError) as error:
                logger.debug("modality check unavailable: %s", error)
                message = None
            if message:
                warnings.append(text.WARN_MODALITY.format(message=message))
        result = self.state.result
        if result is not None:
            warnings.extend(text.WARN_MODALITY.format(message=w) for w in result.warnings
                            if text.WARN_MODALITY.format(message=w) not in warnings)
        self._warnings = warnings
        self.banner.setText("\n".join(warnings))
        self.banner.setVisible(bool(warnings))

    @property
    def warnings(self) -> list[str]:
        """Warnings shown in the banner above the view."""
        return list(self._warnings)

    def _on_hovered(self, voxel: Any) -> None:
        volume = self.state.volume
        if voxel is None or volume is None:
            self.readout.setText("")
            return
        i, j, k = voxel
        x, y, z = slicing.voxel_to_ras(volume.affine, voxel)
        line = text.READOUT.format(i=i, j=j, k=k, x=x, y=y, z=z, value=float(volume.data[i, j, k]))
        result = self.state.result
        if result is not None and bool(covered(result)[voxel[result.slice_axis]]):
            line += text.READOUT_SCORE.format(score=float(result.anomaly_map[i, j, k]),
                                              spread=float(result.member_spread[i, j, k]))
        else:
            line += text.READOUT_NO_RESULT
        self.readout.setText(line)

    def _on_score_clicked(self, index: int) -> None:
        axis = self.state.result.slice_axis if self.state.result is not None else self._analysis_axis
        if axis is None or self.state.volume is None:
            return
        voxel = list(self.state.cursor)
        voxel[axis] = index
        for plane in slicing.PLANES:
            layout = self.state.layout(plane)
            if layout is not None and layout.slice_axis == axis:
                self.state.set_plane(plane)
                break
        self.state.set_cursor(tuple(voxel))

    # ================================================================================================ keys
    def handle_key(self, event: QKeyEvent) -> bool:
        """Viewer keys (slice stepping, planes, zoom, layer toggles); True if the key was used."""
        key = event.key()
        s = self.state
        if s.volume is None:
            return False
        steps = {Qt.Key.Key_Up: 1, Qt.Key.Key_Right: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_Left: -1,
                 Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10}
        if key in steps:
            s.step_slice(steps[key])
        elif key in (Qt.Key.Key_Home, Qt.Key.Key_End):
            layout = s.layout()
            low_end = 0 if layout.step_sign > 0 else layout.n_slices - 1
            s.set_slice_index(low_end if key == Qt.Key.Key_Home else layout.n_slices - 1 - low_end)
        elif key in (Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3):
            s.set_plane(slicing.PLANES[key - Qt.Key.Key_1])
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.view.zoom(1.25)
        elif key == Qt.Key.Key_Minus:
            self.view.zoom(0.8)
        elif key == Qt.Key.Key_0:
            self.view.reset_zoom()
        elif key == Qt.Key.Key_W:
            s.reset_window()
        elif key == Qt.Key.Key_R and s.result is not None:
            s.set_base_layer("scan" if s.base_layer == "restored" else "restored")
        elif key == Qt.Key.Key_D and s.result is not None:
            s.set_base_layer("scan" if s.base_layer == "difference" else "difference")
        elif key == Qt.Key.Key_H:
            s.set_overlay_visible("heat", not s.overlay_visible("heat"))
        elif key == Qt.Key.Key_M:
            s.set_overlay_visible("mask", not s.overlay_visible("mask"))
        elif key == Qt.Key.Key_N:
            s.set_radiological(not s.radiological)
        else:
            return False
        return True

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if not self.handle_key(event):
            super().keyPressEvent(event)

    def reset_view(self) -> None:
        """Auto contrast and fit the slice in the view."""
        self.state.reset_window()
        self.view.reset_zoom()

    def show_shortcuts(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, text.SHORTCUTS_TITLE, "", QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(text.SHORTCUTS_HTML)
        box.setWindowModality(Qt.WindowModality.NonModal)
        self.shortcuts_dialog = box
        box.show()

    def _show_about(self) -> None:
        version = getattr(self.backend, "__version__", "")
        QMessageBox.about(self, text.APP_NAME, text.ABOUT_TEXT.format(version=version))

    # ================================================================================================ closing
    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Save settings, cancel any analysis and stop the worker thread before closing."""
        self._closing = True
        self._pending.clear()
        try:
            self.save_settings()
        except Exception:  # settings trouble must not block closing
            logger.exception("could not save settings")
        self.runner.shutdown()
        super().closeEvent(event)


def _file_key(path: Path) -> tuple[Any, ...]:
    """Identity of a file's content for the result cache: resolved path, modification time and size."""
    try:
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:  # unreadable metadata: a key that matches nothing cached
        return (str(path), time.time())


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def verify_on_grid(mask_path: str | Path | None, volume: Any) -> str | None:
    """Reload an exported mask with nibabel and compare its grid with the scan's.

    Returns:
        None if shape and affine match (and the mask is uint8), else a one-line description of the problem.
    """
    if mask_path is None:
        return None
    mask_path = Path(mask_path)
    try:
        image = nib.load(str(mask_path))
        shape = tuple(image.shape)
        affine = np.asarray(image.affine)
        dtype = image.get_data_dtype()
    except Exception as error:  # any failure to read back is a failed export
        return text.ERR_VERIFY.format(path=mask_path, problem=f"cannot reload: {error}")
    expected = tuple(np.shape(volume.data))
    if shape != expected:
        return text.ERR_VERIFY.format(path=mask_path, problem=f"shape {shape} != scan {expected}")
    if not np.allclose(affine, volume.affine, atol=1e-3):
        return text.ERR_VERIFY.format(path=mask_path, problem="affine differs from the scan's")
    if dtype != np.uint8:
        return text.ERR_VERIFY.format(path=mask_path, problem=f"dtype {dtype}, expected uint8")
    return None

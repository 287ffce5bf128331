"""Overlay controls: base image, overlay layers, threshold and opacity (bound to ViewerState).

The threshold's tooltip states its units and calibrated default, which come from the analysis controller.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QSlider,
    QWidget,
)

from app import text
from app.controller import AnalysisController
from app.state import BASE_LAYERS, OVERLAYS, ViewerState
from app.views.binding import set_quietly

SLIDER_STEPS = 1000


class OverlayPanel(QGroupBox):
    """Which layers are drawn and how: base image, heat map, mask, spread, side-by-side, threshold, opacity."""

    def __init__(self, state: ViewerState, controller: AnalysisController, parent: QWidget | None = None) -> None:
        super().__init__(text.PANEL_OVERLAYS, parent)
        self.state = state
        self.controller = controller
        form = QFormLayout(self)
        self.base_combo = QComboBox()
        self.base_combo.addItems([text.BASE_LAYER_LABELS[name] for name in BASE_LAYERS])
        self.base_combo.currentIndexChanged.connect(lambda i: state.set_base_layer(BASE_LAYERS[i]))
        form.addRow(text.LBL_BASE, self.base_combo)
        self.overlay_checks: dict[str, QCheckBox] = {}
        for name in OVERLAYS:
            check = QCheckBox(text.OVERLAY_LABELS[name])
            check.toggled.connect(lambda on, n=name: state.set_overlay_visible(n, on))
            self.overlay_checks[name] = check
            form.addRow(check)
        self.fill_check = QCheckBox(text.CHK_FILL)
        self.fill_check.toggled.connect(state.set_mask_fill)
        form.addRow(self.fill_check)
        self.side_check = QCheckBox(text.CHK_SIDE_BY_SIDE)
        self.side_check.toggled.connect(state.set_side_by_side)
        form.addRow(self.side_check)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.valueChanged.connect(
            lambda v: state.set_threshold(v / SLIDER_STEPS * state.display_max))
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(4)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.valueChanged.connect(state.set_threshold)
        row = QHBoxLayout()
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        form.addRow(text.LBL_THRESHOLD, row)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.valueChanged.connect(lambda v: state.set_opacity(v / 100.0))
        form.addRow(text.LBL_OPACITY, self.opacity_slider)

        state.threshold_changed.connect(self._on_threshold_changed)
        state.display_max_changed.connect(self._on_display_max_changed)
        state.opacity_changed.connect(lambda v: set_quietly(self.opacity_slider, round(v * 100)))
        state.overlay_visible_changed.connect(lambda n, on: set_quietly(self.overlay_checks[n], on))
        state.mask_fill_changed.connect(lambda on: set_quietly(self.fill_check, on))
        state.side_by_side_changed.connect(lambda on: set_quietly(self.side_check, on))
        state.base_layer_changed.connect(lambda n: set_quietly(self.base_combo, BASE_LAYERS.index(n)))
        state.result_changed.connect(self._on_result_changed)
        controller.models.calibration_changed.connect(self._on_calibration_changed)
        self.sync()

    def sync(self) -> None:
        """Show every value of the state."""
        state = self.state
        set_quietly(self.opacity_slider, round(state.opacity * 100))
        for name, check in self.overlay_checks.items():
            set_quietly(check, state.overlay_visible(name))
        set_quietly(self.fill_check, state.mask_fill)
        set_quietly(self.side_check, state.side_by_side)
        set_quietly(self.base_combo, BASE_LAYERS.index(state.base_layer))
        self._on_display_max_changed(state.display_max)
        self._on_result_changed()
        self._on_calibration_changed()

    def _on_threshold_changed(self, value: float) -> None:
        top = self.state.display_max
        set_quietly(self.threshold_slider, round(value / top * SLIDER_STEPS) if top > 0 else 0)
        set_quietly(self.threshold_spin, value)

    def _on_display_max_changed(self, top: float) -> None:
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setRange(0.0, top)
        self.threshold_spin.setSingleStep(top / 100)
        self.threshold_spin.blockSignals(False)
        self._on_threshold_changed(self.state.threshold)

    def _on_result_changed(self, *_: Any) -> None:
        has = self.state.result is not None
        for widget in (self.base_combo, self.side_check):
            widget.setEnabled(has)

    def _on_calibration_changed(self) -> None:
        self._on_display_max_changed(self.state.display_max)  # sync the widgets even if nothing changed
        units, default = self.controller.models.threshold_help()
        tip = text.TIP_THRESHOLD.format(units=units, default=default)
        self.threshold_slider.setToolTip(tip)
        self.threshold_spin.setToolTip(tip)

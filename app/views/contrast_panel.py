"""Contrast controls: window and level fields, auto contrast, reset (bound to ViewerState)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton, QWidget

from app import text
from app.state import ViewerState
from app.views.binding import set_quietly


class ContrastPanel(QGroupBox):
    """Window width and level of the grey image; ``reset_view_requested`` when Reset is pressed."""

    reset_view_requested = Signal()

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(text.PANEL_CONTRAST, parent)
        self.state = state
        form = QFormLayout(self)
        self.window_spin = QDoubleSpinBox()
        self.level_spin = QDoubleSpinBox()
        for spin in (self.window_spin, self.level_spin):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(2)
            spin.setKeyboardTracking(False)
            spin.setToolTip(text.TIP_WL_DRAG)
            spin.valueChanged.connect(self._on_fields)
        self.window_spin.setMinimum(1e-3)
        form.addRow(text.LBL_WINDOW, self.window_spin)
        form.addRow(text.LBL_LEVEL, self.level_spin)
        buttons = QHBoxLayout()
        self.auto_button = QPushButton(text.BTN_AUTO)
        self.auto_button.setToolTip(text.TIP_AUTO)
        self.auto_button.clicked.connect(state.reset_window)
        self.reset_button = QPushButton(text.BTN_RESET)
        self.reset_button.clicked.connect(self.reset_view_requested)
        buttons.addWidget(self.auto_button)
        buttons.addWidget(self.reset_button)
        form.addRow(buttons)
        state.window_changed.connect(self._on_window_changed)
        self._on_window_changed(*state.window)

    def _on_fields(self, *_: Any) -> None:
        self.state.set_window_level(self.window_spin.value(), self.level_spin.value())

    def _on_window_changed(self, lo: float, hi: float) -> None:
        set_quietly(self.window_spin, hi - lo)
        set_quietly(self.level_spin, (hi + lo) / 2)
        step = max((hi - lo) / 100, 1e-3)
        self.window_spin.setSingleStep(step)
        self.level_spin.setSingleStep(step)

"""Where in the scan: the plane buttons with the radiological switch, and the slice slider (bound to ViewerState)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QCheckBox, QHBoxLayout, QLabel, QSlider, QToolButton, QWidget

from app import slicing, text
from app.state import ViewerState
from app.views.binding import set_quietly


class PlaneBar(QWidget):
    """Axial / coronal / sagittal buttons and the radiological-convention check box."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel(text.LBL_PLANE))
        self.plane_buttons = QButtonGroup(self)
        for i, plane in enumerate(slicing.PLANES):
            button = QToolButton()
            button.setText(text.PLANE_NAMES[plane])
            button.setCheckable(True)
            button.setToolTip(text.TIP_PLANE.format(plane=text.PLANE_NAMES[plane], key=i + 1))
            self.plane_buttons.addButton(button, i)
            layout.addWidget(button)
        self.plane_buttons.idClicked.connect(lambda i: state.set_plane(slicing.PLANES[i]))
        self.radiological_check = QCheckBox(text.CHK_RADIOLOGICAL)
        self.radiological_check.toggled.connect(state.set_radiological)
        layout.addSpacing(12)
        layout.addWidget(self.radiological_check)
        layout.addStretch(1)
        state.plane_changed.connect(self._sync)
        state.radiological_changed.connect(self._sync)
        self._sync()

    def _sync(self, *_: Any) -> None:
        set_quietly(self.radiological_check, self.state.radiological)
        self.plane_buttons.button(slicing.PLANES.index(self.state.plane)).setChecked(True)


class SliceSlider(QSlider):
    """Vertical slider over the slices of the current plane; up is superior, anterior or right."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)
        self.state = state
        self.setToolTip(text.LBL_SLICE)
        self.valueChanged.connect(state.set_slice_index)
        for signal in (state.volume_changed, state.plane_changed, state.radiological_changed):
            signal.connect(self._on_geometry_changed)
        state.cursor_changed.connect(lambda *_: set_quietly(self, self.state.slice_index))

    def _on_geometry_changed(self, *_: Any) -> None:
        layout = self.state.layout()
        if layout is None:
            return
        self.blockSignals(True)
        self.setRange(0, layout.n_slices - 1)
        self.setInvertedAppearance(layout.step_sign < 0)
        self.setInvertedControls(layout.step_sign < 0)
        self.setValue(self.state.slice_index)
        self.blockSignals(False)

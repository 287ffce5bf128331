"""The status-bar line under the mouse: voxel, RAS position, value, and the anomaly score where analysed."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from app import slicing, text
from app.results_cache import covered
from app.state import ViewerState


class Readout(QLabel):
    """Selectable one-line readout; call :meth:`show_voxel` with the hovered voxel (or None)."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def show_voxel(self, voxel: Any) -> None:
        volume = self.state.volume
        if voxel is None or volume is None:
            self.setText("")
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
        self.setText(line)

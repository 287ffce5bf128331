"""SliceScorePlot: the anomaly score of each analysed slice along the volume; click to go to a slice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal

from app import slicing, text


class SliceScorePlot(pg.PlotWidget):
    """Plots ``result.slice_scores`` against the slice index; marks the current slice.

    Emits ``slice_clicked(index)`` with the nearest slice index when the plot is clicked.
    """

    slice_clicked = Signal(int)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setBackground("#111111")
        self.setMinimumHeight(70)
        self.setToolTip(text.SLICE_PLOT_TITLE)  # a strip: the title lives in the tooltip, the plot keeps the height
        item = self.getPlotItem()
        item.setLabel("left", text.SLICE_PLOT_Y)
        item.getAxis("left").setWidth(48)
        item.getAxis("left").enableAutoSIPrefix(False)  # "(x0.001)" would not fit beside a strip
        item.layout.setContentsMargins(2, 4, 8, 2)
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        self.curve = pg.PlotDataItem(pen=pg.mkPen("#ff7a00", width=2), connect="finite")
        self.points = pg.ScatterPlotItem(size=5, brush=pg.mkBrush("#ffb060"), pen=None)
        self.current_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#ffd400", width=1.5))
        self.reference_line = pg.InfiniteLine(angle=0, movable=False,
                                              pen=pg.mkPen("#00ff88", width=1, style=Qt.PenStyle.DashLine))
        self.reference_line.setVisible(False)
        for thing in (self.curve, self.points, self.current_line, self.reference_line):
            item.addItem(thing)
        self._n_slices = 0
        self.scene().sigMouseClicked.connect(self._on_clicked)

    def set_scores(self, scores: np.ndarray | None, n_slices: int, reference: float | None = None) -> None:
        """Show the slice scores (NaN for slices not analysed) of a volume with ``n_slices`` slices."""
        self._n_slices = int(n_slices)
        if scores is None:
            self.curve.setData([], [])
            self.points.setData([], [])
        else:
            y = np.asarray(scores, dtype=np.float64)
            x = np.arange(y.size, dtype=np.float64)
            finite = np.isfinite(y)
            self.curve.setData(x, y)
            self.points.setData(x[finite], y[finite])
        self.reference_line.setVisible(reference is not None)
        if reference is not None:
            self.reference_line.setValue(reference)
        self.getPlotItem().setXRange(0, max(self._n_slices - 1, 1), padding=0.01)

    def set_current(self, index: int | None) -> None:
        """Mark slice ``index`` (None hides the marker)."""
        self.current_line.setVisible(index is not None)
        if index is not None:
            self.current_line.setValue(index)

    def _on_clicked(self, event: Any) -> None:
        if self._n_slices <= 0 or event.button() != Qt.MouseButton.LeftButton:
            return
        viewbox = self.getPlotItem().getViewBox()
        if not viewbox.sceneBoundingRect().contains(event.scenePos()):
            return
        x = viewbox.mapSceneToView(event.scenePos()).x()
        self.slice_clicked.emit(int(np.clip(round(x), 0, self._n_slices - 1)))


class ScoreStrip(SliceScorePlot):
    """The slice-score plot bound to the viewer: scores of the shown result, the current slice marked, and a click
    that moves the cursor to that axial slice."""

    def __init__(self, state: Any, controller: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.state = state
        self.controller = controller
        state.result_changed.connect(self._on_result_changed)
        state.cursor_changed.connect(self._on_cursor_changed)
        self.slice_clicked.connect(self._go_to_slice)

    def _axis(self) -> int | None:
        result = self.state.result
        return result.slice_axis if result is not None else self.controller.scan.analysis_axis

    def _on_result_changed(self) -> None:
        result, volume = self.state.result, self.state.volume
        if result is None or volume is None:
            axis = self.controller.scan.analysis_axis
            self.set_scores(None, np.shape(volume.data)[axis] if volume is not None and axis is not None else 0)
        else:
            reference = self.controller.models.reference_slice_score()
            self.set_scores(result.slice_scores, len(result.slice_scores), reference)
        self._on_cursor_changed()

    def _on_cursor_changed(self, *_: Any) -> None:
        axis = self._axis()
        self.set_current(self.state.cursor[axis] if axis is not None else None)

    def _go_to_slice(self, index: int) -> None:
        axis = self._axis()
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

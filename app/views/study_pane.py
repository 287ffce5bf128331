"""One more sequence of a study in a view of its own, linked to the main view (the grid layout).

A pane draws what :class:`app.state.ViewerState` holds for one sequence: its image with its own contrast, the
anomaly map, the mask contour and the reference outline over it, the shared cursor and the orientation letters.
Zoom and pan follow the main view (linked view boxes); a click moves the one cursor; the wheel steps the one slice.
It draws only; the state and the main view decide.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtWidgets import QWidget

from app import colormaps, slicing, text
from app.state import ViewerState
from app.views.slice_view import SliceView, SliceViewBox, _text_item
from engine import flagged

_LETTER_COLOUR = "#ffd400"


class StudyPane(pg.GraphicsLayoutWidget):
    """A linked view of one sequence (``name``: a key of ``state.sequences``, or "" for the analysed scan)."""

    def __init__(self, state: ViewerState, main: SliceView, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("k")
        self.state = state
        self.main = main
        self.name: str | None = None
        self._stack = slicing.SliceStack()  # its sequence's slices, cut once per plane
        self.viewbox = SliceViewBox()
        self.addItem(self.viewbox, row=0, col=0)
        # Zoom and pan follow the main view: the same centre and the same mm per screen pixel, whatever each pane's
        # shape (pyqtgraph's axis links line views up by their screen positions instead, which shifts a pane placed
        # beside or below the main view).
        main.viewbox.sigRangeChanged.connect(self._follow)
        self.viewbox.sigResized.connect(self._follow)
        self.base_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.base_item.setLookupTable(colormaps.grey_lut())
        self.heat_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.mask_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.reference_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.reference_item.setLookupTable(colormaps.mask_lut(False, colour=colormaps.REFERENCE_COLOUR))
        for z, item in enumerate((self.base_item, self.heat_item, self.mask_item, self.reference_item)):
            item.setZValue(z)
            self.viewbox.addItem(item)
        self.cursor_item = pg.ScatterPlotItem(size=14, symbol="+", pen=pg.mkPen(_LETTER_COLOUR, width=1.5), brush=None)
        self.cursor_item.setZValue(10)
        self.viewbox.addItem(self.cursor_item, ignoreBounds=True)
        self.title = _text_item("#9fd3ff", 11)
        self.title.setParentItem(self.viewbox)
        self.letters = {side: _text_item(_LETTER_COLOUR, 12, bold=True) for side in ("left", "right", "top", "bottom")}
        for item in self.letters.values():
            item.setParentItem(self.viewbox)
        self.viewbox.sigResized.connect(self._place_labels)
        self.viewbox.clicked.connect(self._on_clicked)
        self.viewbox.wheel_steps.connect(lambda steps: self.state.step_slice(steps))
        for signal in (state.cursor_changed, state.plane_changed, state.radiological_changed, state.result_changed,
                       state.study_changed, state.threshold_changed, state.display_max_changed,
                       state.overlay_visible_changed, state.window_changed, state.volume_changed):
            signal.connect(self.redraw)
        state.opacity_changed.connect(lambda value: self.heat_item.setOpacity(value))
        self.heat_item.setOpacity(state.opacity)

    def show_sequence(self, name: str | None) -> None:
        """Draw sequence ``name`` (None: nothing; the pane is hidden by its owner)."""
        self.name = name
        self.redraw()

    def redraw(self, *_: Any) -> None:
        state, layout = self.state, self.state.layout()
        if self.name is None or layout is None or state.volume is None or not self.isVisible():
            return
        image = state.sequences.get(self.name)
        data = state.volume.data if image is None else image.data
        index = state.slice_index
        self.base_item.setImage(self._stack.take(data, layout, index), autoLevels=False,
                                levels=state.window_of(self.name))
        # The overlays are the main view's, cut once: reuse its slices when it shows this one (it redraws first).
        main = self.main if self.main.shown_slice == (layout.plane, index) else None
        result = state.result
        if result is None:
            self.heat_item.clear()
            self.mask_item.clear()
        else:
            amap = main.heat_item.image if main is not None and main.heat_item.image is not None else \
                slicing.take_slice(result.anomaly_map, layout, index).astype(np.float32, copy=False)
            top = state.display_max
            self.heat_item.setLookupTable(colormaps.heat_lut(state.threshold, top))
            self.heat_item.setImage(amap, autoLevels=False, levels=(0.0, top))
            labels = main.mask_item.image if main is not None and main.mask_item.image is not None else \
                colormaps.mask_labels(flagged(amap, state.threshold) & (amap > 0))
            self.mask_item.setLookupTable(colormaps.mask_lut(state.mask_fill))
            self.mask_item.setImage(labels, autoLevels=False, levels=(0, colormaps.LUT_SIZE - 1))
        self.heat_item.setVisible(result is not None and state.overlay_visible("heat"))
        self.mask_item.setVisible(result is not None and state.overlay_visible("mask"))
        if state.reference is None:
            self.reference_item.clear()
        else:
            labels = main.reference_item.image if main is not None and main.reference_item.image is not None else \
                colormaps.mask_labels(slicing.take_slice(state.reference.data, layout, index))
            self.reference_item.setImage(labels, autoLevels=False, levels=(0, colormaps.LUT_SIZE - 1))
        rect = QRectF(0, 0, layout.n_cols * layout.col_spacing, layout.n_rows * layout.row_spacing)
        for item in (self.base_item, self.heat_item, self.mask_item, self.reference_item):
            if item.image is not None:
                item.setRect(rect)
        row, col = slicing.voxel_to_display(layout, state.cursor)
        self.cursor_item.setData([(col + 0.5) * layout.col_spacing], [(row + 0.5) * layout.row_spacing])
        name = image.name if image is not None else (state.analysed_name or text.SEQUENCE_ANALYSED)
        note = text.SEQUENCE_RESAMPLED if image is not None and image.resampled else (
            text.SEQUENCE_ANALYSED_MARK if image is None else "")
        self.title.setText(text.PANE_TITLE.format(name=name, note=note))
        for side in self.letters:
            self.letters[side].setText(getattr(layout, side))
        self._place_labels()

    def _place_labels(self, *_: Any) -> None:
        rect = self.viewbox.boundingRect()
        w, h, m = rect.width(), rect.height(), 6
        self.title.setAnchor((0, 0))
        self.title.setPos(m, m)
        for side, anchor, pos in (("left", (0, 0.5), (m, h / 2)), ("right", (1, 0.5), (w - m, h / 2)),
                                  ("top", (0.5, 0), (w / 2, m + 22)), ("bottom", (0.5, 1), (w / 2, h - m))):
            self.letters[side].setAnchor(anchor)
            self.letters[side].setPos(*pos)

    def _follow(self, *_: Any) -> None:
        main = self.main.viewbox
        rect, pixels, own = main.viewRect(), main.boundingRect(), self.viewbox.boundingRect()
        if pixels.width() <= 0 or pixels.height() <= 0 or own.width() <= 0 or own.height() <= 0:
            return
        per_pixel = max(rect.width() / pixels.width(), rect.height() / pixels.height())
        centre = rect.center()
        half_w, half_h = own.width() * per_pixel / 2, own.height() * per_pixel / 2
        self.viewbox.setRange(xRange=(centre.x() - half_w, centre.x() + half_w),
                              yRange=(centre.y() - half_h, centre.y() + half_h), padding=0)

    def _on_clicked(self, point: QPointF) -> None:
        voxel = self.main.voxel_at(point)  # the same slice geometry as the main view
        if voxel is not None:
            self.state.set_cursor(voxel)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.redraw()
        self._follow()

"""SliceView: one large slice of the current plane with its overlays, orientation letters and colour bar.

All layers are pyqtgraph ``ImageItem``s stacked in one ``ViewBox`` (row-major, float32 or uint8, explicit levels,
auto-levels off): the grey base image (scan, restored or difference), the member-spread map, the anomaly heat map
(256-entry LUT, transparent below the threshold) and the mask contour (RGBA). Pixels are drawn with their physical
size in mm, so anisotropic voxels keep their true aspect. The view only reads :class:`~app.state.ViewerState`;
mouse gestures write to it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent

from app import colormaps, slicing, text
from app.state import ViewerState
from engine import flagged

logger = logging.getLogger(__name__)

_LETTER_FONT_PT = 15
_INFO_FONT_PT = 10


class SliceViewBox(pg.ViewBox):
    """ViewBox with viewer gestures: wheel = slice, Ctrl+wheel = zoom, right-drag = window/level, click = cursor."""

    wheel_steps = Signal(int)
    window_drag = Signal(float, float, bool)  # dx, dy in screen pixels since drag start, finished
    clicked = Signal(QPointF)

    def __init__(self) -> None:
        super().__init__(invertY=True, lockAspect=True, enableMenu=False)
        self._wheel_accumulator = 0.0

    def wheelEvent(self, ev: Any, axis: Any = None) -> None:  # noqa: N802 - Qt override
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        self._wheel_accumulator += ev.delta() / 120.0
        steps = int(self._wheel_accumulator)
        if steps:
            self._wheel_accumulator -= steps
            self.wheel_steps.emit(steps)
        ev.accept()

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:  # noqa: N802 - Qt override
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            delta = ev.screenPos() - ev.buttonDownScreenPos()
            self.window_drag.emit(float(delta.x()), float(delta.y()), bool(ev.isFinish()))
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev: Any) -> None:  # noqa: N802 - Qt override
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.clicked.emit(self.mapSceneToView(ev.scenePos()))
            return
        super().mouseClickEvent(ev)


_LABEL_ROW = 24  # pixels of one line of the corner labels


def _text_item(colour: str, size_pt: int, bold: bool = False, anchor: tuple[float, float] = (0, 0)) -> pg.TextItem:
    item = pg.TextItem(color=colour, anchor=anchor, fill=pg.mkBrush(0, 0, 0, 110))
    font = QFont()
    font.setPointSize(size_pt)
    font.setBold(bold)
    item.setFont(font)
    return item


class SliceView(pg.GraphicsLayoutWidget):
    """The main image view. Redraws itself from ``state``; emits ``hovered`` with the voxel under the mouse."""

    hovered = Signal(object)  # (i, j, k) or None

    def __init__(self, state: ViewerState, parent: Any = None) -> None:
        super().__init__(parent)
        self.setBackground("k")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # drops go to the main window
        self.state = state
        self.key_handler: Any = None  # callable(QKeyEvent) -> bool, set by the main window
        self._layout: slicing.PlaneLayout | None = None
        self._map_slice: np.ndarray | None = None
        self._drag_start: tuple[float, float] | None = None
        self._difference_scale = 1.0
        self._shown_slice: tuple[str, int] | None = None
        self._placed: dict[int, tuple[float, float, tuple[int, ...]]] = {}  # item -> the rect it was given

        self.viewbox = SliceViewBox()
        self.addItem(self.viewbox, row=0, col=0)
        self.base_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.spread_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.heat_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.mask_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self._base_stack = slicing.SliceStack()
        self.reference_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)  # a reference's outline
        self.reference_item.setLookupTable(colormaps.mask_lut(False, colour=colormaps.REFERENCE_COLOUR))
        for z, item in enumerate((self.base_item, self.spread_item, self.heat_item, self.mask_item,
                                  self.reference_item)):
            item.setZValue(z)
            self.viewbox.addItem(item)
        self.base_item.setLookupTable(colormaps.grey_lut())
        self.spread_item.setLookupTable(colormaps.spread_lut())
        self.cursor_item = pg.ScatterPlotItem(size=14, symbol="+", pen=pg.mkPen("#ffd400", width=1.5), brush=None)
        self.cursor_item.setZValue(10)
        self.viewbox.addItem(self.cursor_item, ignoreBounds=True)

        # Side-by-side pseudo-healthy view (a separate widget placed by the window), linked to the main one.
        self.side_widget = pg.GraphicsLayoutWidget()
        self.side_widget.setBackground("k")
        self.side_viewbox = SliceViewBox()
        self.side_widget.addItem(self.side_viewbox, row=0, col=0)
        self.side_item = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.side_item.setLookupTable(colormaps.grey_lut())
        self.side_viewbox.addItem(self.side_item)
        self.side_viewbox.setXLink(self.viewbox)
        self.side_viewbox.setYLink(self.viewbox)
        self.side_title = _text_item("#9fd3ff", _INFO_FONT_PT)
        self.side_title.setParentItem(self.side_viewbox)
        self.side_title.setText(text.BASE_RESTORED)
        self.side_title.setPos(6, 6)
        self.side_widget.hide()

        # Colour bar: a vertical gradient with the map's scale on the right axis and the threshold marked.
        self.colour_bar = pg.PlotItem()
        self.colour_bar.hideButtons()
        self.colour_bar.setMouseEnabled(x=False, y=False)
        self.colour_bar.setMenuEnabled(False)
        self.colour_bar.hideAxis("bottom")
        self.colour_bar.hideAxis("left")
        self.colour_bar.showAxis("right")
        self.colour_bar.getAxis("right").setTextPen("w")
        self.colour_bar.setLabel("right", text.COLOURBAR_TITLE, color="#dddddd")
        self.colour_bar.getAxis("right").enableAutoSIPrefix(False)
        self.colour_bar_image = pg.ImageItem(axisOrder="row-major", autoLevels=False)
        self.colour_bar_image.setImage(np.arange(256, dtype=np.uint8).reshape(256, 1), levels=(0, 255))
        self.colour_bar.addItem(self.colour_bar_image)
        self.ci.addItem(self.colour_bar, row=0, col=1)
        self.threshold_line = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen("#00ff88", width=2),
            label=text.COLOURBAR_THRESHOLD,
            labelOpts={"color": "#00ff88", "position": 0.72, "anchors": [(0.5, 1), (0.5, 1)]},
        )
        self.colour_bar.addItem(self.threshold_line)
        self._colour_bar_visible = False
        self._side_visible = False
        self._rebuild_columns()

        # Text on the view: orientation letters at the four edges, slice info, convention, warnings.
        self.letters = {name: _text_item("#ffd400", _LETTER_FONT_PT, bold=True) for name in ("left", "right", "top",
                                                                                             "bottom")}
        for item in self.letters.values():
            item.setParentItem(self.viewbox)
        self.slice_label = _text_item("w", _INFO_FONT_PT)
        self.convention_label = _text_item("#ffd400", _INFO_FONT_PT)
        self.message_label = _text_item("#cccccc", 13)
        for item in (self.slice_label, self.convention_label, self.message_label):
            item.setParentItem(self.viewbox)
        self.message_label.setText(text.NO_SCAN)
        self.viewbox.sigResized.connect(self._place_labels)
        self.side_viewbox.sigResized.connect(self._place_labels)

        self.viewbox.wheel_steps.connect(lambda steps: self.state.step_slice(steps))
        self.side_viewbox.wheel_steps.connect(lambda steps: self.state.step_slice(steps))
        self.viewbox.window_drag.connect(self._on_window_drag)
        self.viewbox.clicked.connect(self._on_clicked)
        self._hover_proxy = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=60, slot=self._on_mouse_moved)
        self._side_hover_proxy = pg.SignalProxy(self.side_widget.scene().sigMouseMoved, rateLimit=60,
                                                slot=self._on_side_mouse_moved)

        state.volume_changed.connect(self._on_geometry_changed)
        state.plane_changed.connect(self._on_geometry_changed)
        state.radiological_changed.connect(self._on_geometry_changed)
        state.cursor_changed.connect(self._on_cursor_changed)
        state.result_changed.connect(self._on_result_changed)
        state.base_layer_changed.connect(self._redraw_images)
        state.sequence_changed.connect(self._redraw_images)
        state.study_changed.connect(self._redraw_images)
        state.window_changed.connect(self._on_window_changed)
        state.threshold_changed.connect(self._on_threshold_changed)
        state.display_max_changed.connect(self._on_threshold_changed)
        state.opacity_changed.connect(self._on_opacity_changed)
        state.overlay_visible_changed.connect(self._on_overlay_visible_changed)
        state.mask_fill_changed.connect(self._redraw_mask)
        state.side_by_side_changed.connect(self._update_columns)
        self._on_threshold_changed()
        self._on_opacity_changed()
        self._update_columns()

    # --- layout of the graphics columns --------------------------------------------------------------------
    def _rebuild_columns(self) -> None:
        self.colour_bar.setVisible(self._colour_bar_visible)
        self.ci.layout.setColumnFixedWidth(1, 165 if self._colour_bar_visible else 0)
        self.ci.layout.setColumnStretchFactor(0, 1)
        self.ci.layout.setColumnStretchFactor(1, 0)
        self.side_widget.setVisible(self._side_visible)

    def _update_columns(self, *_: Any) -> None:
        has_result = self.state.result is not None
        side = has_result and self.state.side_by_side
        bar = has_result and self.state.overlay_visible("heat")
        if (side, bar) != (self._side_visible, self._colour_bar_visible):
            self._side_visible, self._colour_bar_visible = side, bar
            self._rebuild_columns()
            if side:
                self._redraw_images()
        self._place_labels()

    # --- geometry --------------------------------------------------------------------------------------------
    def _on_geometry_changed(self, *_: Any) -> None:
        self._layout = self.state.layout()
        self._shown_slice = None
        layout = self._layout
        if layout is None:
            return
        for name in ("left", "right", "top", "bottom"):
            self.letters[name].setText(getattr(layout, name))
        self.convention_label.setText(
            text.CONVENTION_RADIOLOGICAL if layout.radiological else text.CONVENTION_NEUROLOGICAL
        )
        self.message_label.setText("")
        self._redraw_images()
        self.reset_zoom()

    def reset_zoom(self) -> None:
        """Fit the whole slice in the view."""
        layout = self._layout
        if layout is not None:
            self.viewbox.setRange(
                QRectF(0, 0, layout.n_cols * layout.col_spacing, layout.n_rows * layout.row_spacing), padding=0.02
            )

    def zoom(self, factor: float) -> None:
        """Zoom about the view centre; ``factor > 1`` zooms in."""
        self.viewbox.scaleBy((1 / factor, 1 / factor))

    def _place_labels(self, *_: Any) -> None:
        rect = self.viewbox.boundingRect()
        w, h = rect.width(), rect.height()
        m = 6
        self.letters["left"].setAnchor((0, 0.5))
        self.letters["left"].setPos(m, h / 2)
        self.letters["right"].setAnchor((1, 0.5))
        self.letters["right"].setPos(w - m, h / 2)
        self.letters["top"].setAnchor((0.5, 0))
        self.letters["top"].setPos(w / 2, m + _LABEL_ROW)  # below the slice line, which a narrow view lets reach it
        self.letters["bottom"].setAnchor((0.5, 1))
        self.letters["bottom"].setPos(w / 2, h - m - _LABEL_ROW)  # above the convention line
        self.slice_label.setAnchor((0, 0))
        self.slice_label.setPos(m, m)
        self.convention_label.setAnchor((0, 1))
        self.convention_label.setPos(m, h - m)
        self.message_label.setAnchor((0.5, 0.5))
        self.message_label.setPos(w / 2, h / 2)

    # --- images ----------------------------------------------------------------------------------------------
    def _on_cursor_changed(self, *_: Any) -> None:
        layout = self._layout
        if layout is None:
            return
        key = (layout.plane, self.state.slice_index)
        if key != self._shown_slice:
            self._redraw_images()
        else:
            self._draw_cursor()

    def _on_result_changed(self) -> None:
        result = self.state.result
        if result is not None:
            self._difference_scale = _difference_scale(self.state.volume.data, result)
        self._update_columns()
        self._redraw_images()

    def _redraw_images(self, *_: Any) -> None:
        """Cut every visible layer for the current slice and hand the 2-D arrays to the image items."""
        layout = self._layout
        volume = self.state.volume
        if layout is None or volume is None:
            return
        index = self.state.slice_index
        self._shown_slice = (layout.plane, index)
        result = self.state.result
        base_name = self.state.base_layer if result is not None else "scan"
        lo, hi = self.state.scan_window  # the analysed scan's and its restoration's
        if base_name == "scan":  # the displayed sequence (the analysed scan unless another is chosen)
            if self.state.sequences:  # a study: its images are redrawn in every pane, cut once per plane
                shown = self._base_stack.take(self.state.display_data, layout, index)
            else:
                shown = slicing.take_slice(self.state.display_data, layout, index).astype(np.float32, copy=False)
            self.base_item.setImage(shown, autoLevels=False, levels=self.state.window)
            self.base_item.setLookupTable(colormaps.grey_lut())
        else:
            scan = slicing.take_slice(volume.data, layout, index).astype(np.float32, copy=False)
            restored = slicing.take_slice(result.restored, layout, index).astype(np.float32, copy=False)
            if base_name == "restored":
                self.base_item.setImage(restored, autoLevels=False, levels=(lo, hi))
                self.base_item.setLookupTable(colormaps.grey_lut())
            else:
                s = self._difference_scale
                self.base_item.setImage(scan - restored, autoLevels=False, levels=(-s, s))
                self.base_item.setLookupTable(colormaps.difference_lut())
        if result is None:
            self._map_slice = None
            for item in (self.heat_item, self.spread_item, self.mask_item, self.side_item):
                item.clear()
        else:
            self._map_slice = slicing.take_slice(result.anomaly_map, layout, index).astype(np.float32, copy=False)
            self.heat_item.setImage(self._map_slice, autoLevels=False, levels=(0.0, self.state.display_max))
            spread = slicing.take_slice(result.member_spread, layout, index).astype(np.float32, copy=False)
            spread_max = max(float(self.state.display_max) / 3.0, 1e-6)
            self.spread_item.setImage(spread, autoLevels=False, levels=(0.0, spread_max))
            if self.state.side_by_side:
                restored = slicing.take_slice(result.restored, layout, index).astype(np.float32, copy=False)
                self.side_item.setImage(restored, autoLevels=False, levels=(lo, hi))
            self._redraw_mask()
        for name in ("heat", "spread", "mask"):
            self._item(name).setVisible(result is not None and self.state.overlay_visible(name))
        reference = self.state.reference
        if reference is None:
            self.reference_item.clear()
        else:
            cut = slicing.take_slice(reference.data, layout, index)
            self.reference_item.setImage(colormaps.mask_labels(cut), autoLevels=False,
                                         levels=(0, colormaps.LUT_SIZE - 1))
        info = text.SLICE_INFO.format(plane=text.PLANE_NAMES[layout.plane], index=index, last=layout.n_slices - 1)
        if self.state.sequences and base_name == "scan":  # a study: say which sequence is under the overlays
            shown = self.state.sequences.get(self.state.sequence)
            name = shown.name if shown is not None else (self.state.analysed_name or text.SEQUENCE_ANALYSED)
            info = text.SEQUENCE_INFO.format(
                name=name, note=text.SEQUENCE_RESAMPLED if shown is not None and shown.resampled else "",
                analysed=text.SEQUENCE_ANALYSED_MARK if shown is None else "", slice=info)
        self.slice_label.setText(info)
        self._place_images()
        self._draw_cursor()

    @property
    def shown_slice(self) -> tuple[str, int] | None:
        """The plane and slice index the layers were last cut for (None before the first scan)."""
        return self._shown_slice

    def _place_images(self) -> None:
        """Map each image's pixels to mm; only items whose image size or plane changed need it (a new rect makes
        the view recompute its bounds)."""
        layout = self._layout
        rect = QRectF(0, 0, layout.n_cols * layout.col_spacing, layout.n_rows * layout.row_spacing)
        for item in (self.base_item, self.spread_item, self.heat_item, self.mask_item, self.reference_item,
                     self.side_item):
            if item.image is None:
                continue
            placed = (rect.width(), rect.height(), item.image.shape[:2])
            if self._placed.get(id(item)) != placed:
                item.setRect(rect)  # after setImage: the rect maps the current image size to mm
                self._placed[id(item)] = placed

    def _item(self, name: str) -> pg.ImageItem:
        return {"heat": self.heat_item, "spread": self.spread_item, "mask": self.mask_item}[name]

    def _redraw_mask(self, *_: Any) -> None:
        if self._map_slice is None:
            self.mask_item.clear()
            return
        mask = flagged(self._map_slice, self.state.threshold)
        mask &= self._map_slice > 0
        self.mask_item.setLookupTable(colormaps.mask_lut(self.state.mask_fill))
        self.mask_item.setImage(colormaps.mask_labels(mask), autoLevels=False, levels=(0, colormaps.LUT_SIZE - 1))
        if self._layout is not None:
            self._place_images()

    def mask_alpha(self) -> np.ndarray | None:
        """Opacity (0-255) of each pixel of the drawn mask layer, or None when there is none."""
        image = self.mask_item.image
        return None if image is None else self.mask_item.lut[image][..., 3]

    def _draw_cursor(self) -> None:
        layout = self._layout
        if layout is None:
            self.cursor_item.clear()
            return
        row, col = slicing.voxel_to_display(layout, self.state.cursor)
        self.cursor_item.setData([(col + 0.5) * layout.col_spacing], [(row + 0.5) * layout.row_spacing])

    def _on_window_changed(self, lo: float, hi: float) -> None:
        base = self.state.base_layer if self.state.result is not None else "scan"
        if base == "scan":
            self.base_item.setLevels((lo, hi))
        elif base == "restored":
            self.base_item.setLevels(self.state.scan_window)
        self.side_item.setLevels(self.state.scan_window)

    def _on_threshold_changed(self, *_: Any) -> None:
        thr, top = self.state.threshold, self.state.display_max
        self.heat_item.setLookupTable(colormaps.heat_lut(thr, top))
        if self._map_slice is not None:
            self.heat_item.setLevels((0.0, top))
        self.colour_bar_image.setLookupTable(colormaps.heat_bar_lut(thr, top))
        self.colour_bar_image.setRect(QRectF(0, 0, 1, top))
        self.colour_bar.setYRange(0, top, padding=0)
        self.colour_bar.setXRange(0, 2.4, padding=0)
        self.threshold_line.setValue(thr)
        self.threshold_line.label.setText(text.COLOURBAR_THRESHOLD.format(value=thr))  # also while hidden
        self._redraw_mask()

    def _on_opacity_changed(self, *_: Any) -> None:
        self.heat_item.setOpacity(self.state.opacity)
        self.spread_item.setOpacity(self.state.opacity)

    def _on_overlay_visible_changed(self, name: str, on: bool) -> None:
        self._item(name).setVisible(on and self.state.result is not None)
        if name == "heat":
            self._update_columns()

    # --- mouse -----------------------------------------------------------------------------------------------
    def voxel_at(self, point: QPointF) -> tuple[int, int, int] | None:
        """Voxel under a point in view (mm) coordinates, or None outside the slice."""
        layout = self._layout
        if layout is None:
            return None
        row = math.floor(point.y() / layout.row_spacing)
        col = math.floor(point.x() / layout.col_spacing)
        if not (0 <= row < layout.n_rows and 0 <= col < layout.n_cols):
            return None
        return slicing.display_to_voxel(layout, self.state.slice_index, row, col)

    def _on_mouse_moved(self, args: Any) -> None:
        pos = args[0]
        voxel = None
        if self.viewbox.sceneBoundingRect().contains(pos):
            voxel = self.voxel_at(self.viewbox.mapSceneToView(pos))
        self.hovered.emit(voxel)

    def _on_side_mouse_moved(self, args: Any) -> None:
        pos = args[0]
        voxel = None
        if self.side_viewbox.sceneBoundingRect().contains(pos):
            voxel = self.voxel_at(self.side_viewbox.mapSceneToView(pos))
        self.hovered.emit(voxel)

    def _on_clicked(self, point: QPointF) -> None:
        voxel = self.voxel_at(point)
        if voxel is not None:
            self.state.set_cursor(voxel)

    def _on_window_drag(self, dx: float, dy: float, finished: bool) -> None:
        if self.state.volume is None:
            return
        if self._drag_start is None:
            lo, hi = self.state.window
            self._drag_start = (hi - lo, (hi + lo) / 2)
        width0, level0 = self._drag_start
        lo_a, hi_a = self.state.auto_window
        per_pixel = (hi_a - lo_a) / 300.0
        self.state.set_window_level(max(width0 + dx * per_pixel, per_pixel), level0 - dy * per_pixel)
        if finished:
            self._drag_start = None

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if self.key_handler is not None and self.key_handler(ev):
            ev.accept()
            return
        ev.ignore()

    # --- export ----------------------------------------------------------------------------------------------
    def set_info_visible(self, on: bool) -> None:
        """Show or hide the slice and convention text (orientation letters always stay)."""
        self.slice_label.setVisible(on)
        self.convention_label.setVisible(on)

    def background_colour(self) -> QColor:
        return QColor(0, 0, 0)


def _difference_scale(data: np.ndarray, result: Any) -> float:
    """Half-range of the difference image: a high percentile of |scan - restored| over analysed brain voxels."""
    analysed = np.flatnonzero(np.asarray(result.analysed))
    if analysed.size == 0:
        return 1.0
    picks = analysed[:: max(1, analysed.size // 16)]
    scan = np.take(np.asarray(data), picks, axis=result.slice_axis).astype(np.float32)
    restored = np.take(result.restored, picks, axis=result.slice_axis)
    diff = np.abs(scan - restored)
    values = diff[scan != 0]
    if values.size == 0:
        return 1.0
    return float(max(np.percentile(values, 99.5), 1e-6))

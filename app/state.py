"""ViewerState: what the viewer shows, with validated setters and one change signal per field (QtCore only).

Views draw from the state and widgets write to it; nothing here knows about widgets. Each setter validates and clamps
its input and emits ``<name>_changed`` only when the value actually changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from app import slicing
from app.qt_compat import guard_bool_refcounts

guard_bool_refcounts()  # before any signal is emitted (PySide6 6.12.0 emit bug, see app.qt_compat)

BASE_LAYERS = ("scan", "restored", "difference")
OVERLAYS = ("heat", "mask", "spread")
"""Overlay layers, bottom to top of the list as the panel shows them."""
DEFAULT_VISIBLE = {"heat": True, "mask": True, "spread": False}
DEFAULT_OPACITY = 0.6
DEFAULT_MASK_FILL = False


class ViewerState(QObject):
    """The viewer's model: volume, result, plane, cursor, contrast and overlay settings.

    The cursor is a voxel index ``(i, j, k)`` in the volume's own array order; the displayed slice of a plane is
    the cursor's index along that plane's slice axis, so switching planes keeps the place.
    """

    volume_changed = Signal()
    result_changed = Signal()
    plane_changed = Signal(str)
    cursor_changed = Signal(tuple)
    radiological_changed = Signal(bool)
    window_changed = Signal(float, float)
    threshold_changed = Signal(float)
    display_max_changed = Signal(float)
    opacity_changed = Signal(float)
    overlay_visible_changed = Signal(str, bool)
    mask_fill_changed = Signal(bool)
    base_layer_changed = Signal(str)
    side_by_side_changed = Signal(bool)
    study_changed = Signal()  # the other sequences or the reference segmentation changed
    sequence_changed = Signal(str)  # the displayed sequence ("" = the analysed scan)
    study_grid_changed = Signal(bool)  # the other sequences in linked panes beside the main view

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._volume: Any = None
        self._result: Any = None
        self._plane: slicing.Plane = "axial"
        self._cursor: tuple[int, int, int] = (0, 0, 0)
        self._radiological = True
        self._sequence = ""  # the displayed sequence: "" the analysed scan, else a key of _sequences
        self._sequences: dict[str, Any] = {}  # name -> app.study.StudyImage on the volume's grid
        self._analysed_name = ""
        self._reference: Any = None  # app.study.StudyImage of a reference segmentation, or None
        self._windows: dict[str, tuple[float, float]] = {"": (0.0, 1.0)}  # per sequence, "" the analysed scan
        self._auto_windows: dict[str, tuple[float, float]] = {"": (0.0, 1.0)}
        self._study_grid = False
        self._threshold = 0.1
        self._display_max = 0.3
        self._opacity = DEFAULT_OPACITY
        self._visible = dict(DEFAULT_VISIBLE)
        self._mask_fill = DEFAULT_MASK_FILL
        self._base_layer = "scan"
        self._side_by_side = False
        self._layouts: dict[tuple[str, bool], slicing.PlaneLayout] = {}  # per volume: derived once, not per redraw

    # --- volume and result ---------------------------------------------------------------------------------
    @property
    def volume(self) -> Any:
        """The loaded ``engine.Volume`` or None."""
        return self._volume

    def set_volume(self, volume: Any) -> None:
        """Show a new volume: cursor to the centre, robust auto-contrast, result cleared."""
        data = np.asarray(volume.data)
        if data.ndim != 3:
            raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
        self._volume = volume
        self._layouts = {}
        self._result = None
        self._cursor = tuple(int(s) // 2 for s in data.shape)  # type: ignore[assignment]
        auto = slicing.robust_window(data)
        self._windows, self._auto_windows = {"": auto}, {"": auto}
        self._sequence, self._sequences, self._analysed_name, self._reference = "", {}, "", None
        self._base_layer = "scan"
        self.volume_changed.emit()
        self.result_changed.emit()
        self.study_changed.emit()
        self.sequence_changed.emit("")
        self.cursor_changed.emit(self._cursor)
        self.window_changed.emit(*self.window)
        self.base_layer_changed.emit(self._base_layer)

    # --- study: other sequences and a reference ------------------------------------------------------------
    def set_study(self, images: list[Any], analysed_name: str) -> None:
        """Show other sequences of the scan's subject (``app.study.StudyImage`` on the volume's grid), each with its
        own auto-contrast; ``analysed_name`` names the analysed scan's sequence (e.g. ``"T1"``)."""
        shape = tuple(np.shape(self._volume.data)) if self._volume is not None else None
        for image in images:
            if tuple(image.data.shape) != shape:
                raise ValueError(f"{image.name}: shape {image.data.shape} is not the volume's {shape}")
        self._sequences = {image.name: image for image in images}
        self._analysed_name = analysed_name
        self._windows = {"": self._windows[""], **{n: slicing.robust_window(i.data) for n, i in
                                                   self._sequences.items()}}
        self._auto_windows = {"": self._auto_windows[""], **{n: w for n, w in self._windows.items() if n}}
        self.study_changed.emit()
        if self._sequence not in self._windows:
            self.set_sequence("")

    @property
    def sequences(self) -> dict[str, Any]:
        """The other sequences shown with the scan, by name."""
        return dict(self._sequences)

    @property
    def analysed_name(self) -> str:
        return self._analysed_name

    def sequence_names(self) -> list[str]:
        """What the sequence switcher offers: the analysed scan ("") first, then the others."""
        return ["", *self._sequences]

    @property
    def sequence(self) -> str:
        return self._sequence

    def set_sequence(self, name: str) -> None:
        """Draw another sequence under the overlays ("" the analysed scan); the map, cursor and slice stay."""
        if name not in self._windows:
            raise ValueError(f"no sequence {name!r} in this study ({', '.join(self._sequences) or 'none'})")
        if name != self._sequence:
            self._sequence = name
            self.sequence_changed.emit(name)
            self.window_changed.emit(*self.window)

    def step_sequence(self, steps: int = 1) -> None:
        names = self.sequence_names()
        self.set_sequence(names[(names.index(self._sequence) + steps) % len(names)])

    @property
    def display_data(self) -> Any:
        """The array of the displayed sequence (the analysed scan's data when none other is chosen)."""
        if self._sequence:
            return self._sequences[self._sequence].data
        return None if self._volume is None else self._volume.data

    @property
    def reference(self) -> Any:
        """The reference segmentation (``app.study.StudyImage``, boolean data on the volume's grid) or None."""
        return self._reference

    def set_reference(self, image: Any) -> None:
        if image is not None and self._volume is not None and tuple(image.data.shape) != tuple(
                np.shape(self._volume.data)):
            raise ValueError(f"reference shape {image.data.shape} is not the volume's {np.shape(self._volume.data)}")
        self._reference = image
        self.study_changed.emit()

    @property
    def result(self) -> Any:
        """The (merged) ``engine.AnomalyResult`` for the volume, or None."""
        return self._result

    def set_result(self, result: Any) -> None:
        """Show an analysis result; it must be on the volume's grid."""
        if result is not None:
            if self._volume is None:
                raise ValueError("a result needs a volume")
            if tuple(result.anomaly_map.shape) != tuple(np.shape(self._volume.data)):
                raise ValueError(
                    f"result shape {result.anomaly_map.shape} does not match volume {np.shape(self._volume.data)}"
                )
        self._result = result
        self.result_changed.emit()

    # --- geometry ------------------------------------------------------------------------------------------
    @property
    def plane(self) -> slicing.Plane:
        return self._plane

    def set_plane(self, plane: str) -> None:
        if plane not in slicing.PLANES:
            raise ValueError(f"plane must be one of {slicing.PLANES}, got {plane!r}")
        if plane != self._plane:
            self._plane = plane  # type: ignore[assignment]
            self.plane_changed.emit(plane)

    @property
    def radiological(self) -> bool:
        return self._radiological

    def set_radiological(self, on: bool) -> None:
        on = bool(on)
        if on != self._radiological:
            self._radiological = on
            self.radiological_changed.emit(on)

    def layout(self, plane: str | None = None) -> slicing.PlaneLayout | None:
        """Screen layout of ``plane`` (default: the current plane), or None without a volume."""
        if self._volume is None:
            return None
        key = (plane or self._plane, self._radiological)
        layout = self._layouts.get(key)
        if layout is None:
            layout = slicing.plane_layout(self._volume.affine, np.shape(self._volume.data), key[0],
                                          radiological=key[1])
            self._layouts[key] = layout
        return layout

    @property
    def cursor(self) -> tuple[int, int, int]:
        return self._cursor

    def set_cursor(self, voxel: tuple[int, int, int]) -> None:
        """Move the cursor; each index is clamped into the volume."""
        if self._volume is None:
            return
        shape = np.shape(self._volume.data)
        clamped = tuple(int(np.clip(int(v), 0, n - 1)) for v, n in zip(voxel, shape, strict=True))
        if clamped != self._cursor:
            self._cursor = clamped  # type: ignore[assignment]
            self.cursor_changed.emit(self._cursor)

    @property
    def slice_index(self) -> int:
        """Array index of the displayed slice along the current plane's slice axis."""
        layout = self.layout()
        return 0 if layout is None else self._cursor[layout.slice_axis]

    def set_slice_index(self, index: int) -> None:
        """Show slice ``index`` (array index along the current plane's slice axis; clamped)."""
        layout = self.layout()
        if layout is None:
            return
        voxel = list(self._cursor)
        voxel[layout.slice_axis] = int(index)
        self.set_cursor(tuple(voxel))  # type: ignore[arg-type]

    def step_slice(self, steps: int) -> None:
        """Move ``steps`` slices toward the plane's positive direction (superior, anterior or right)."""
        layout = self.layout()
        if layout is not None:
            self.set_slice_index(self.slice_index + int(steps) * layout.step_sign)

    # --- contrast ------------------------------------------------------------------------------------------
    @property
    def window(self) -> tuple[float, float]:
        """Display range ``(lo, hi)`` of the displayed sequence's grey image (each sequence keeps its own)."""
        return self._windows[self._sequence]

    def window_of(self, name: str) -> tuple[float, float]:
        """Display range of one sequence ("" the analysed scan)."""
        return self._windows[name]

    @property
    def study_grid(self) -> bool:
        """Show the study's other sequences in linked panes beside the main view (a 2 x 2 grid for four)."""
        return self._study_grid

    def set_study_grid(self, on: bool) -> None:
        on = bool(on)
        if on != self._study_grid:
            self._study_grid = on
            self.study_grid_changed.emit(on)

    def pane_sequences(self, panes: int = 3) -> list[str]:
        """The sequences the grid's panes show: every one but the main view's, in the switcher's order."""
        return [n for n in self.sequence_names() if n != self._sequence][:panes] if self._sequences else []

    @property
    def scan_window(self) -> tuple[float, float]:
        """Display range of the analysed scan (and of its restoration)."""
        return self._windows[""]

    @property
    def auto_window(self) -> tuple[float, float]:
        return self._auto_windows[self._sequence]

    def set_window(self, lo: float, hi: float) -> None:
        """Set the grey display range; ``hi`` is kept strictly above ``lo``."""
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"window must be finite, got ({lo}, {hi})")
        if hi <= lo:
            hi = lo + max(1e-6, abs(lo) * 1e-6)
        if (lo, hi) != self.window:
            self._windows[self._sequence] = (lo, hi)
            self.window_changed.emit(lo, hi)

    def set_window_level(self, width: float, level: float) -> None:
        """Set contrast by window width and level (centre)."""
        width = max(float(width), 1e-6)
        self.set_window(level - width / 2, level + width / 2)

    def reset_window(self) -> None:
        """Back to the robust auto-contrast of the volume."""
        self.set_window(*self.auto_window)

    # --- overlays ------------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """Anomaly-map value below which the heat map is transparent and the mask is off (map units)."""
        return self._threshold

    def set_threshold(self, value: float) -> None:
        value = float(np.clip(float(value), 0.0, self._display_max))
        if value != self._threshold:
            self._threshold = value
            self.threshold_changed.emit(value)

    @property
    def display_max(self) -> float:
        """Top of the anomaly colour scale (map units)."""
        return self._display_max

    def set_display_max(self, value: float) -> None:
        value = float(value)
        if not value > 0 or not np.isfinite(value):
            raise ValueError(f"display_max must be positive, got {value}")
        if value != self._display_max:
            self._display_max = value
            self.display_max_changed.emit(value)
            if self._threshold > value:
                self.set_threshold(value)

    @property
    def opacity(self) -> float:
        return self._opacity

    def set_opacity(self, value: float) -> None:
        value = float(np.clip(float(value), 0.0, 1.0))
        if value != self._opacity:
            self._opacity = value
            self.opacity_changed.emit(value)

    def overlay_visible(self, name: str) -> bool:
        return self._visible[name]

    def set_overlay_visible(self, name: str, on: bool) -> None:
        if name not in OVERLAYS:
            raise ValueError(f"overlay must be one of {OVERLAYS}, got {name!r}")
        on = bool(on)
        if on != self._visible[name]:
            self._visible[name] = on
            self.overlay_visible_changed.emit(name, on)

    @property
    def mask_fill(self) -> bool:
        return self._mask_fill

    def set_mask_fill(self, on: bool) -> None:
        on = bool(on)
        if on != self._mask_fill:
            self._mask_fill = on
            self.mask_fill_changed.emit(on)

    @property
    def base_layer(self) -> str:
        """Which image is drawn under the overlays: ``"scan"``, ``"restored"`` or ``"difference"``."""
        return self._base_layer

    def set_base_layer(self, name: str) -> None:
        if name not in BASE_LAYERS:
            raise ValueError(f"base layer must be one of {BASE_LAYERS}, got {name!r}")
        if name != self._base_layer:
            self._base_layer = name
            self.base_layer_changed.emit(name)

    @property
    def side_by_side(self) -> bool:
        return self._side_by_side

    def set_side_by_side(self, on: bool) -> None:
        on = bool(on)
        if on != self._side_by_side:
            self._side_by_side = on
            self.side_by_side_changed.emit(on)

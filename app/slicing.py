"""Display geometry of a volume: which array axes become the screen's rows and columns, pure numpy (no Qt).

The viewer never rewrites a volume's data. At draw time it derives, from the voxel-to-RAS affine, how to cut a plane
(axial, coronal or sagittal) out of the array in its own voxel order and how to transpose and flip that 2-D cut so the
patient appears in the conventional screen orientation:

* axial and coronal: patient's right on the screen's left (radiological) or on the right (neurological);
* axial: anterior at the top; coronal and sagittal: superior at the top;
* sagittal: anterior on the screen's left.

Returned slices are C-contiguous row-major arrays (row 0 at the top of the screen), ready for pyqtgraph's fast path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import nibabel as nib
import numpy as np

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")

# RAS world axes: letter of the positive and of the negative direction.
_POSITIVE = ("R", "A", "S")
_NEGATIVE = ("L", "P", "I")

# For each plane: (world axis sliced through, world axis down the rows, world axis across the columns).
_PLANE_AXES: dict[str, tuple[int, int, int]] = {
    "axial": (2, 1, 0),
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
}


@dataclass(frozen=True)
class PlaneLayout:
    """How one plane of a volume is cut out of the array and laid out on screen.

    Attributes:
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        slice_axis: the array axis the plane slices through.
        row_axis: the array axis that runs down the screen's rows.
        col_axis: the array axis that runs across the screen's columns.
        flip_rows: True if the array axis ``row_axis`` runs bottom-to-top on screen.
        flip_cols: True if the array axis ``col_axis`` runs right-to-left on screen.
        row_spacing: mm between screen rows (voxel size along ``row_axis``).
        col_spacing: mm between screen columns (voxel size along ``col_axis``).
        n_rows / n_cols / n_slices: sizes of the displayed 2-D slice and of the slice axis.
        left / right / top / bottom: the patient direction (R, L, A, P, S, I) at each screen edge.
        step_sign: +1 if a higher array index along ``slice_axis`` moves toward the plane's positive direction
            (superior for axial, anterior for coronal, right for sagittal), else -1.
        radiological: whether the layout follows the radiological convention.
    """

    plane: Plane
    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    row_spacing: float
    col_spacing: float
    n_rows: int
    n_cols: int
    n_slices: int
    left: str
    right: str
    top: str
    bottom: str
    step_sign: int
    radiological: bool


def axcodes(affine: np.ndarray) -> tuple[str, ...]:
    """Orientation letters of the array axes, e.g. ``('L', 'P', 'S')`` (nibabel's ``aff2axcodes``)."""
    return tuple(str(c) for c in nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes in mm along the three array axes, from the affine's column norms."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((m**2).sum(axis=0)))  # type: ignore[return-value]


def plane_layout(affine: np.ndarray, shape: tuple[int, ...], plane: Plane, *, radiological: bool = True) -> PlaneLayout:
    """Derive the on-screen layout of ``plane`` for a volume with this affine and shape.

    Args:
        affine: 4x4 voxel-to-RAS (mm) affine of the volume.
        shape: array shape (3-D).
        plane: which plane to show.
        radiological: patient's left on the screen's right (True) or on the left (False) for axial and coronal.

    Returns:
        The layout; oblique affines use the closest array axis for each world axis (nibabel ``io_orientation``).
    """
    if plane not in _PLANE_AXES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D shape, got {tuple(shape)}")
    ornt = nib.io_orientation(np.asarray(affine, dtype=np.float64))
    world_to_vox = {int(w): i for i, (w, _) in enumerate(ornt)}
    sign = {int(w): int(s) for w, s in ornt}
    sizes = voxel_sizes(affine)
    w_slice, w_row, w_col = _PLANE_AXES[plane]

    # Desired screen direction of each world axis: +1 if moving right (columns) / down (rows) goes toward the
    # positive RAS direction.
    row_dir = -1  # rows go from the positive end (A or S) at the top down to the negative end.
    # Sagittal: anterior on the left, so moving right goes toward posterior (-y). Axial/coronal radiological:
    # patient's right on the screen's left, so moving right goes toward L (-x); neurological the opposite.
    col_dir = -1 if plane == "sagittal" or radiological else +1

    row_axis, col_axis = world_to_vox[w_row], world_to_vox[w_col]
    flip_rows = sign[w_row] != row_dir
    flip_cols = sign[w_col] != col_dir

    def letter(world_axis: int, direction: int) -> str:
        return _POSITIVE[world_axis] if direction > 0 else _NEGATIVE[world_axis]

    return PlaneLayout(
        plane=plane,
        slice_axis=world_to_vox[w_slice],
        row_axis=row_axis,
        col_axis=col_axis,
        flip_rows=bool(flip_rows),
        flip_cols=bool(flip_cols),
        row_spacing=sizes[row_axis],
        col_spacing=sizes[col_axis],
        n_rows=int(shape[row_axis]),
        n_cols=int(shape[col_axis]),
        n_slices=int(shape[world_to_vox[w_slice]]),
        left=letter(w_col, -col_dir),
        right=letter(w_col, col_dir),
        top=letter(w_row, -row_dir),
        bottom=letter(w_row, row_dir),
        step_sign=sign[w_slice],
        radiological=radiological,
    )


def take_slice(data: np.ndarray, layout: PlaneLayout, index: int) -> np.ndarray:
    """Cut slice ``index`` (array index along ``layout.slice_axis``) and lay it out for the screen.

    Args:
        data: 3-D array in the volume's own voxel order.
        layout: from :func:`plane_layout` for this volume.
        index: array index along the slice axis; clamped to the valid range.

    Returns:
        C-contiguous 2-D array of shape ``(n_rows, n_cols)``; row 0 is the top of the screen. Same dtype as ``data``.
        When the slice needs no reordering it is a view of ``data`` (no copy): read it, do not write to it.
    """
    index = int(np.clip(index, 0, data.shape[layout.slice_axis] - 1))
    where: list[int | slice] = [slice(None)] * 3
    where[layout.slice_axis] = index
    cut = data[tuple(where)]  # a view: the one copy is the contiguous one below
    # The two remaining axes keep their relative order; put the row axis first.
    remaining = [a for a in range(3) if a != layout.slice_axis]
    if remaining.index(layout.row_axis) != 0:
        cut = cut.T
    if layout.flip_rows:
        cut = cut[::-1, :]
    if layout.flip_cols:
        cut = cut[:, ::-1]
    return np.ascontiguousarray(cut)


def display_to_voxel(layout: PlaneLayout, index: int, row: int, col: int) -> tuple[int, int, int]:
    """Array index ``(i, j, k)`` of the voxel shown at screen ``(row, col)`` of slice ``index``."""
    r = layout.n_rows - 1 - row if layout.flip_rows else row
    c = layout.n_cols - 1 - col if layout.flip_cols else col
    voxel = [0, 0, 0]
    voxel[layout.slice_axis] = int(index)
    voxel[layout.row_axis] = int(r)
    voxel[layout.col_axis] = int(c)
    return voxel[0], voxel[1], voxel[2]


def voxel_to_display(layout: PlaneLayout, voxel: tuple[int, int, int]) -> tuple[int, int]:
    """Screen ``(row, col)`` at which voxel ``(i, j, k)`` appears in its slice (inverse of :func:`display_to_voxel`)."""
    r, c = int(voxel[layout.row_axis]), int(voxel[layout.col_axis])
    row = layout.n_rows - 1 - r if layout.flip_rows else r
    col = layout.n_cols - 1 - c if layout.flip_cols else c
    return row, col


def voxel_to_ras(affine: np.ndarray, voxel: tuple[int, int, int]) -> tuple[float, float, float]:
    """RAS position in mm of a voxel centre."""
    point = np.asarray(affine, dtype=np.float64) @ np.array([*voxel, 1.0])
    return float(point[0]), float(point[1]), float(point[2])


def robust_window(data: np.ndarray, low: float = 1.0, high: float = 99.0, *, max_samples: int = 2_000_000) -> tuple[
    float, float
]:
    """Display window from robust percentiles of the non-zero voxels (computed once per volume).

    Args:
        data: the volume.
        low / high: percentiles in [0, 100].
        max_samples: non-zero voxels are subsampled (regularly, deterministically) above this count.

    Returns:
        ``(lo, hi)`` with ``hi > lo``; ``(0, 1)`` for an all-zero or non-finite volume. Where the percentiles
        coincide (a mask whose voxels share one value) the window spans zero to that value, so that a mask shows its
        foreground bright rather than black.
    """
    flat = np.asarray(data).ravel()
    values = flat[np.isfinite(flat) & (flat != 0)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > max_samples:
        values = values[:: values.size // max_samples + 1]
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi > lo:
        return lo, hi
    # One shared non-zero value: span it and the zero background (which differ, the value being non-zero).
    return min(lo, 0.0), max(hi, 0.0)


class SliceStack:
    """The slices of one array laid out for the screen, cut once per plane: afterwards a slice is a view of a
    contiguous block instead of a strided copy (an axial cut of a 240 x 240 x 155 volume gathers every 155th value).

    Costs one float32 copy of the array while its plane stays; meant for images redrawn on every slice change.
    """

    def __init__(self) -> None:
        self._data: np.ndarray | None = None
        self._layout: PlaneLayout | None = None
        self._stack: np.ndarray | None = None

    def take(self, data: np.ndarray, layout: PlaneLayout, index: int) -> np.ndarray:
        """What :func:`take_slice` gives (as float32), from the stack of ``data`` for ``layout``."""
        if self._stack is None or self._data is not data or self._layout != layout:
            moved = np.moveaxis(np.asarray(data), layout.slice_axis, 0)
            remaining = [a for a in range(3) if a != layout.slice_axis]
            if remaining.index(layout.row_axis) != 0:
                moved = moved.transpose(0, 2, 1)
            if layout.flip_rows:
                moved = moved[:, ::-1, :]
            if layout.flip_cols:
                moved = moved[:, :, ::-1]
            self._stack = np.ascontiguousarray(moved, dtype=np.float32)
            self._data, self._layout = data, layout
        return self._stack[int(np.clip(index, 0, self._stack.shape[0] - 1))]

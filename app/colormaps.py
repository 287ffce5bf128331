"""Lookup tables and RGBA builders for the overlays (numpy only, no widgets).

Every LUT is a ``(256, 4)`` uint8 RGBA table, the size pyqtgraph's fast path accepts. The anomaly heat map is drawn
with ``levels=(0, display_max)`` so an entry ``i`` stands for the map value ``i / 255 * display_max``; entries below
the threshold get alpha 0, so sub-threshold voxels are transparent.
"""

from __future__ import annotations

import functools

import numpy as np

LUT_SIZE = 256

# Control points (position in [0, 1], RGB) of the anomaly heat map: dark red -> red -> orange -> yellow -> white.
_HEAT_POINTS = (
    (0.0, (120, 0, 0)),
    (0.35, (230, 20, 0)),
    (0.65, (255, 150, 0)),
    (0.9, (255, 240, 40)),
    (1.0, (255, 255, 220)),
)
# Member spread (disagreement): dark blue -> cyan -> white.
_SPREAD_POINTS = ((0.0, (0, 20, 120)), (0.6, (0, 190, 255)), (1.0, (230, 255, 255)))
# Difference (scan - restored): blue (darker than healthy) -> black -> red (brighter than healthy).
_DIFF_POINTS = ((0.0, (60, 140, 255)), (0.5, (0, 0, 0)), (1.0, (255, 80, 40)))

MASK_COLOUR = (255, 40, 40)
REFERENCE_COLOUR = (60, 200, 255)
"""A reference segmentation's outline: cyan, apart from the anomaly mask's red."""


def _interpolate(points: tuple[tuple[float, tuple[int, int, int]], ...]) -> np.ndarray:
    x = np.linspace(0.0, 1.0, LUT_SIZE)
    pos = np.array([p for p, _ in points])
    rgb = np.array([c for _, c in points], dtype=np.float64)
    out = np.stack([np.interp(x, pos, rgb[:, ch]) for ch in range(3)], axis=1)
    return np.round(out).astype(np.uint8)


def _frozen(lut: np.ndarray) -> np.ndarray:
    lut.setflags(write=False)  # shared by every caller: one object, so pyqtgraph sees "same LUT" and skips work
    return lut


@functools.cache
def grey_lut() -> np.ndarray:
    """Opaque grey ramp, black to white (one shared, read-only table)."""
    ramp = np.arange(LUT_SIZE, dtype=np.uint8)
    return _frozen(np.stack([ramp, ramp, ramp, np.full(LUT_SIZE, 255, np.uint8)], axis=1))


def threshold_index(threshold: float, display_max: float) -> int:
    """First LUT entry at or above ``threshold`` for a scale ``[0, display_max]``."""
    if display_max <= 0:
        return 0
    return int(np.clip(np.ceil(threshold / display_max * (LUT_SIZE - 1) - 1e-9), 0, LUT_SIZE))


def heat_lut(threshold: float, display_max: float) -> np.ndarray:
    """Anomaly heat map LUT: opaque colours from the threshold up, transparent below it.

    Args:
        threshold: map value below which voxels are hidden (map units).
        display_max: map value drawn with the last (brightest) colour.
    """
    lut = np.empty((LUT_SIZE, 4), dtype=np.uint8)
    lut[:, :3] = _interpolate(_HEAT_POINTS)
    lut[:, 3] = 255
    lut[: threshold_index(threshold, display_max), 3] = 0
    return lut


def heat_bar_lut(threshold: float, display_max: float) -> np.ndarray:
    """The heat LUT as shown in the colour bar: sub-threshold entries dimmed instead of transparent."""
    lut = heat_lut(threshold, display_max)
    below = lut[:, 3] == 0
    lut[below, :3] = (lut[below, :3].astype(np.float64) * 0.3 + 40).astype(np.uint8)
    lut[:, 3] = 255
    return lut


@functools.cache
def spread_lut() -> np.ndarray:
    """Member-spread LUT: alpha ramps up with the value so low disagreement stays see-through (shared, read-only)."""
    lut = np.empty((LUT_SIZE, 4), dtype=np.uint8)
    lut[:, :3] = _interpolate(_SPREAD_POINTS)
    lut[:, 3] = np.clip(np.linspace(0, 255 * 1.6, LUT_SIZE), 0, 255).astype(np.uint8)
    lut[:8, 3] = 0
    return _frozen(lut)


@functools.cache
def difference_lut() -> np.ndarray:
    """Diverging opaque LUT for ``scan - restored`` drawn with symmetric levels ``(-w, +w)`` (shared, read-only)."""
    lut = np.empty((LUT_SIZE, 4), dtype=np.uint8)
    lut[:, :3] = _interpolate(_DIFF_POINTS)
    lut[:, 3] = 255
    return _frozen(lut)


MASK_OUTSIDE, MASK_INSIDE, MASK_EDGE = 0, 1, 2


def mask_labels(mask: np.ndarray) -> np.ndarray:
    """uint8 image of a binary 2-D mask: 0 outside, 1 inside, 2 on its one-pixel contour (draw with :func:`mask_lut`).

    A small integer image with a lookup table takes pyqtgraph's fast path; no RGBA image is built per slice.
    """
    mask = np.asarray(mask, dtype=bool)
    labels = mask.view(np.uint8).copy() if mask.flags.c_contiguous else mask.astype(np.uint8)
    if not labels.any():
        return labels
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    labels[mask & ~inner] = MASK_EDGE
    return labels


@functools.cache
def mask_lut(fill: bool, fill_alpha: int = 90, colour: tuple[int, int, int] = MASK_COLOUR) -> np.ndarray:
    """LUT for :func:`mask_labels`: opaque contour, translucent inside when ``fill`` (shared, read-only)."""
    lut = np.zeros((LUT_SIZE, 4), dtype=np.uint8)
    lut[MASK_INSIDE : MASK_EDGE + 1, :3] = colour
    lut[MASK_INSIDE, 3] = fill_alpha if fill else 0
    lut[MASK_EDGE, 3] = 255
    return _frozen(lut)


def mask_rgba(mask: np.ndarray, *, fill: bool, fill_alpha: int = 90,
              colour: tuple[int, int, int] = MASK_COLOUR) -> np.ndarray:
    """RGBA image of a binary 2-D mask: an opaque one-pixel contour, optionally over a translucent fill.

    Args:
        mask: boolean 2-D array.
        fill: also paint the inside with ``fill_alpha``.
        fill_alpha: alpha (0-255) of the fill.
        colour: RGB of contour and fill.

    Returns:
        uint8 array of shape ``mask.shape + (4,)`` (what the view draws from :func:`mask_labels` and :func:`mask_lut`).
    """
    rgba = mask_lut(fill, fill_alpha, colour)[mask_labels(mask)]
    rgba[rgba[..., 3] == 0] = 0
    return rgba

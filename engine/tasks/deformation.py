"""Tasks 2 and 3: radial sink and source deformations (reference-method.md §2.3, ``TU/deformation_task.py``).

Inside the shape, each pixel ``p`` (except on the bounding-box border) is resampled from ``c + r' u``, where ``c``
is a centre drawn uniformly among the shape's pixels, ``r = |p - c|``, ``u = (p - c) / r``, and ``R`` is the analytic
distance from ``c`` to the shape's edge along ``u``:

- source (id 3): ``r' = R (r / R)^f``, content is pushed away from ``c``;
- sink (id 2): ``r' = R - R (1 - r / R)^f``, content is pulled towards ``c``.

The exponent ``f > 1`` bends the identity curve by a perpendicular distance ``p`` at its midpoint. With ``A`` the
mean distance from ``c`` to the shape's inner edge pixels, ``p ~ U(max(0.1 A/sqrt2, 0.5), min(0.9 A/sqrt2, 5))``
(``p = 0.9 A/sqrt2`` when ``0.5 >= 0.9 A/sqrt2``, ``p = 0.1 A/sqrt2`` when ``5 <= 0.1 A/sqrt2``). Resampling uses
cubic splines with ``mode='nearest'`` on the bounding-box patch.

Pixels that are not moved keep their exact values (the reference resamples them at their own positions, which is the
identity up to floating-point rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from engine.tasks.base import PatchTask, patch_slices
from engine.tasks.shapes import ShapeSpec, distance_to_edge

MIN_PUSH = 0.5
MAX_PUSH = 5.0


def mean_edge_distance(shape_mask: np.ndarray, centre: tuple[int, int]) -> float:
    """Mean distance from ``centre`` to the shape's inner edge (mask XOR its 4-connected erosion)."""
    edge = shape_mask ^ ndimage.binary_erosion(shape_mask)
    coords = np.argwhere(edge)
    return float(np.mean(np.linalg.norm(coords - np.asarray(centre), axis=1)))


def sample_push(rng: np.random.Generator, edge_distance: float) -> float:
    """Perpendicular push of the deformation curve's midpoint, in pixels."""
    half_diag = edge_distance / np.sqrt(2.0)
    low, high = 0.1 * half_diag, 0.9 * half_diag
    if high <= MIN_PUSH:
        return float(high)
    if low >= MAX_PUSH:
        return float(low)
    return float(rng.uniform(max(low, MIN_PUSH), min(high, MAX_PUSH)))


def fit_exponent(edge_distance: float, push: float, *, sink: bool) -> float:
    """Exponent ``f`` whose curve passes through the midpoint pushed by ``push`` (1 when degenerate)."""
    a = edge_distance
    offset = push / np.sqrt(2.0)
    if a <= 0 or offset <= 0:
        return 1.0
    if sink:
        mid_x, mid_y = a / 2 - offset, a / 2 + offset
        return float(np.log(1 - mid_y / a) / np.log(1 - mid_x / a))
    mid_x, mid_y = a / 2 + offset, a / 2 - offset
    return float(np.log(mid_y / a) / np.log(mid_x / a))


def source_radius(r: np.ndarray, edge: np.ndarray, exponent: float) -> np.ndarray:
    """Source mapping ``R (r / R)^f``, written as ``r^f / R^(f - 1)``."""
    return r**exponent / edge ** (exponent - 1)


def sink_radius(r: np.ndarray, edge: np.ndarray, exponent: float) -> np.ndarray:
    """Sink mapping ``R - R (1 - r / R)^f``, written as ``R - (R - r)^f / R^(f - 1)``."""
    return edge - (edge - r) ** exponent / edge ** (exponent - 1)


def deform_patch(
    patch: np.ndarray, spec: ShapeSpec, shape_mask: np.ndarray, centre: tuple[int, int], exponent: float, *, sink: bool
) -> np.ndarray:
    """Deterministic radial deformation of one bounding-box patch.

    Args:
        patch: float (h, w) image patch under the shape's bounding box.
        spec: the shape (for the analytic edge distance).
        shape_mask: bool (h, w) rasterised shape.
        centre: deformation centre, an index into the patch inside the shape.
        exponent: the curve exponent ``f``.
        sink: sink (pull towards the centre) if true, else source (push away).

    Returns:
        The deformed patch (a new array).
    """
    moved = np.zeros_like(shape_mask)
    moved[1:-1, 1:-1] = shape_mask[1:-1, 1:-1]
    moved[centre] = False
    coords = np.argwhere(moved).T.astype(float)
    c = np.asarray(centre, dtype=float).reshape(2, 1)
    offsets = coords - c
    r = np.linalg.norm(offsets, axis=0)
    directions = offsets / r
    bbox_centre = (np.asarray(shape_mask.shape, dtype=float) - 1.0) / 2.0
    # A pixel can sit a rounding error outside the analytic edge; never let R drop below r.
    edge = np.maximum(distance_to_edge(spec, c[:, 0] - bbox_centre, directions), r)
    new_r = (sink_radius if sink else source_radius)(r, edge, exponent)
    mapping = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in patch.shape], indexing="ij"))
    mapping[:, moved] = c + new_r * directions
    resampled = ndimage.map_coordinates(patch, mapping, order=3, mode="nearest")
    return np.where(moved, resampled, patch)


class RadialDeformationTask(PatchTask):
    """Sink (task 2) or source (task 3) deformation."""

    def __init__(self, *, sink: bool) -> None:
        self.sink = sink
        self.task_id = 2 if sink else 3
        self.name = "sink_deformation" if sink else "source_deformation"

    def sample_params(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Centre (uniform among the shape's pixels), push distance and the fitted exponent."""
        candidates = np.argwhere(shape_mask)
        centre = candidates[rng.integers(len(candidates))]
        centre_t = (int(centre[0]), int(centre[1]))
        edge_distance = mean_edge_distance(shape_mask, centre_t)
        push = sample_push(rng, edge_distance)
        return {"centre": centre_t, "push": push, "exponent": fit_exponent(edge_distance, push, sink=self.sink)}

    def apply_patch(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        params: dict[str, Any],
    ) -> np.ndarray:
        """Deform the patch in place; the anomaly region is the whole shape."""
        box = patch_slices(corner, shape_mask.shape)
        centre = (int(params["centre"][0]), int(params["centre"][1]))
        image[box] = deform_patch(image[box], spec, shape_mask, centre, float(params["exponent"]), sink=self.sink)
        return shape_mask.copy()

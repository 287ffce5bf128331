"""Tasks 0 and 1: Poisson blending of a patch from another slice (reference-method.md §2.4).

For every anomaly a new source slice is drawn uniformly from a :class:`~engine.tasks.base.SliceSource`: the training
slices themselves for task 0, an external non-brain image set for task 1. The source region is a backwards map from
the target patch: a rotation by ``U(-pi/4, pi/4)`` and a scale ``s = 1 + Exp(0.1)`` (or ``1/s`` with probability 1/2),
capped at ``min(0.8 * source_size / rotated_patch_bbox)``. With a source foreground, the region is centred on a
uniformly drawn foreground pixel that keeps it in bounds (a new source is drawn when there is none); without one,
its corner is uniform. The region is resampled onto the patch grid with cubic splines (``mode='constant'``), clipped
to the source's range, and blended with mixed-gradient Poisson editing (:mod:`engine.tasks.poisson`), then clipped
to the current image's range.

The anomaly region is the shape without its bounding-box border (the blender ignores the border) plus every pixel of
the bounding box whose value changed by more than ``CHANGE_THRESHOLD``, as in the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from engine.errors import DataError
from engine.tasks.base import PatchTask, SliceSource, patch_slices
from engine.tasks.poisson import poisson_blend
from engine.tasks.shapes import ShapeSpec, rotation_matrix

CHANGE_THRESHOLD = 1e-3
SCALE_RATE = 0.1
MAX_SOURCE_FRACTION = 0.8
MAX_SOURCE_DRAWS = 100


def source_geometry(
    patch_shape: tuple[int, int], angle: float, scale: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Backwards map from the target patch grid to the source region.

    Returns:
        ``(matrix, offset, region_shape)``: a target pixel ``o`` reads the source region at ``matrix @ o + offset``;
        ``region_shape`` is the extent of the transformed patch corners.
    """
    matrix = scale * rotation_matrix(angle)
    corners = np.array([[0, 0, patch_shape[0], patch_shape[0]], [0, patch_shape[1], 0, patch_shape[1]]], dtype=float)
    moved = matrix @ corners
    low = np.floor(moved.min(axis=1))
    high = np.ceil(moved.max(axis=1))
    region = (high - low).astype(int)
    return matrix, -low, (int(region[0]), int(region[1]))


def rotated_extent(patch_shape: tuple[int, int], angle: float) -> np.ndarray:
    """Bounding-box size of the patch corners rotated by ``angle`` (before scaling)."""
    return np.array(source_geometry(patch_shape, angle, 1.0)[2], dtype=float)


def sample_source_corner(
    rng: np.random.Generator, source_shape: tuple[int, int], fg: np.ndarray | None, region: tuple[int, int]
) -> tuple[int, int] | None:
    """Top-left corner of the source region, or ``None`` if no foreground-centred placement fits."""
    region_arr = np.asarray(region)
    max_corner = np.asarray(source_shape) - region_arr
    if np.any(max_corner < 0):
        return None
    if fg is None:
        corner = rng.integers(0, max_corner, endpoint=True)
        return int(corner[0]), int(corner[1])
    half = region_arr // 2
    centres = np.argwhere(fg)
    ok = np.all(centres - half >= 0, axis=1) & np.all(centres - half <= max_corner, axis=1)
    valid = centres[ok]
    if len(valid) == 0:
        return None
    corner = valid[rng.integers(len(valid))] - half
    return int(corner[0]), int(corner[1])


def extract_source_patch(
    source: np.ndarray, patch_shape: tuple[int, int], angle: float, scale: float, corner: tuple[int, int]
) -> np.ndarray:
    """Resample the source region onto the target patch grid, clipped to the source's range."""
    matrix, offset, region = source_geometry(patch_shape, angle, scale)
    crop = source[corner[0] : corner[0] + region[0], corner[1] : corner[1] + region[1]]
    patch = ndimage.affine_transform(crop, matrix, offset=offset, output_shape=patch_shape, order=3, mode="constant")
    return np.clip(patch, source.min(), source.max())


def _load(source: SliceSource, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    image, fg = source.get(index)
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise DataError(f"blending source slice {index} is not 2-D: shape {image.shape}")
    return image, (None if fg is None else np.asarray(fg, dtype=bool))


class PoissonBlendTask(PatchTask):
    """Mixed-gradient Poisson blending of a patch from a slice source (task 0 or 1)."""

    def __init__(self, task_id: int, name: str, source: SliceSource, *, mix_gradients: bool = True) -> None:
        if len(source) == 0:
            raise DataError(f"blending source for task {task_id} ({name}) is empty")
        self.task_id = task_id
        self.name = name
        self.source = source
        self.mix_gradients = mix_gradients

    def sample_params(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Source index, rotation, scale and source corner."""
        patch_shape = (int(shape_mask.shape[0]), int(shape_mask.shape[1]))
        for _ in range(MAX_SOURCE_DRAWS):
            index = int(rng.integers(len(self.source)))
            source, fg = _load(self.source, index)
            angle = float(rng.uniform(-np.pi / 4, np.pi / 4))
            max_scale = float(
                np.min(MAX_SOURCE_FRACTION * np.asarray(source.shape) / rotated_extent(patch_shape, angle))
            )
            change = 1.0 + rng.exponential(SCALE_RATE)
            raw = change if rng.random() < 0.5 else 1.0 / change
            scale = float(min(raw, max_scale))
            region = source_geometry(patch_shape, angle, scale)[2]
            source_corner = sample_source_corner(rng, source.shape, fg, region)
            if source_corner is not None:
                return {"source_index": index, "angle": angle, "scale": scale, "source_corner": source_corner}
        raise DataError(f"no usable source region for task {self.task_id} after {MAX_SOURCE_DRAWS} source draws")

    def apply_patch(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        params: dict[str, Any],
    ) -> np.ndarray:
        """Blend the recorded source region into the patch; returns the blended and changed pixels."""
        patch_shape = (int(shape_mask.shape[0]), int(shape_mask.shape[1]))
        source, _ = _load(self.source, int(params["source_index"]))
        source_corner = (int(params["source_corner"][0]), int(params["source_corner"][1]))
        patch = extract_source_patch(source, patch_shape, float(params["angle"]), float(params["scale"]), source_corner)
        box = patch_slices(corner, patch_shape)
        before = image[box].copy()
        blended = poisson_blend(before, patch, shape_mask, mix_gradients=self.mix_gradients)
        image[box] = np.clip(blended, image.min(), image.max())
        region = np.zeros_like(shape_mask)
        region[1:-1, 1:-1] = shape_mask[1:-1, 1:-1]
        return region | (np.abs(image[box] - before) > CHANGE_THRESHOLD)

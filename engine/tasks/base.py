"""Shared types and the common anomaly driver of the synthetic tasks (reference-method.md §2.1).

Every task follows the same loop, implemented once in :class:`PatchTask`:

1. Size bounds come from the foreground component with the largest bounding box (full connectivity), of sides
   ``S``: ``lb = ceil(0.06 S)`` and ``ub = max(ceil(0.8 S), lb + 1)`` per axis.
2. Up to 4 anomalies are applied; after each one the loop stops with probability 0.5 (so 1, 2, 3, 4 anomalies occur
   with probability 1/2, 1/4, 1/8, 1/8).
3. Each anomaly draws a shape (:mod:`engine.tasks.shapes`) and a top-left corner. The corner is drawn uniformly
   (inclusive) so that the shape's bounding box overlaps the bounding box of a foreground component, chosen with
   probability proportional to its bounding-box area, and stays inside the image. A corner is accepted when at least
   the target share of the shape lies in the foreground; the target starts at 0.25 and halves every 1000 failures,
   and after 5000 failures :class:`PlacementError` is raised.
4. The task changes the image inside the shape's bounding box; then the whole image is clipped to the original
   ``[min, max]``.

Tasks sample all their random parameters first and then call a deterministic twin, so :meth:`PatchTask.replay`
rebuilds a corruption from its recorded parameters without any random generator. The shape is not intersected with
the foreground (the paper's ``fg_only=False``), so anomalies may spill into the background. The reference's
sanity assertion on the minimum shape area is not reproduced (it never changes the output).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from engine.errors import EngineError, VolumeError
from engine.tasks.shapes import ShapeSpec, sample_shape

MIN_ANOMALY_PROP = 0.06
MAX_ANOMALY_PROP = 0.8
MAX_ANOMALIES = 4
STOP_PROBABILITY = 0.5
INITIAL_OVERLAP = 0.5
OVERLAP_HALVING_PERIOD = 1000
MAX_PLACEMENT_FAILURES = 5000


class PlacementError(EngineError, RuntimeError):
    """No location with enough of the anomaly inside the foreground was found."""


@dataclass(frozen=True, eq=False)
class Corruption:
    """The result of applying a task (or the identity) to one slice.

    Attributes:
        image: float32 (H, W) corrupted slice.
        mask: bool (H, W) union of the anomaly regions actually applied; empty only for the identity.
        task_id: the task's id, or ``None`` for the identity pair.
        params: per anomaly, everything that was sampled (shape, corner, task parameters), so that the task's
            ``replay`` reproduces ``image`` and ``mask`` exactly without a random generator.
    """

    image: np.ndarray
    mask: np.ndarray
    task_id: int | None
    params: tuple[dict[str, Any], ...]


@runtime_checkable
class SliceSource(Protocol):
    """Where Poisson-blending patches come from: a fixed, indexable set of 2-D slices."""

    def __len__(self) -> int:
        """Number of slices."""
        ...

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Slice ``index`` as (float32 2-D image, boolean foreground of the same shape or ``None``)."""
        ...


@runtime_checkable
class AnomalyTask(Protocol):
    """A synthetic anomaly task: corrupts a slice and can replay a recorded corruption."""

    task_id: int
    name: str

    def __call__(self, image: np.ndarray, foreground: np.ndarray | None, rng: np.random.Generator) -> Corruption:
        """Corrupt ``image`` with freshly sampled anomalies."""
        ...

    def replay(
        self, image: np.ndarray, foreground: np.ndarray | None, params: tuple[dict[str, Any], ...]
    ) -> Corruption:
        """Apply the anomalies described by ``params`` (from an earlier call) to ``image``."""
        ...


@dataclass(frozen=True)
class Region:
    """A foreground connected component, by its bounding box."""

    start: tuple[int, int]
    stop: tuple[int, int]

    @property
    def area_bbox(self) -> int:
        """Area of the bounding box."""
        return (self.stop[0] - self.start[0]) * (self.stop[1] - self.start[1])


def check_inputs(image: np.ndarray, foreground: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a slice and its foreground; the default foreground is ``image > image.min()``.

    Returns:
        The image as float64 (a fresh copy) and the foreground as bool.

    Raises:
        VolumeError: if the image is not 2-D, the mask does not match it, or the foreground is empty.
    """
    array = np.asarray(image)
    if array.ndim != 2:
        raise VolumeError(f"anomaly tasks need a 2-D slice, got an array of shape {array.shape}")
    work = array.astype(np.float64, copy=True)
    fg = work > work.min() if foreground is None else np.asarray(foreground, dtype=bool)
    if fg.shape != work.shape:
        raise VolumeError(f"foreground mask shape {fg.shape} does not match the slice shape {work.shape}")
    if not fg.any():
        raise VolumeError("slice foreground is empty: there is nowhere to place an anomaly")
    return work, fg


def foreground_regions(foreground: np.ndarray) -> list[Region]:
    """Connected components of the foreground (8-connectivity, raster order), by bounding box."""
    labels, _ = ndimage.label(foreground, structure=np.ones((3, 3), dtype=bool))
    regions = []
    for box in ndimage.find_objects(labels):
        if box is not None:
            regions.append(Region((box[0].start, box[1].start), (box[0].stop, box[1].stop)))
    return regions


def size_bounds(regions: list[Region]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Per-axis ``(lb, ub)`` shape-size bounds from the region with the largest bounding box."""
    biggest = max(regions, key=lambda r: r.area_bbox)
    bounds = []
    for axis in range(2):
        side = biggest.stop[axis] - biggest.start[axis]
        lower = math.ceil(MIN_ANOMALY_PROP * side)
        upper = max(math.ceil(MAX_ANOMALY_PROP * side), lower + 1)
        bounds.append((lower, upper))
    return bounds[0], bounds[1]


def find_location(
    shape_mask: np.ndarray, foreground: np.ndarray, regions: list[Region], rng: np.random.Generator
) -> tuple[int, int]:
    """Draw a top-left corner for ``shape_mask`` with enough of the shape inside the foreground.

    Raises:
        PlacementError: after 5000 rejected corners.
    """
    image_shape = np.array(foreground.shape)
    patch_shape = np.array(shape_mask.shape)
    max_corner = image_shape - patch_shape
    if np.any(max_corner < 0):
        raise PlacementError(f"anomaly of size {tuple(patch_shape)} does not fit a slice of {tuple(image_shape)}")
    areas = np.array([r.area_bbox for r in regions], dtype=float)
    weights = areas / areas.sum()
    shape_area = shape_mask.sum()
    target = INITIAL_OVERLAP
    failures = 0
    while True:
        if failures % OVERLAP_HALVING_PERIOD == 0:
            if failures == MAX_PLACEMENT_FAILURES:
                raise PlacementError(
                    f"no anomaly location with {target:.4f} of the shape in the foreground after {failures} tries"
                )
            target /= 2
        region = regions[rng.choice(len(regions), p=weights)]
        low = np.maximum(0, np.array(region.start) - patch_shape + 1)
        high = np.minimum(max_corner, np.array(region.stop) - 1)
        corner = rng.integers(low, high, endpoint=True)
        window = foreground[corner[0] : corner[0] + patch_shape[0], corner[1] : corner[1] + patch_shape[1]]
        if np.sum(window & shape_mask) / shape_area >= target:
            return int(corner[0]), int(corner[1])
        failures += 1


def patch_slices(corner: tuple[int, int], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Slices of the bounding box at ``corner`` with the given shape."""
    return slice(corner[0], corner[0] + shape[0]), slice(corner[1], corner[1] + shape[1])


class PatchTask(ABC):
    """Common driver: shapes, placement, repetition and clipping; subclasses change one patch.

    Subclasses implement :meth:`sample_params` (draw the task's own parameters for one anomaly) and
    :meth:`apply_patch` (deterministically change the image inside one anomaly's bounding box).
    """

    task_id: int
    name: str

    def __call__(self, image: np.ndarray, foreground: np.ndarray | None, rng: np.random.Generator) -> Corruption:
        """Corrupt ``image`` with 1-4 freshly sampled anomalies.

        Args:
            image: float (H, W) slice.
            foreground: bool (H, W) foreground, or ``None`` for ``image > image.min()``.
            rng: the only source of randomness.

        Returns:
            The corruption with every sampled parameter recorded.
        """
        work, fg = check_inputs(image, foreground)
        low, high = work.min(), work.max()
        regions = foreground_regions(fg)
        bounds = size_bounds(regions)
        mask = np.zeros(work.shape, dtype=bool)
        params: list[dict[str, Any]] = []
        for _ in range(MAX_ANOMALIES):
            spec = sample_shape(rng, bounds, work.shape)
            shape_mask = spec.rasterise()
            corner = find_location(shape_mask, fg, regions, rng)
            task_params = self.sample_params(work, spec, shape_mask, corner, rng)
            record = {"shape": spec.to_dict(), "corner": corner, **task_params}
            self._apply_one(work, mask, spec, shape_mask, corner, record, low, high)
            params.append(record)
            if rng.random() < STOP_PROBABILITY:
                break
        return Corruption(work.astype(np.float32), mask, self.task_id, tuple(params))

    def replay(
        self, image: np.ndarray, foreground: np.ndarray | None, params: tuple[dict[str, Any], ...]
    ) -> Corruption:
        """Re-apply recorded anomalies; the output equals the original call's output exactly."""
        work, _ = check_inputs(image, foreground)
        low, high = work.min(), work.max()
        mask = np.zeros(work.shape, dtype=bool)
        for record in params:
            spec = ShapeSpec.from_dict(record["shape"])
            corner = (int(record["corner"][0]), int(record["corner"][1]))
            self._apply_one(work, mask, spec, spec.rasterise(), corner, record, low, high)
        return Corruption(work.astype(np.float32), mask, self.task_id, tuple(params))

    def _apply_one(
        self,
        work: np.ndarray,
        mask: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        record: dict[str, Any],
        low: float,
        high: float,
    ) -> None:
        changed = self.apply_patch(work, spec, shape_mask, corner, record)
        np.clip(work, low, high, out=work)
        mask[patch_slices(corner, shape_mask.shape)] |= changed

    @abstractmethod
    def sample_params(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Draw this task's parameters for one anomaly (the image is the current, partly corrupted one)."""

    @abstractmethod
    def apply_patch(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        params: dict[str, Any],
    ) -> np.ndarray:
        """Change ``image`` (float64, in place) inside the anomaly's bounding box.

        Returns:
            The bool mask, on the bounding-box grid, of the region this anomaly marks as anomalous.
        """

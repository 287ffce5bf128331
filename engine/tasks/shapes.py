"""Anomaly shapes: sheared, rotated ellipses and rectangles (Baugh et al.'s ``EitherDeformedHypershapePatchMaker``).

A shape is drawn in three steps (reference-method.md §2.2):

1. Kind: ellipse or rectangle, with probability 1/2 each.
2. Side lengths per axis ``n = int(clip((0.03 + Gamma(k=2, theta=0.1)) * D, lb, ub))``, where ``D`` is the full image
   side on that axis and ``[lb, ub]`` the size bounds from the foreground bounding box.
3. A linear map ``M = R(angle) @ [[1, s0], [s1, 1]]`` with shears ``s ~ N(0, 0.2)`` and ``angle ~ U(-pi/2, pi/2)``,
   scaled down uniformly when the transformed bounding box would exceed ``ub`` on some axis.

The mask is rasterised on the integer grid of the transformed bounding box: a grid point ``x`` (relative to the
shape centre) is inside when ``M^-1 x`` passes the aligned test (ellipse ``sum((y / (n/2))^2) <= 1``, rectangle
``|y| <= n/2``). The grid is symmetric about the centre, so the centre sits at array index ``(shape - 1) / 2``.
:func:`distance_to_edge` intersects rays from inside the shape with its edge analytically (used by the
deformation tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ShapeKind = Literal["ellipse", "rectangle"]

GAMMA_OFFSET = 0.03
GAMMA_SHAPE = 2.0
GAMMA_SCALE = 0.1
SHEAR_STD = 0.2


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that defines one anomaly shape; :meth:`rasterise` turns it into a mask.

    Attributes:
        kind: ``"ellipse"`` or ``"rectangle"``.
        size: aligned side lengths (before shear, rotation and scaling), per axis, in pixels.
        shear: off-diagonal entries ``(M[0, 1], M[1, 0])`` of the shear matrix.
        angle: rotation angle in radians.
        scale: uniform factor applied last (1 unless the shape had to shrink to fit the upper size bound).
    """

    kind: ShapeKind
    size: tuple[int, int]
    shear: tuple[float, float]
    angle: float
    scale: float = 1.0

    @property
    def matrix(self) -> np.ndarray:
        """The 2x2 map from aligned shape coordinates to image-grid offsets from the shape centre."""
        shear = np.array([[1.0, self.shear[0]], [self.shear[1], 1.0]])
        return self.scale * (rotation_matrix(self.angle) @ shear)

    def grid_extent(self) -> np.ndarray:
        """Upper grid coordinate ``e`` per axis: the mask covers offsets ``-e .. e`` from the centre."""
        return _grid_extent(self.matrix, np.asarray(self.size, dtype=float))

    def rasterise(self) -> np.ndarray:
        """The boolean mask of the shape on its own bounding-box grid, shape ``2 * grid_extent() + 1``."""
        extent = self.grid_extent()
        axes = [np.arange(-e, e + 1, dtype=float) for e in extent]
        grid = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(2, -1)
        aligned = np.linalg.solve(self.matrix, grid)
        half = np.asarray(self.size, dtype=float).reshape(2, 1) / 2.0
        if self.kind == "ellipse":
            inside = np.sum((aligned / half) ** 2, axis=0) <= 1.0
        else:
            inside = np.all(np.abs(aligned) <= half, axis=0)
        return inside.reshape(tuple(int(2 * e + 1) for e in extent))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form stored in :class:`~engine.tasks.base.Corruption` params."""
        return {"kind": self.kind, "size": self.size, "shear": self.shear, "angle": self.angle, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kind=data["kind"],
            size=(int(data["size"][0]), int(data["size"][1])),
            shear=(float(data["shear"][0]), float(data["shear"][1])),
            angle=float(data["angle"]),
            scale=float(data["scale"]),
        )


def rotation_matrix(angle: float) -> np.ndarray:
    """Counter-clockwise 2-D rotation ``[[cos, -sin], [sin, cos]]``."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _grid_extent(matrix: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Half-extent (as integers) of the grid that holds the transformed corners ``+-(size - 1) / 2``."""
    half = (size - 1.0) / 2.0
    corners = np.array([[half[0], half[0], -half[0], -half[0]], [half[1], -half[1], half[1], -half[1]]])
    moved = matrix @ corners
    # The corner set is symmetric about 0, so floor(min) == -ceil(max) and the grid is centred.
    return np.ceil(np.max(moved, axis=1)).astype(int)


def sample_side(rng: np.random.Generator, lower: int, upper: int, image_side: int) -> int:
    """One aligned side length: ``int(clip((0.03 + Gamma(2, 0.1)) * image_side, lower, upper))``."""
    value = (GAMMA_OFFSET + rng.gamma(GAMMA_SHAPE, GAMMA_SCALE)) * image_side
    return int(np.clip(value, lower, upper))


def sample_shape(
    rng: np.random.Generator, bounds: tuple[tuple[int, int], tuple[int, int]], image_shape: tuple[int, int]
) -> ShapeSpec:
    """Draw a random shape whose bounding box fits the upper size bounds.

    Args:
        rng: the random generator.
        bounds: ``((lb0, ub0), (lb1, ub1))`` size bounds per axis.
        image_shape: the full image shape; its sides scale the side-length distribution.

    Returns:
        The sampled shape.
    """
    kind: ShapeKind = "ellipse" if rng.random() < 0.5 else "rectangle"
    size = np.array([sample_side(rng, lb, ub, d) for (lb, ub), d in zip(bounds, image_shape, strict=True)])
    size[size < 1] = 1
    if np.all(size == 1):
        size[rng.integers(2)] = 2
    shear = (float(rng.normal(0.0, SHEAR_STD)), float(rng.normal(0.0, SHEAR_STD)))
    angle = float(rng.uniform(-np.pi / 2, np.pi / 2))
    spec = ShapeSpec(kind=kind, size=(int(size[0]), int(size[1])), shear=shear, angle=angle)
    grid_shape = 2 * spec.grid_extent() + 1
    upper = np.array([ub for _, ub in bounds], dtype=float)
    if np.any(grid_shape > upper):
        spec = ShapeSpec(kind, spec.size, shear, angle, scale=float(1.0 / np.max(grid_shape / upper)))
    return spec


def distance_to_edge(spec: ShapeSpec, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Distance from ``origin`` to the shape's edge along each direction, computed analytically.

    Args:
        spec: the shape.
        origin: (2,) start point, as an offset from the shape centre in grid units; it must lie inside the shape.
        directions: (2, N) unit direction vectors in grid units.

    Returns:
        (N,) distances ``t`` such that ``origin + t * direction`` lies on the shape's edge.
    """
    inverse = np.linalg.inv(spec.matrix)
    o = (inverse @ np.asarray(origin, dtype=float)).reshape(2, 1)
    d = inverse @ directions
    half = np.asarray(spec.size, dtype=float).reshape(2, 1) / 2.0
    # Solve in aligned space for the ray parameter s of o + s * d; because d = M^-1 u with |u| = 1, s is also the
    # distance along u in grid units.
    if spec.kind == "ellipse":
        a = np.sum(d**2 / half**2, axis=0)
        b = 2.0 * np.sum(o * d / half**2, axis=0)
        c = np.sum(o**2 / half**2, axis=0) - 1.0
        disc = np.maximum(b**2 - 4.0 * a * c, 0.0)
        return np.maximum((-b + np.sqrt(disc)) / (2.0 * a), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_upper = (half - o) / d
        to_lower = (-half - o) / d
    hits = np.where(d > 0, to_upper, np.where(d < 0, to_lower, np.inf))
    return np.maximum(np.min(hits, axis=0), 0.0)

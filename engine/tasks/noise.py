"""Non-tileable 2-D Perlin noise and its fractal sum, split into sampling and a deterministic evaluation.

Perlin noise here (as in the reference's ``TU/noise_variants.py``): pixel ``k`` of an axis with ``s`` pixels and
``r`` intervals sits at lattice coordinate ``k r / s``; each lattice point holds a unit gradient (a normalised
standard normal vector), the four surrounding gradients are dotted with the offsets to their corners, and the dots are
blended with the smootherstep ``6t^5 - 15t^4 + 10t^3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class NoiseLayer:
    """One Perlin octave.

    Attributes:
        intervals: number of lattice intervals across the patch, per axis (may be fractional).
        gradients: (ceil(intervals[0] + 1), ceil(intervals[1] + 1), 2) unit gradient vectors.
        amplitude: weight of this octave in the fractal sum.
    """

    intervals: tuple[float, float]
    gradients: np.ndarray
    amplitude: float


def sample_gradients(rng: np.random.Generator, intervals: tuple[float, float]) -> np.ndarray:
    """Unit gradient vectors on a lattice covering ``intervals`` (normalised standard normals)."""
    shape = tuple(int(np.ceil(r + 1)) for r in intervals) + (2,)
    vectors = rng.standard_normal(shape)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def smootherstep(t: np.ndarray) -> np.ndarray:
    """``6t^5 - 15t^4 + 10t^3``."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin(shape: tuple[int, int], intervals: tuple[float, float], gradients: np.ndarray) -> np.ndarray:
    """Evaluate Perlin noise with the given lattice gradients on a ``shape`` grid."""
    pos = [np.arange(s, dtype=float) * r / s for s, r in zip(shape, intervals, strict=True)]
    cell = [np.floor(p).astype(int) for p in pos]
    frac = [p - c for p, c in zip(pos, cell, strict=True)]
    i0, j0 = np.meshgrid(cell[0], cell[1], indexing="ij")
    f0, f1 = np.meshgrid(frac[0], frac[1], indexing="ij")

    def corner(di: int, dj: int) -> np.ndarray:
        g = gradients[i0 + di, j0 + dj]
        return g[..., 0] * (f0 - di) + g[..., 1] * (f1 - dj)

    t0, t1 = smootherstep(f0), smootherstep(f1)
    along0_low = corner(0, 0) * (1 - t0) + corner(1, 0) * t0
    along0_high = corner(0, 1) * (1 - t0) + corner(1, 1) * t0
    return along0_low * (1 - t1) + along0_high * t1


def fractal_noise(shape: tuple[int, int], layers: tuple[NoiseLayer, ...]) -> np.ndarray:
    """Weighted sum of Perlin octaves."""
    total = np.zeros(shape)
    for layer in layers:
        total += layer.amplitude * perlin(shape, layer.intervals, layer.gradients)
    return total


def sample_fractal_layers(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[NoiseLayer, ...]:
    """Draw the octaves of the intensity task's noise (reference-method.md §2.5).

    With ``m = mean(shape) / 3``: first layer ``i1 = 1 + Exp((m - 1) / 4.5)`` intervals; number of layers
    ``min(floor(log2(m / i1)) + 1, 1 + Poisson(1))`` (at least one, and no new layer once ``m`` is reached); each
    next layer ``i_{k+1} = 2 i_k N(1, 0.1)``; per-axis intervals ``i_k N(1, 0.1)``; amplitudes ``2^-k``.
    """
    max_intervals = float(np.mean(shape)) / 3.0
    first = 1.0 + rng.exponential(max(max_intervals - 1.0, 0.0) / 4.5)
    max_layers = np.floor(np.log2(max_intervals / first)) + 1
    wanted = min(max_layers, 1 + rng.poisson(1.0))
    cores = [first]
    while len(cores) < wanted and cores[-1] < max_intervals:
        cores.append(cores[-1] * 2.0 * rng.normal(1.0, 0.1))
    layers = []
    for k, core in enumerate(cores):
        factors = rng.normal(1.0, 0.1, size=2)
        intervals = (float(core * factors[0]), float(core * factors[1]))
        layers.append(NoiseLayer(intervals, sample_gradients(rng, intervals), 2.0**-k))
    return tuple(layers)

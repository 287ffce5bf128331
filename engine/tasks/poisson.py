"""Poisson image blending with a discrete sine transform solver (Pérez et al. 2003; reference-method.md §2.4).

This restates what ``pietorch.blend_dst_numpy`` computes (the paper's blender), without depending on it:

1. Work on the target block under the patch's bounding box; the mask's outermost rows and columns are cleared.
2. Forward-difference gradients of target and source along each axis. With mixed gradients, the target's gradient is
   kept where ``|g_target| >= |g_source|`` and the source's otherwise, per axis and per pixel.
3. Guidance field: the target's gradient outside the mask, the chosen gradient inside it (a pixel owns the forward
   difference to its next neighbour). Its backward-difference divergence gives the Laplacian on the block interior.
4. Solve the 5-point Poisson equation on the interior with the block border as Dirichlet values, using the
   type-I discrete sine transform (the eigenbasis of the Dirichlet Laplacian).

The solve covers the whole interior of the block, so where the guidance field is not a gradient field (mixed or
source gradients) pixels outside the mask but inside the block change slightly; the blending task marks those that
change by more than 1e-3 as anomalous, as the reference does.
"""

from __future__ import annotations

import numpy as np
from scipy import fft


def dirichlet_eigenvalues(n: int) -> np.ndarray:
    """Eigenvalues ``2 cos(pi k / (n + 1)) - 2``, ``k = 1..n``, of the 1-D second difference with zero ends."""
    return 2.0 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)) - 2.0


def solve_poisson_interior(laplacian: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Solve ``Delta u = laplacian`` on the interior of ``block`` with its border as boundary values.

    ``Delta`` is the 5-point Laplacian ``u[i-1, j] + u[i+1, j] + u[i, j-1] + u[i, j+1] - 4 u[i, j]``.

    Args:
        laplacian: (h - 2, w - 2) right-hand side on the interior pixels.
        block: (h, w) array; only its border rows and columns are read.

    Returns:
        A copy of ``block`` whose interior holds the solution.
    """
    rows, cols = block.shape[0] - 2, block.shape[1] - 2
    if laplacian.shape != (rows, cols):
        raise ValueError(f"laplacian shape {laplacian.shape} does not match the block interior {(rows, cols)}")
    result = np.array(block, dtype=np.float64, copy=True)
    if rows <= 0 or cols <= 0:
        return result
    # The border enters the interior equations as known neighbours: move them to the right-hand side.
    rhs = np.array(laplacian, dtype=np.float64, copy=True)
    rhs[0, :] -= result[0, 1:-1]
    rhs[-1, :] -= result[-1, 1:-1]
    rhs[:, 0] -= result[1:-1, 0]
    rhs[:, -1] -= result[1:-1, -1]
    eigen = dirichlet_eigenvalues(rows)[:, None] + dirichlet_eigenvalues(cols)[None, :]
    spectrum = fft.dstn(rhs, type=1) / eigen
    result[1:-1, 1:-1] = fft.idstn(spectrum, type=1)
    return result


def poisson_blend(
    target: np.ndarray, source: np.ndarray, mask: np.ndarray, *, mix_gradients: bool = True
) -> np.ndarray:
    """Blend ``source`` into ``target`` inside ``mask`` (all three the same 2-D shape).

    Args:
        target: the block of the image being changed.
        source: the patch to blend in.
        mask: where the source's gradients may be used; its border rows and columns are ignored.
        mix_gradients: keep the stronger of the two gradients (``True``, the paper) or always use the source's.

    Returns:
        The blended block (float64); its border equals the target's.
    """
    target = np.asarray(target, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    inner = np.zeros(mask.shape, dtype=bool)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1]
    divergence = np.zeros((target.shape[0] - 2, target.shape[1] - 2))
    for axis in (0, 1):
        grad_t = np.diff(target, axis=axis)
        grad_s = np.diff(source, axis=axis)
        if mix_gradients:
            grad_s = np.where(np.abs(grad_t) >= np.abs(grad_s), grad_t, grad_s)
        owner = inner[:-1, :] if axis == 0 else inner[:, :-1]
        guidance = np.where(owner, grad_s, grad_t)
        # Backward difference of the forward-difference field, on interior pixels only.
        if axis == 0:
            divergence += guidance[1:, 1:-1] - guidance[:-1, 1:-1]
        else:
            divergence += guidance[1:-1, 1:] - guidance[1:-1, :-1]
    return solve_poisson_interior(divergence, target)

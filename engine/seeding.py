"""Seeds derived from integers, so that every random draw in condiff is named by what it is for.

A seed is derived from a base seed and a *stream* (an :class:`Stream` member naming the purpose), followed by the
indices that single the draw out (fold, step, image). The stream values are part of every trained member's
identity: changing one changes the batches a seed gives, so they are fixed here once.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """The purposes random draws are made for (values are fixed: they define what a seed reproduces)."""

    INIT = 1
    """A member's initial weights (with the fold)."""
    VALIDATION = 2
    """The fixed held-out-task validation pairs."""
    CHECKS = 3
    """The fixed pairs of the healthy-restoration and removal checks."""
    BATCHES = 4
    """The training batch of a step (with the fold and the step)."""
    CHECK_NOISE = 5
    """The starting noise of the checks' restorations."""
    SYNTHETIC = 6
    """The synthetic benchmark run during training (with the fold)."""
    SAMPLER_STEPS = 7
    """A stochastic sampler's per-step noise for one slice (derived from the slice's seed)."""
    BENCHMARK = 7_001
    """The synthetic benchmark's corruptions and controls."""
    DIFFUSION = 10_000
    """Offset added to an image index for its diffusion timestep and noise (inside a batch's seed)."""


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    words = [w for p in parts for w in (int(p) & 0xFFFF_FFFF, (int(p) >> 32) & 0xFFFF_FFFF)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF


def slice_seed(seed: int, fold: int, native_index: int) -> int:
    """The starting-noise seed of one slice for one member: it depends on nothing else, so a slice's result does not
    depend on the batch or the run it was analysed in."""
    words = [int(seed) & 0xFFFF_FFFF, int(fold), int(native_index)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF

"""Seeds derived from integers, so that every random draw in condiff is named by what it is for."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    words = [w for p in parts for w in (int(p) & 0xFFFF_FFFF, (int(p) >> 32) & 0xFFFF_FFFF)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF

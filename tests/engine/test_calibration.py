"""Calibration arithmetic: the healthy threshold never flags more than the false-positive rate asked for."""

from __future__ import annotations

import numpy as np
import pytest

from engine.calibration import threshold_for_fpr


@pytest.mark.parametrize("seed", range(20))
def test_threshold_flags_at_most_the_rate_and_is_the_lowest_such(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 20_000))
    values = rng.gamma(2.0, 0.1, n).astype(np.float32)
    if seed % 2:  # heavy ties, as maps clipped or quantised give
        values = np.round(values, 2).astype(np.float32)
    fpr = float(rng.choice([0.001, 0.01, 0.05, 0.2]))
    t = np.float32(threshold_for_fpr(values, fpr))
    flagged = int((values >= t).sum())
    assert flagged <= np.floor(fpr * n)
    # one float32 step lower would flag too much: no lower threshold keeps the promise
    lower = np.nextafter(t, np.float32(-np.inf))
    assert (values >= lower).sum() > np.floor(fpr * n)


def test_all_equal_values_flag_nothing() -> None:
    values = np.full(1000, 0.25, np.float32)
    t = threshold_for_fpr(values, 0.01)
    assert t > 0.25
    assert not (values >= np.float32(t)).any()


def test_the_rate_found_on_real_sized_pools_stays_below_the_target() -> None:
    # a quantile-based threshold once reported 1.0000186 % on a healthy pool of this order of size
    values = np.random.default_rng(0).random(4_853_760, dtype=np.float32)
    t = np.float32(threshold_for_fpr(values, 0.01))
    assert (values >= t).mean() <= 0.01

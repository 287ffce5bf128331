"""Filling the slices a stride skipped: linear interpolation, along the slice axis on the native grid, between the
analysed slices of an :class:`engine.results.AnomalyResult`.

A whole-volume analysis restores every ``stride``-th brain slice and fills the ones between with
:func:`fill_between_slices`; the viewer, which runs the same planned slices in chunks, fills with the same function,
so both give the same maps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.results import AnomalyResult


def fill_between_slices(result: AnomalyResult, brain: np.ndarray, *, copy: bool = True) -> AnomalyResult:
    """Fill the slices between analysed ones by linear interpolation along the slice axis, on the native grid.

    This is what a whole-volume analysis does for the slices its stride skips; a caller that analysed the planned
    slices in chunks (:meth:`engine.Ensemble.plan_slices`) calls it to get the same kind of result. Maps and spread
    are interpolated inside ``brain`` (zero outside); the restoration is interpolated inside ``brain`` and keeps the
    result's values elsewhere; slice scores of filled slices stay NaN (they were not analysed).

    Args:
        result: a result whose ``analysed`` slices hold values.
        brain: bool brain mask on the result's grid (the one the analysis used).
        copy: False fills the result's own arrays in place, for a caller that has just made them and holds no other
            reference (:meth:`engine.Ensemble.analyse`); the default leaves ``result`` untouched.

    Returns:
        A new result whose ``covered`` includes every brain slice between the first and last analysed slice.
    """
    axis = result.slice_axis
    done = np.flatnonzero(np.asarray(result.analysed, dtype=bool))
    if done.size < 2:
        return result
    brain = np.asarray(brain, dtype=bool)
    if brain.shape != result.anomaly_map.shape:
        raise ValueError(f"brain mask shape {brain.shape} differs from the result's {result.anomaly_map.shape}")
    n = result.analysed.size
    fill = np.zeros(n, dtype=bool)
    fill[done[0]:done[-1] + 1] = True
    has_brain = brain.any(axis=tuple(a for a in range(3) if a != axis))
    fill &= ~np.asarray(result.analysed, dtype=bool) & has_brain
    if not fill.any():
        return dataclasses.replace(result, covered=np.asarray(result.covered, dtype=bool) | np.asarray(result.analysed))
    targets = np.flatnonzero(fill)
    upper = np.searchsorted(done, targets)
    lower_k, upper_k = done[upper - 1], done[upper]
    weight = ((targets - lower_k) / (upper_k - lower_k)).astype(np.float32)

    brain_first = np.moveaxis(brain, axis, 0)

    def filled(values: np.ndarray, zero_outside: bool) -> np.ndarray:
        # One filled slice at a time: whole-volume temporaries (gathers of every target slice) cost 4-10x more
        # here, in page faults and strided copies, than the arithmetic itself. Same float32 operations, same values.
        own = np.asarray(values, dtype=np.float32)
        if copy or (own is values and not own.flags.writeable):
            own = own.copy()
        moved = np.moveaxis(own, axis, 0)
        for k, lower, upper_slice, w in zip(targets, lower_k, upper_k, weight, strict=True):
            mixed = (1 - w) * moved[lower] + w * moved[upper_slice]
            if zero_outside:
                moved[k] = np.where(brain_first[k], mixed, np.float32(0))
            else:
                np.copyto(moved[k], mixed, where=brain_first[k])
        return own

    return dataclasses.replace(
        result,
        anomaly_map=filled(result.anomaly_map, True),
        member_spread=filled(result.member_spread, True),
        restored=filled(result.restored, False),
        covered=np.asarray(result.covered, dtype=bool) | fill | np.asarray(result.analysed, dtype=bool),
    )

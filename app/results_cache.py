"""Cache of analysis results per scan and settings, merging partial (per-slice) results (no Qt).

Analysing slice k and then slice j of the same scan with the same model and settings gives one result holding both;
going back to an analysed slice needs no new run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


def merge_results(old: Any, new: Any) -> Any:
    """Combine two results of the same scan: the slices analysed in ``new`` replace those of ``old``.

    Args:
        old: an ``engine.AnomalyResult`` or None.
        new: an ``engine.AnomalyResult`` on the same grid and slice axis.

    Returns:
        A new result (``dataclasses.replace`` of ``new``) whose arrays hold the union of the analysed slices.
    """
    if old is None:
        return new
    if old.anomaly_map.shape != new.anomaly_map.shape or old.slice_axis != new.slice_axis:
        raise ValueError("cannot merge results of different grids or slice axes")
    axis = new.slice_axis
    old_analysed = np.asarray(old.analysed, dtype=bool)
    new_analysed = np.asarray(new.analysed, dtype=bool)
    # Slices the new run restored win; slices it only interpolated win unless the old run restored them.
    take_new = new_analysed | (covered(new) & ~old_analysed)
    shape = [1, 1, 1]
    shape[axis] = take_new.size
    sel = take_new.reshape(shape)
    anomaly_map = np.where(sel, new.anomaly_map, old.anomaly_map).astype(np.float32)
    member_spread = np.where(sel, new.member_spread, old.member_spread).astype(np.float32)
    restored = np.where(sel, new.restored, old.restored).astype(np.float32)
    slice_scores = np.where(take_new, new.slice_scores, old.slice_scores).astype(np.float32)
    analysed = new_analysed | old_analysed
    warnings = tuple(dict.fromkeys((*old.warnings, *new.warnings)))
    extra = {"covered": covered(new) | covered(old)} if hasattr(new, "covered") else {}
    return dataclasses.replace(
        new,
        **extra,
        anomaly_map=anomaly_map,
        member_spread=member_spread,
        restored=restored,
        slice_scores=slice_scores,
        analysed=analysed,
        warnings=warnings,
    )


def covered(result: Any) -> np.ndarray:
    """Slices whose maps hold values (analysed, or interpolated by the engine between analysed slices)."""
    return np.asarray(getattr(result, "covered", result.analysed), dtype=bool)


class ResultCache:
    """Merged results keyed by (scan, model, settings)."""

    def __init__(self, max_entries: int = 4) -> None:
        self._entries: dict[Hashable, Any] = {}
        self._max = max_entries

    def get(self, key: Hashable) -> Any:
        """The merged result for ``key`` or None."""
        return self._entries.get(key)

    def add(self, key: Hashable, result: Any) -> Any:
        """Merge ``result`` into the entry for ``key`` and return the merged result."""
        merged = merge_results(self._entries.pop(key, None), result)
        self._entries[key] = merged
        while len(self._entries) > self._max:
            self._entries.pop(next(iter(self._entries)))
        return merged

    def put(self, key: Hashable, result: Any) -> None:
        """Store ``result`` as the entry for ``key`` (it already holds whatever the entry held before)."""
        self._entries.pop(key, None)
        self._entries[key] = result
        while len(self._entries) > self._max:
            self._entries.pop(next(iter(self._entries)))

    def missing(self, key: Hashable, wanted: Sequence[int], *, count_interpolated: bool = False) -> list[int]:
        """Which of the ``wanted`` slice indices are not yet analysed (or covered, if asked) for ``key``."""
        entry = self._entries.get(key)
        if entry is None:
            return list(wanted)
        done = covered(entry) if count_interpolated else np.asarray(entry.analysed, dtype=bool)
        return [int(s) for s in wanted if not done[int(s)]]

    def clear(self) -> None:
        self._entries.clear()

"""A whole-volume analysis as a series of small chunks, nearest the user first (no Qt).

The engine plans which axial slices a whole-volume analysis restores (``Ensemble.plan_slices``: every stride-th brain
slice and the last) and analyses any of them in any grouping with the same per-slice result. The viewer therefore
runs the plan a few slices at a time: first the planned slices nearest the slice on screen, then, after each chunk,
the ones nearest wherever the user is *then*. Each chunk's maps are merged into the result shown so far; the slices
between two planned slices that are both done are filled in at once (``engine.fill_between_slices``, with the brain
the analysis used), so what is on screen is already the final answer for those slices; when the last chunk lands the
whole fill runs once more over everything, exactly as a whole-volume ``analyse`` would give.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.results_cache import covered, merge_results

FIRST_CHUNK = 3
"""Slices in the first chunk: the planned slices on both sides of the one on screen (about 1.5 s on a 2-core CPU with
the bundled ten-member model)."""
CHUNK = 6
"""Slices in each later chunk: a batch large enough to run at full speed (bigger batches are no faster per slice on a
CPU), small enough that a move of the user is followed within a few seconds."""

FillBetween = Callable[[Any, np.ndarray], Any]
"""``engine.fill_between_slices(result, brain)``."""


def nearest_first(slices: Sequence[int], centre: int) -> list[int]:
    """``slices`` ordered by distance to ``centre``; ties go to the lower index."""
    return sorted((int(s) for s in slices), key=lambda s: (abs(s - centre), s))


def slices_to_cover(plan: Sequence[int], brain: np.ndarray, axis: int) -> np.ndarray:
    """Slices that carry a map once the whole plan is analysed and filled: the planned ones, and every slice with
    brain between the first and last planned slice (bool, one per slice along ``axis``)."""
    n = brain.shape[axis]
    target = np.zeros(n, dtype=bool)
    if len(plan) == 0:
        return target
    has_brain = brain.any(axis=tuple(a for a in range(3) if a != axis))
    target[min(plan):max(plan) + 1] = has_brain[min(plan):max(plan) + 1]
    target[list(plan)] = True
    return target


def fill_ready_gaps(result: Any, plan: Sequence[int], brain: np.ndarray, fill_between: FillBetween) -> Any:
    """Fill the slices between consecutive planned slices that are both analysed, and only those.

    Their values are final: the interpolation between two analysed slices does not depend on what else is analysed.

    Args:
        result: the merged result so far.
        plan: the planned slice indices, ascending.
        brain: the brain mask the analysis used (on the result's grid).
        fill_between: ``engine.fill_between_slices``.

    Returns:
        ``result`` with those slices' maps, spread and restoration filled and marked covered.
    """
    analysed = np.asarray(result.analysed, dtype=bool)
    ready = np.zeros(analysed.size, dtype=bool)
    for low, high in zip(plan[:-1], plan[1:], strict=True):
        if high - low > 1 and analysed[low] and analysed[high]:
            ready[low + 1:high] = True
    ready &= ~analysed
    if not ready.any():
        return result
    filled = fill_between(result, brain)
    take = ready & np.asarray(filled.covered, dtype=bool)
    shape = [1, 1, 1]
    shape[result.slice_axis] = take.size
    sel = take.reshape(shape)
    return dataclasses.replace(
        result,
        anomaly_map=np.where(sel, filled.anomaly_map, result.anomaly_map).astype(np.float32),
        member_spread=np.where(sel, filled.member_spread, result.member_spread).astype(np.float32),
        restored=np.where(sel, filled.restored, result.restored).astype(np.float32),
        covered=covered(result) | take,
    )


def merge_chunk(base: Any, part: Any, plan: Sequence[int], brain: np.ndarray, fill_between: FillBetween, *,
                last: bool) -> Any:
    """The result after one chunk: ``part`` merged into ``base``, ready gaps filled, everything filled if ``last``."""
    merged = merge_results(base, part)
    if last:
        return fill_between(merged, brain)
    return fill_ready_gaps(merged, plan, brain, fill_between)


@dataclass(eq=False)
class VolumeRun:
    """The state of one chunked whole-volume analysis (lives in the GUI thread; chunks run in the worker).

    Attributes:
        key: the result-cache key the chunks merge into.
        volume: the scan analysed.
        n_slices: axial slices of the scan.
        axis: the native axis the engine slices along.
        plan: the planned slices, ascending.
        brain: the brain mask the analysis uses, on the scan's grid.
        todo: planned slices not analysed yet.
        target: slices that carry a map at the end (see :func:`slices_to_cover`).
        started: ``time.monotonic()`` when the user asked.
        chunks: chunks run so far.
        planned_work: planned slices that were still to analyse when the plan arrived.
    """

    key: Hashable
    volume: Any
    n_slices: int
    axis: int
    plan: tuple[int, ...] = ()
    brain: np.ndarray | None = None
    todo: list[int] = field(default_factory=list)
    target: np.ndarray | None = None
    started: float = field(default_factory=time.monotonic)
    chunks: int = 0
    planned_work: int = 0

    def set_plan(self, plan: Sequence[int], brain: np.ndarray, already_analysed: np.ndarray | None) -> None:
        """Record the engine's plan; slices analysed before (cached) are not run again."""
        self.plan = tuple(int(s) for s in plan)
        self.brain = brain
        done = np.zeros(self.n_slices, dtype=bool) if already_analysed is None else already_analysed
        self.todo = [s for s in self.plan if not done[s]]
        self.target = slices_to_cover(self.plan, brain, self.axis)
        self.planned_work = len(self.todo)

    def next_chunk(self, centre: int) -> tuple[int, ...]:
        """Take the next chunk off ``todo``: the planned slices nearest ``centre``, ascending."""
        size = FIRST_CHUNK if self.chunks == 0 else CHUNK
        chunk = nearest_first(self.todo, centre)[:size]
        taken = set(chunk)
        self.todo = [s for s in self.todo if s not in taken]
        self.chunks += 1
        return tuple(sorted(chunk))

    def fraction(self, chunk_size: int, chunk_fraction: float) -> float:
        """Share of the run's slice analyses done, counting ``chunk_fraction`` of a running chunk of ``chunk_size``."""
        if self.planned_work == 0:
            return 0.0 if self.target is None else 1.0
        finished = self.planned_work - len(self.todo) - chunk_size
        return min(1.0, max(0.0, (finished + chunk_fraction * chunk_size) / self.planned_work))

    def eta_s(self, fraction: float) -> float | None:
        """Seconds left at this pace, or None before any work is done."""
        if fraction <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (1 - fraction) / fraction

    def slices_with_map(self, result: Any) -> int:
        """How many of the slices this run will cover carry a map in ``result``."""
        if self.target is None or result is None:
            return 0
        return int((covered(result) & self.target).sum())

    @property
    def total(self) -> int:
        """Slices that carry a map at the end."""
        return int(self.target.sum()) if self.target is not None else 0

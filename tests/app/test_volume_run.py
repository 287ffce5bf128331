"""The chunk planning and partial filling of a whole-volume analysis (app.volume_run), without Qt."""

from __future__ import annotations

import numpy as np

import engine
from app.volume_run import CHUNK, FIRST_CHUNK, VolumeRun, fill_ready_gaps, nearest_first, slices_to_cover


def _result(analysed: list[int], n: int = 9) -> engine.AnomalyResult:
    """A 4x4xn result whose analysed slice k holds the value k everywhere (the slice axis is the last)."""
    amap = np.zeros((4, 4, n), np.float32)
    flags = np.zeros(n, bool)
    for k in analysed:
        amap[:, :, k] = k
        flags[k] = True
    return engine.AnomalyResult(anomaly_map=amap, member_spread=amap / 10, restored=amap.copy(),
                                slice_scores=np.where(flags, 1.0, np.nan).astype(np.float32), analysed=flags,
                                covered=flags.copy(), slice_axis=2, seed=0, sampler="ddim", steps=1, model_id="m")


def test_nearest_first_breaks_ties_downwards() -> None:
    assert nearest_first([0, 3, 6, 9, 12], 7) == [6, 9, 3, 12, 0]
    assert nearest_first([2, 4], 3) == [2, 4]


def test_only_gaps_between_two_finished_planned_slices_are_filled() -> None:
    plan = (0, 2, 4, 6, 8)
    brain = np.ones((4, 4, 9), bool)
    partial = fill_ready_gaps(_result([0, 2, 6]), plan, brain, engine.fill_between_slices)
    assert partial.covered.tolist() == [True, True, True, False, False, False, True, False, False]
    assert partial.anomaly_map[0, 0, 1] == 1.0  # halfway between slices 0 and 2
    assert not partial.anomaly_map[:, :, 3:6].any()  # slice 4 is not done: 3 and 5 wait for it
    assert np.isnan(partial.slice_scores[1])
    done = fill_ready_gaps(_result([0, 2, 4, 6]), plan, brain, engine.fill_between_slices)
    assert done.anomaly_map[0, 0, 5] == 5.0
    assert not done.covered[7]


def test_a_run_takes_the_nearest_slices_and_counts_its_work() -> None:
    brain = np.zeros((4, 4, 40), bool)
    brain[1:3, 1:3, 5:35] = True
    run = VolumeRun(key="k", volume=None, n_slices=40, axis=2)
    plan = tuple(range(5, 35, 3)) + (34,)
    already = np.zeros(40, bool)
    already[8] = True
    run.set_plan(plan, brain, already)
    assert 8 not in run.todo
    assert run.total == int(slices_to_cover(plan, brain, 2).sum()) == 30
    first = run.next_chunk(20)
    assert len(first) == FIRST_CHUNK
    assert first == (17, 20, 23)
    assert run.fraction(len(first), 0.5) == 1.5 / run.planned_work
    second = run.next_chunk(5)
    assert len(second) == CHUNK
    assert second == (5, 11, 14, 26, 29, 32)  # nearest the new place first, whatever is left
    assert run.fraction(0, 0.0) == (FIRST_CHUNK + CHUNK) / run.planned_work

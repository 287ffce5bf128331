"""The visible-slice-first contract, checked on the fake engine the viewer tests use and on the real engine.

The viewer analyses a whole scan as the engine's planned slices in small chunks, nearest the user first, merges them
(:mod:`app.volume_run`) and fills the slices between with ``fill_between_slices`` and ``analysis_brain``. The same
checks run on ``tests/app/fake_engine.py`` and on the real engine with a tiny trained model, so the fake cannot drift
from what the viewer meets in use.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import scan_path

import engine
from app.volume_run import CHUNK, FIRST_CHUNK, merge_chunk, nearest_first

SETTINGS = engine.AnalysisSettings(steps=1, seed=3)


@pytest.fixture(scope="module")
def ixi() -> tuple[Any, np.ndarray]:
    """An IXI scan (with skull) and its brain mask."""
    path = scan_path("ixi")
    volume = engine.load_volume(path)
    return volume, engine.load_mask(str(path).replace("_T1.nii.gz", "_brainmask.nii.gz"), volume)


@pytest.fixture(params=["fake", "real"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> SimpleNamespace:
    """The engine API and a loaded model: the viewer tests' fake, or the real engine with a tiny trained model."""
    if request.param == "fake":
        from fake_engine import make_backend

        api = make_backend(tmp_path)
        api.model = api.load_ensemble(tmp_path, device="cpu")
        return api
    tiny_model = request.getfixturevalue("tiny_model")
    return SimpleNamespace(model=engine.load_ensemble(tiny_model, device="cpu"),
                           analysis_brain=engine.analysis_brain, fill_between_slices=engine.fill_between_slices,
                           CancelToken=engine.CancelToken, Cancelled=engine.Cancelled, VolumeError=engine.VolumeError)


def chunked(backend: SimpleNamespace, volume: Any, mask: np.ndarray, plan: tuple[int, ...], centre: int) -> Any:
    """What the viewer does: the plan in chunks nearest ``centre`` first, merged, filled between at the end."""
    brain = backend.analysis_brain(volume, mask)
    order = nearest_first(plan, centre)
    chunks = [order[:FIRST_CHUNK]] + [order[i:i + CHUNK] for i in range(FIRST_CHUNK, len(order), CHUNK)]
    result = None
    for i, chunk in enumerate(chunks):
        part = backend.model.analyse(volume, settings=SETTINGS, slices=chunk, brain_mask=mask)
        assert np.flatnonzero(part.analysed).tolist() == sorted(chunk)
        result = merge_chunk(result, part, plan, brain, backend.fill_between_slices, last=i == len(chunks) - 1)
    return result


def test_plan_is_what_a_whole_volume_analysis_restores(backend: SimpleNamespace, ixi: tuple[Any, np.ndarray]) -> None:
    volume, mask = ixi
    axis = engine.axial_axis(volume.affine)
    plan = backend.model.plan_slices(volume, brain_mask=mask, settings=SETTINGS)
    assert isinstance(plan, tuple)
    assert all(isinstance(s, int) for s in plan)
    assert list(plan) == sorted(set(plan))
    assert plan[0] >= 0
    assert plan[-1] < volume.shape[axis]
    whole = backend.model.analyse(volume, settings=SETTINGS, brain_mask=mask)
    assert np.flatnonzero(whole.analysed).tolist() == list(plan)
    between = whole.covered & ~whole.analysed
    assert between.any()  # the plan skips slices, which the whole-volume run fills in
    assert np.isnan(whole.slice_scores[between]).all()
    assert np.isfinite(whole.slice_scores[whole.analysed]).all()
    brain = backend.analysis_brain(volume, mask)
    assert not whole.anomaly_map[~brain].any()  # the maps stay inside the brain the analysis used


def test_chunks_nearest_first_then_filled_give_the_whole_volume_result(backend: SimpleNamespace,
                                                                        ixi: tuple[Any, np.ndarray]) -> None:
    volume, mask = ixi
    plan = backend.model.plan_slices(volume, brain_mask=mask, settings=SETTINGS)
    whole = backend.model.analyse(volume, settings=SETTINGS, brain_mask=mask)
    result = chunked(backend, volume, mask, plan, centre=plan[len(plan) // 3] + 1)
    np.testing.assert_array_equal(result.analysed, whole.analysed)
    np.testing.assert_array_equal(result.covered, whole.covered)
    # One analysis: the viewer's chunks, merged and filled, are the whole-volume run bit for bit.
    for name in ("anomaly_map", "member_spread", "restored"):
        np.testing.assert_array_equal(getattr(result, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(result.slice_scores, whole.slice_scores)  # NaN where filled, in both
    between = np.flatnonzero(whole.covered & ~whole.analysed)
    assert len(between) > 10
    assert np.isnan(result.slice_scores[between]).all()


def test_a_slice_gets_the_same_map_in_any_chunk(backend: SimpleNamespace, ixi: tuple[Any, np.ndarray]) -> None:
    volume, mask = ixi
    plan = backend.model.plan_slices(volume, brain_mask=mask, settings=SETTINGS)
    k = plan[len(plan) // 2]
    alone = backend.model.analyse(volume, settings=SETTINGS, slices=[k], brain_mask=mask)
    among = backend.model.analyse(volume, settings=SETTINGS, slices=[plan[0], k, plan[-1]], brain_mask=mask)
    axis = alone.slice_axis
    np.testing.assert_array_equal(np.take(alone.anomaly_map, k, axis=axis), np.take(among.anomaly_map, k, axis=axis))
    assert alone.covered.sum() == 1  # explicit slices: nothing is filled in


def test_analysis_brain_is_the_mask_or_the_foreground(backend: SimpleNamespace, ixi: tuple[Any, np.ndarray]) -> None:
    volume, mask = ixi
    assert backend.analysis_brain(volume, mask) is mask or np.array_equal(backend.analysis_brain(volume, mask), mask)
    foreground = backend.analysis_brain(volume, None)
    assert foreground.dtype == bool
    assert foreground.shape == volume.shape
    assert foreground.sum() > mask.sum()  # IXI keeps the skull: more foreground than brain
    k = backend.model.plan_slices(volume, settings=SETTINGS)[10]
    part = backend.model.analyse(volume, settings=SETTINGS, slices=[k])
    assert not part.anomaly_map[~foreground].any()
    with pytest.raises(backend.VolumeError, match="brain mask shape"):
        backend.analysis_brain(volume, np.ones((4, 4, 4), bool))


def test_cancel_stops_a_chunk(backend: SimpleNamespace, ixi: tuple[Any, np.ndarray]) -> None:
    volume, mask = ixi
    token = backend.CancelToken()
    token.cancel()
    with pytest.raises(backend.Cancelled):
        backend.model.analyse(volume, settings=SETTINGS, slices=[volume.shape[2] // 2], brain_mask=mask,
                              cancel=token)

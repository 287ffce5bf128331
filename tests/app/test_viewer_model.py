"""Widget-free parts of the viewer: ViewerState setters, LUTs, the result cache."""

from __future__ import annotations

import numpy as np
import pytest
from fake_engine import FakeEnsemble, FakeVolume, fake_info

from app import colormaps
from app.results_cache import ResultCache, merge_results
from app.state import ViewerState
from engine.results import AnomalyResult


def small_volume() -> FakeVolume:
    data = np.zeros((12, 14, 10), np.float32)
    data[2:10, 3:11, 2:8] = np.arange(8 * 8 * 6, dtype=np.float32).reshape(8, 8, 6) + 1
    return FakeVolume(data, np.diag([-1.0, -1.0, 2.0, 1.0]), None)


def test_state_setters_clamp_and_emit_once(qtbot) -> None:
    state = ViewerState()
    state.set_volume(small_volume())
    with qtbot.waitSignal(state.threshold_changed) as blocker:
        state.set_threshold(5.0)
    assert blocker.args == [state.display_max]
    seen: list[float] = []
    state.opacity_changed.connect(seen.append)
    state.set_opacity(0.25)
    state.set_opacity(0.25)
    state.set_opacity(7)
    assert seen == [0.25, 1.0]
    state.set_cursor((100, -3, 4))
    assert state.cursor == (11, 0, 4)
    state.set_window(10, 5)
    lo, hi = state.window
    assert hi > lo == 10
    with pytest.raises(ValueError, match="plane"):
        state.set_plane("diagonal")
    with pytest.raises(ValueError, match="overlay"):
        state.set_overlay_visible("nonsense", True)


def test_state_slice_index_follows_plane_and_step_direction(qtbot) -> None:
    state = ViewerState()
    state.set_volume(small_volume())
    assert state.plane == "axial"
    start = state.slice_index
    state.step_slice(1)
    assert state.slice_index == start + 1  # axis 2 points superior: +1 index is one step up
    state.set_plane("coronal")
    layout = state.layout()
    assert layout is not None
    assert layout.slice_axis == 1
    assert layout.step_sign == -1
    before = state.slice_index
    state.step_slice(1)  # toward anterior = lower index for a P-pointing axis
    assert state.slice_index == before - 1


def test_result_must_match_the_volume(qtbot) -> None:
    state = ViewerState()
    state.set_volume(small_volume())
    wrong = FakeEnsemble(fake_info()).analyse(FakeVolume(np.ones((5, 5, 5), np.float32), np.eye(4), None))
    with pytest.raises(ValueError, match="shape"):
        state.set_result(wrong)


def test_heat_lut_is_transparent_below_threshold_only() -> None:
    lut = colormaps.heat_lut(0.1, 0.3)
    assert lut.shape == (256, 4)
    assert lut.dtype == np.uint8
    first = colormaps.threshold_index(0.1, 0.3)
    assert first == 85
    assert (lut[:first, 3] == 0).all()
    assert (lut[first:, 3] == 255).all()
    assert (colormaps.heat_lut(0.0, 0.3)[:, 3] == 255).all()
    assert (colormaps.heat_bar_lut(0.1, 0.3)[:, 3] == 255).all()


def test_mask_rgba_draws_contour_and_optional_fill() -> None:
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    outline = colormaps.mask_rgba(mask, fill=False)
    assert outline[4, 4, 3] == 0
    assert outline[2, 4, 3] == 255
    assert outline[0, 0, 3] == 0
    filled = colormaps.mask_rgba(mask, fill=True)
    assert 0 < filled[4, 4, 3] < 255
    assert (colormaps.mask_rgba(np.zeros((3, 3), bool), fill=True) == 0).all()


def test_merge_keeps_both_partial_results() -> None:
    volume = small_volume()
    model = FakeEnsemble(fake_info())
    first = model.analyse(volume, slices=[3])
    second = model.analyse(volume, slices=[6])
    merged = merge_results(first, second)
    assert isinstance(merged, AnomalyResult)
    assert merged.analysed.nonzero()[0].tolist() == [3, 6]
    np.testing.assert_array_equal(merged.anomaly_map[..., 3], first.anomaly_map[..., 3])
    np.testing.assert_array_equal(merged.anomaly_map[..., 6], second.anomaly_map[..., 6])
    assert np.isfinite(merged.slice_scores[[3, 6]]).all()
    assert np.isnan(merged.slice_scores[0])
    cache = ResultCache()
    cache.add("k", first)
    cache.add("k", second)
    assert cache.missing("k", [3, 4, 6]) == [4]
    assert cache.missing("other", [1]) == [1]

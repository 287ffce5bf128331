"""Tests of engine.metrics against scikit-learn, including ties, streaming, binning and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from engine.errors import DataError
from engine.metrics import (
    PixelAccumulator,
    SliceAccumulator,
    auroc,
    average_precision,
    max_dice,
    random_baseline,
)


def _sklearn_best_dice(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = 2 * precision * recall / (precision + recall)
    best = int(np.nanargmax(dice))
    return float(dice[best]), float(thresholds[best])


def _dice_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    return 2 * np.sum(predicted & labels) / (np.sum(predicted) + np.sum(labels))


def _case(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Small labelled score arrays of several tie structures (float32 scores, as anomaly maps)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    labels = rng.random(n) < rng.uniform(0.05, 0.5)
    labels[rng.integers(n)] = True
    if kind == "continuous":
        scores = rng.random(n) + 0.3 * labels
    elif kind == "coarse_ties":
        scores = np.round(rng.random(n) + 0.3 * labels, 1)
    elif kind == "mostly_zero":  # zeroed background: most scores are exactly 0, some of them positive
        scores = (rng.random(n) + 0.5 * labels) * (rng.random(n) < 0.3)
    elif kind == "all_equal":
        scores = np.full(n, 0.25)
    elif kind == "single_positive":
        labels[:] = False
        labels[rng.integers(n)] = True
        scores = np.round(rng.random(n), 2) * (rng.random(n) < 0.5)
    elif kind == "signed":
        scores = np.round(rng.standard_normal(n), 1) + 0.5 * labels
    else:
        raise AssertionError(kind)
    return labels, scores.astype(np.float32)


KINDS = ["continuous", "coarse_ties", "mostly_zero", "all_equal", "single_positive", "signed"]
CASES = [(kind, seed) for kind in KINDS for seed in range(3)]


@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_functions_match_sklearn(kind: str, seed: int) -> None:
    labels, scores = _case(kind, seed)
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    dice, threshold = max_dice(labels, scores)
    ref_dice, ref_threshold = _sklearn_best_dice(labels, scores)
    assert dice == pytest.approx(ref_dice, abs=1e-9)
    # The threshold really achieves that Dice (sklearn may pick another among exact ties, so check the value).
    assert _dice_at(labels, scores, threshold) == pytest.approx(dice, abs=1e-9)
    if kind in ("continuous", "mostly_zero"):
        assert threshold == pytest.approx(ref_threshold)


@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_pixel_accumulator_matches_sklearn_and_streams(kind: str, seed: int) -> None:
    labels, scores = _case(kind, seed)
    whole = PixelAccumulator()
    whole.add(scores, labels.astype(np.uint8))
    result = whole.result()
    assert result.exact
    assert result.n_pixels == labels.size
    assert result.n_positive == int(labels.sum())
    assert result.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert result.max_dice == pytest.approx(_sklearn_best_dice(labels, scores)[0], abs=1e-6)
    assert _dice_at(labels, scores, result.best_threshold) == pytest.approx(result.max_dice, abs=1e-9)

    rng = np.random.default_rng(100 + seed)
    cuts = np.sort(rng.integers(0, labels.size, size=5))
    streamed = PixelAccumulator()
    for part_scores, part_labels in zip(np.split(scores, cuts), np.split(labels, cuts), strict=True):
        streamed.add(part_scores, part_labels)
    assert streamed.result() == result


def test_accumulator_takes_maps_of_any_shape() -> None:
    rng = np.random.default_rng(1)
    maps = (rng.random((4, 1, 16, 16)) * (rng.random((4, 1, 16, 16)) < 0.5)).astype(np.float32)
    masks = rng.random((4, 1, 16, 16)) < 0.1
    acc = PixelAccumulator()
    for i in range(4):
        acc.add(maps[i], masks[i])
    assert acc.result().ap == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-6)


def test_zero_score_negatives_are_only_counted() -> None:
    scores = np.zeros(10_000, dtype=np.float32)
    labels = np.zeros(10_000, dtype=bool)
    scores[:100] = np.linspace(0.1, 1.0, 100)
    labels[50:120] = True  # 50 scored positives, 20 zero-score positives
    acc = PixelAccumulator()
    acc.add(scores, labels)
    assert acc.nbytes == 4 * (70 + 50)  # 70 positives + 50 non-zero negatives, not 10_000 pixels
    assert acc.result().ap == pytest.approx(average_precision_score(labels, scores), abs=1e-9)


def test_result_can_be_repeated_and_extended() -> None:
    labels, scores = _case("mostly_zero", 7)
    half = labels.size // 2
    acc = PixelAccumulator()
    acc.add(scores[:half], labels[:half])
    first = acc.result()
    assert acc.result() == first
    acc.add(scores[half:], labels[half:])
    assert acc.result().ap == pytest.approx(average_precision_score(labels, scores), abs=1e-9)


def _realistic_maps(seed: int, n_slices: int = 40, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Paper-scale maps: zero background, small brain values, brighter lesions, some lesion pixels missed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    brain = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    maps = np.zeros((n_slices, size, size), dtype=np.float32)
    masks = np.zeros((n_slices, size, size), dtype=bool)
    for i in range(n_slices):
        maps[i][brain] = rng.gamma(2.0, 0.003, size=int(brain.sum()))
        if rng.random() < 0.5:
            cy, cx = rng.integers(size // 2 - 12, size // 2 + 12, size=2)
            lesion = brain & ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(3, 8) ** 2)
            masks[i] = lesion
            maps[i][lesion] += rng.gamma(2.0, 0.006, size=int(lesion.sum()))
    return maps, masks


def test_binned_mode_is_close_to_exact() -> None:
    maps, masks = _realistic_maps(0)
    exact = PixelAccumulator()
    binned = PixelAccumulator(exact=False)
    for i in range(0, maps.shape[0], 8):
        exact.add(maps[i : i + 8], masks[i : i + 8])
        binned.add(maps[i : i + 8], masks[i : i + 8])
    ref = exact.result()
    approx = binned.result()
    assert not approx.exact
    assert binned.nbytes == 2 * 8 * (2**16 + 1)
    assert ref.ap == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-6)
    assert abs(approx.ap - ref.ap) < 0.01
    assert abs(approx.max_dice - ref.max_dice) < 0.01
    assert abs(approx.best_threshold - ref.best_threshold) < 1e-3
    assert (approx.n_pixels, approx.n_positive) == (ref.n_pixels, ref.n_positive)


def test_coarse_bins_are_only_approximate() -> None:
    maps, masks = _realistic_maps(1)
    coarse = PixelAccumulator(exact=False, bins=4)  # every brain value falls in the first bin
    coarse.add(maps, masks)
    exact = PixelAccumulator()
    exact.add(maps, masks)
    assert coarse.result().ap < exact.result().ap - 0.05


def test_exact_mode_falls_back_to_bins_over_budget() -> None:
    maps, masks = _realistic_maps(2)
    acc = PixelAccumulator(max_memory_gb=1e-5)  # 10 kB: about 2500 kept pixels
    ref = PixelAccumulator()
    for i in range(maps.shape[0]):
        acc.add(maps[i], masks[i])
        ref.add(maps[i], masks[i])
    assert not acc.exact
    result = acc.result()
    assert not result.exact
    assert abs(result.ap - ref.result().ap) < 0.01
    assert abs(result.max_dice - ref.result().max_dice) < 0.01


def test_binned_mode_rejects_negative_scores() -> None:
    acc = PixelAccumulator(exact=False)
    with pytest.raises(ValueError, match="scores >= 0"):
        acc.add(np.array([-0.1, 0.2], dtype=np.float32), np.array([0, 1]))


def test_degenerate_and_invalid_inputs() -> None:
    scores = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    none = np.zeros(3, dtype=bool)
    with pytest.raises(DataError, match="no positive"):
        average_precision(none, scores)
    with pytest.raises(ValueError, match="no positive"):
        max_dice(none, scores)
    with pytest.raises(DataError, match="no negative"):
        auroc(np.ones(3, dtype=bool), scores)
    acc = PixelAccumulator()
    acc.add(scores, none)
    with pytest.raises(DataError, match="no anomalous pixels among the 3"):
        acc.result()
    with pytest.raises(ValueError, match="binary"):
        acc.add(scores, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="differ in shape"):
        acc.add(scores, np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.array([np.nan, 0.1, 0.2], dtype=np.float32), none)
    with pytest.raises(ValueError, match="differ in size"):
        average_precision(np.array([1, 0]), scores)


def test_all_positive_pixels() -> None:
    labels = np.ones(20, dtype=bool)
    scores = np.linspace(0, 1, 20).astype(np.float32)
    acc = PixelAccumulator()
    acc.add(scores, labels)
    result = acc.result()
    assert result.ap == pytest.approx(average_precision_score(labels, scores))
    assert result.max_dice == pytest.approx(1.0)
    assert result.best_threshold == 0.0


def test_slice_accumulator_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.random(300) + 0.4 * labels, 2)  # with ties
    acc = SliceAccumulator()
    for start in range(0, 300, 40):
        acc.add(scores[start : start + 40], labels[start : start + 40].astype(int))
    result = acc.result()
    assert acc.n_slices == result.n_slices == 300
    assert result.n_positive == int(labels.sum())
    assert result.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert result.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_slice_accumulator_needs_both_classes() -> None:
    acc = SliceAccumulator()
    acc.add(np.array([0.1, 0.5]), np.array([0, 0]))
    with pytest.raises(DataError, match="both normal and anomalous"):
        acc.result()
    with pytest.raises(ValueError, match="1-D"):
        acc.add(np.zeros((2, 2)), np.zeros((2, 2)))


def test_random_baseline() -> None:
    baseline = random_baseline(1000, 50)
    assert baseline.ap == pytest.approx(0.05)
    assert baseline.max_dice == pytest.approx(0.1 / 1.05)
    assert baseline.auroc == 0.5
    with pytest.raises(ValueError, match="n_positive"):
        random_baseline(10, 0)

    rng = np.random.default_rng(4)
    labels = rng.random(200_000) < 0.05
    scores = rng.random(200_000).astype(np.float32)
    acc = PixelAccumulator()
    acc.add(scores, labels)
    result = acc.result()
    chance = random_baseline(result.n_pixels, result.n_positive)
    assert result.ap == pytest.approx(chance.ap, abs=0.005)
    assert result.max_dice >= chance.max_dice - 1e-12  # calling everything anomalous is always a candidate
    assert result.max_dice == pytest.approx(chance.max_dice, abs=0.005)


def test_over_budget_signed_scores_cannot_fall_back() -> None:
    acc = PixelAccumulator(max_memory_gb=1e-7)  # 100 bytes
    with pytest.raises(ValueError, match="binning needs scores >= 0"):
        acc.add(np.linspace(-1, 1, 100, dtype=np.float32), np.arange(100) % 2)


def test_many_small_adds_grow_the_buffer() -> None:
    labels, scores = _case("continuous", 11)
    acc = PixelAccumulator()
    for i in range(labels.size):
        acc.add(scores[i : i + 1], labels[i : i + 1])
    assert acc.nbytes == 4 * labels.size
    assert acc.result().ap == pytest.approx(average_precision_score(labels, scores), abs=1e-9)

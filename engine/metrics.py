"""Evaluation metrics of the benchmark Baugh et al. (2024) report, computed without sklearn's memory cost.

Image level (one score per slice): average precision (AP) and the area under the ROC curve, identical to
``sklearn.metrics.average_precision_score`` and ``roc_auc_score``.

Pixel level: the maps and masks of the whole test set are pooled (background included, where the zeroed maps are
exactly 0) and two numbers are reported: the pixel AP and the best Dice over every threshold of the precision-recall
curve (``score >= threshold``), i.e. ``max 2PR / (P + R)``, with the threshold that reaches it. A BraTS test set
pools about 7.5e8 pixels, so :class:`PixelAccumulator` streams them in and keeps only what the exact answer needs:

* Both metrics depend only on, for each distinct score ``v`` of a *positive* pixel, the counts ``TP(v)`` and
  ``FP(v)`` of positive and negative pixels scoring ``>= v``: recall only changes at such values, and between two
  of them the precision (hence the Dice) is highest at the higher one. So positive scores are kept and sorted,
  negative scores are kept sorted only when non-zero, and the zero-score negatives (the whole background) are just
  counted. Memory is 4 bytes per positive or non-zero negative pixel; no argsort and no float64 copy is made.
* When even that would not fit (``max_memory_gb``), or when asked (``exact=False``), scores are binned on a fixed
  ``[0, max_value]`` range instead, which treats scores in the same bin as ties: an approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from engine.errors import DataError

__all__ = [
    "PixelAccumulator",
    "PixelMetrics",
    "RandomBaseline",
    "SliceAccumulator",
    "SliceMetrics",
    "auroc",
    "average_precision",
    "max_dice",
    "random_baseline",
]


@dataclass(frozen=True)
class PixelMetrics:
    """Pooled pixel-level metrics of a test set.

    Attributes:
        ap: average precision, as ``sklearn.metrics.average_precision_score`` on the pooled pixels.
        max_dice: the best Dice ``2TP / (2TP + FP + FN)`` over all thresholds (``score >= threshold``).
        best_threshold: the threshold reaching ``max_dice`` (the lowest one if several tie, as the reference's
            ``nanargmax`` over an ascending curve). In binned mode, the lower edge of the chosen bin.
        n_pixels: number of pixels pooled.
        n_positive: number of anomalous (target) pixels among them.
        exact: False when the result came from binned scores and is an approximation.
    """

    ap: float
    max_dice: float
    best_threshold: float
    n_pixels: int
    n_positive: int
    exact: bool = True


@dataclass(frozen=True)
class SliceMetrics:
    """Image-level metrics of a test set.

    Attributes:
        ap: average precision of the slice scores against the slice labels.
        auroc: area under the ROC curve (ties counted as half, as sklearn).
        n_slices: number of slices scored.
        n_positive: number of anomalous slices.
    """

    ap: float
    auroc: float
    n_slices: int
    n_positive: int


@dataclass(frozen=True)
class RandomBaseline:
    """What scores carrying no information achieve, for reading metrics against chance.

    Attributes:
        ap: the prevalence ``p``: the expected AP of random scores (exact in the limit of many samples).
        max_dice: ``2p / (1 + p)``, the Dice of calling everything anomalous; with uninformative scores every
            other threshold keeps precision ``p`` and loses recall, so this is the optimum.
        auroc: 0.5.
    """

    ap: float
    max_dice: float
    auroc: float = 0.5


def random_baseline(n_total: int, n_positive: int) -> RandomBaseline:
    """Chance level of AP and best Dice for a set of ``n_total`` samples of which ``n_positive`` are anomalous.

    Args:
        n_total: number of pixels (or slices).
        n_positive: number of anomalous ones, ``0 < n_positive <= n_total``.

    Returns:
        The chance-level metrics.
    """
    if not 0 < n_positive <= n_total:
        raise ValueError(f"need 0 < n_positive <= n_total, got n_positive={n_positive}, n_total={n_total}")
    prevalence = n_positive / n_total
    return RandomBaseline(ap=prevalence, max_dice=2.0 * prevalence / (1.0 + prevalence))


# ----------------------------------------------------------------------------------------------------------------
# Core: metrics from tie-aware cumulative counts.


def _summarise(thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_pos: int) -> tuple[float, float, float]:
    """AP, best Dice and its threshold from the counts at each distinct positive score.

    Args:
        thresholds: distinct scores of positive samples, ascending.
        tp: number of positives scoring ``>=`` each threshold (int64).
        fp: number of negatives scoring ``>=`` each threshold (int64).
        n_pos: total number of positives (``tp[0]``).
    """
    tp_f = tp.astype(np.float64)
    precision = tp_f / (tp_f + fp)
    # Recall rises by (tp - tp at the next higher threshold) / n_pos when the threshold drops to this value.
    gained = tp_f - np.append(tp_f[1:], 0.0)
    ap = float(np.sum(gained * precision) / n_pos)
    dice = 2.0 * tp_f / (tp_f + fp + n_pos)
    best = int(np.argmax(dice))
    return ap, float(dice[best]), float(thresholds[best])


def _count_at_least(sorted_values: np.ndarray, n_zeros: int, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` plus ``n_zeros`` exact zeros are ``>=`` each threshold."""
    counts = sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left").astype(np.int64)
    if n_zeros:
        counts += np.where(thresholds <= 0, n_zeros, 0)
    return counts


def _exact_summary(
    positives_sorted: np.ndarray, negatives_nonzero_sorted: np.ndarray, negative_zeros: int
) -> tuple[float, float, float]:
    """Exact AP and best Dice from sorted positive scores and sorted non-zero negative scores."""
    n_pos = positives_sorted.size
    run_starts = np.flatnonzero(np.r_[True, positives_sorted[1:] != positives_sorted[:-1]])
    thresholds = positives_sorted[run_starts]
    tp = n_pos - run_starts.astype(np.int64)
    fp = _count_at_least(negatives_nonzero_sorted, negative_zeros, thresholds)
    return _summarise(thresholds, tp, fp, n_pos)


def _as_labels(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        return labels
    if labels.size and np.any((labels != 0) & (labels != 1)):
        raise ValueError(f"{what} must be binary (0/1 or bool)")
    return labels != 0


def _as_scores(scores: np.ndarray, dtype: type | None = None) -> np.ndarray:
    scores = np.asarray(scores)
    if dtype is not None:
        scores = scores.astype(dtype, copy=False)
    elif not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if scores.size and np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def _check_pair(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = _as_labels(labels, "labels").ravel()
    scores = _as_scores(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in size: {labels.size} vs {scores.size}")
    if not labels.any():
        raise DataError("no positive samples: average precision and Dice are undefined")
    return labels, scores


def _split_sorted(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    positives = np.sort(scores[labels])
    negatives = scores[~labels]
    nonzero = negatives[negatives != 0]
    nonzero.sort()
    return positives, nonzero, negatives.size - nonzero.size


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision, equal to ``sklearn.metrics.average_precision_score(labels, scores)``.

    Args:
        labels: binary labels (bool or 0/1), any shape.
        scores: scores of the same size; higher means more anomalous. Compared in their own float precision.

    Returns:
        ``sum_k (R_k - R_{k-1}) P_k`` over the thresholds of the precision-recall curve.

    Raises:
        DataError: if there is no positive label.
    """
    labels, scores = _check_pair(labels, scores)
    return _exact_summary(*_split_sorted(labels, scores))[0]


def max_dice(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best Dice over every precision-recall threshold (``score >= threshold``) and that threshold.

    Equal to the maximum of ``2PR / (P + R)`` over ``sklearn.metrics.precision_recall_curve``; among exactly tied
    Dice values the lowest threshold is returned, as the reference's ``nanargmax``.

    Raises:
        DataError: if there is no positive label.
    """
    labels, scores = _check_pair(labels, scores)
    _, dice, threshold = _exact_summary(*_split_sorted(labels, scores))
    return dice, threshold


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score(labels, scores)``.

    Computed as the Mann-Whitney statistic with average ranks, which counts tied positive/negative pairs as half,
    the same as sklearn's trapezoidal area.

    Raises:
        DataError: if only one class is present.
    """
    labels, scores = _check_pair(labels, scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_neg == 0:
        raise DataError("no negative samples: AUROC is undefined")
    ranks = rankdata(scores)  # average ranks for ties, float64
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# ----------------------------------------------------------------------------------------------------------------
# Streaming accumulators.


class _Float32Buffer:
    """A growable float32 array that grows in place.

    ``ndarray.resize`` reallocates, which for large blocks remaps pages instead of copying, so appending never
    holds two copies of the data (unlike concatenating a list of chunks). Slack is kept under ~6 %.
    """

    _BLOCK = 1 << 20  # elements processed at a time when the data are re-read

    def __init__(self) -> None:
        self._data = np.empty(0, dtype=np.float32)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        needed = self.size + values.size
        if needed > self._data.size:
            self._data.resize(needed + min(needed // 16, 1 << 24), refcheck=False)
        self._data[self.size : needed] = values
        self.size = needed

    def values(self) -> np.ndarray:
        """A view of the held values (invalidated by the next :meth:`extend`)."""
        return self._data[: self.size]

    def blocks(self) -> list[np.ndarray]:
        """Views of the held values in blocks of bounded size."""
        return [self._data[i : min(i + self._BLOCK, self.size)] for i in range(0, self.size, self._BLOCK)]

    def clear(self) -> None:
        self._data = np.empty(0, dtype=np.float32)
        self.size = 0


class PixelAccumulator:
    """Pools pixel scores and binary targets over a whole test set without holding them all as float64.

    Exact mode keeps float32 scores of positive pixels and of negative pixels whose score is not exactly 0, and
    only counts zero-score negatives (the zeroed background): 4 bytes per kept pixel. :meth:`result` then sorts
    those two arrays in place and gives AP and best Dice equal to sklearn's on the same float32 scores. Peak memory
    is the kept bytes (grown in place, < 6 % slack), plus a few temporary copies of the chunk being added, plus
    about 30 bytes per distinct positive score during :meth:`result`.

    Binned mode counts positives and negatives per bin: exact zeros form a level of their own and ``bins`` bins of
    width ``max_value / bins`` cover ``[0, max_value)`` (higher scores go in the top bin). Scores sharing a bin
    act as ties, so AP and Dice are **approximations** (within about 1e-3 on realistic maps with the default 2**16
    bins on [0, 1]); memory is constant. Binned mode needs non-negative scores.

    An exact accumulator whose kept scores would exceed ``max_memory_gb`` switches itself to binned mode and
    reports ``exact=False`` in its result.

    Args:
        exact: start in exact mode (True) or binned mode (False).
        bins: number of bins over ``[0, max_value)`` in binned mode.
        max_memory_gb: budget for kept scores in exact mode, in 1e9 bytes.
        max_value: top of the binned range; anomaly maps are in [0, 1].
    """

    def __init__(
        self, *, exact: bool = True, bins: int = 2**16, max_memory_gb: float = 4.0, max_value: float = 1.0
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be positive, got {bins}")
        if max_value <= 0:
            raise ValueError(f"max_value must be positive, got {max_value}")
        if max_memory_gb <= 0:
            raise ValueError(f"max_memory_gb must be positive, got {max_memory_gb}")
        self._bins = int(bins)
        self._max_value = float(max_value)
        self._budget_bytes = int(max_memory_gb * 1e9)
        self._exact = bool(exact)
        self._n_pixels = 0
        self._n_positive = 0
        # Exact mode.
        self._positives = _Float32Buffer()
        self._negatives = _Float32Buffer()
        self._negative_zeros = 0
        # Binned mode: level 0 holds exact zeros, level i >= 1 holds [(i - 1) w, i w) with w = max_value / bins.
        self._pos_hist = np.zeros(0, dtype=np.int64)  # sized when binning starts
        self._neg_hist = np.zeros(0, dtype=np.int64)
        if not self._exact:
            self._start_histograms()

    @property
    def exact(self) -> bool:
        """Whether the accumulator still holds the scores needed for an exact result."""
        return self._exact

    @property
    def n_pixels(self) -> int:
        """Pixels added so far."""
        return self._n_pixels

    @property
    def n_positive(self) -> int:
        """Target pixels added so far."""
        return self._n_positive

    @property
    def nbytes(self) -> int:
        """Bytes held for the scores (kept float32 scores, or histograms)."""
        if self._exact:
            return 4 * (self._positives.size + self._negatives.size)
        return self._pos_hist.nbytes + self._neg_hist.nbytes

    def add(self, scores: np.ndarray, targets: np.ndarray) -> None:
        """Add a batch of pixels.

        Args:
            scores: anomaly-map values, any shape; converted to float32.
            targets: binary targets of the same shape (bool or 0/1).

        Raises:
            ValueError: on mismatched shapes, non-binary targets, NaN scores, or negative scores in binned mode.
        """
        scores = np.asarray(scores)
        targets = np.asarray(targets)
        if scores.shape != targets.shape:
            raise ValueError(f"scores and targets differ in shape: {scores.shape} vs {targets.shape}")
        flat_scores = _as_scores(scores, np.float32).ravel()
        flat_targets = _as_labels(targets, "targets").ravel()
        n_positive = int(np.count_nonzero(flat_targets))
        if self._exact:
            self._add_exact(flat_scores, flat_targets, n_positive)
            if self.nbytes > self._budget_bytes:
                self._switch_to_bins()
        else:
            self._add_binned(flat_scores, flat_targets)
        self._n_pixels += flat_scores.size
        self._n_positive += n_positive

    def _add_exact(self, scores: np.ndarray, targets: np.ndarray, n_positive: int) -> None:
        if n_positive:
            self._positives.extend(scores[targets])
        negatives = scores[~targets] if n_positive else scores
        nonzero = negatives[negatives != 0]
        if nonzero.size:
            self._negatives.extend(nonzero)
        self._negative_zeros += negatives.size - nonzero.size

    def _start_histograms(self) -> None:
        self._pos_hist = np.zeros(self._bins + 1, dtype=np.int64)
        self._neg_hist = np.zeros(self._bins + 1, dtype=np.int64)

    def _levels(self, scores: np.ndarray) -> np.ndarray:
        if scores.size and float(scores.min()) < 0:
            raise ValueError("binned pixel metrics need scores >= 0 (use exact mode for signed scores)")
        scaled = scores.astype(np.float64) * (self._bins / self._max_value)
        levels = np.minimum(np.floor(scaled).astype(np.int64) + 1, self._bins)
        levels[scores == 0] = 0
        return levels

    def _add_binned(self, scores: np.ndarray, targets: np.ndarray) -> None:
        levels = self._levels(scores)
        self._pos_hist += np.bincount(levels[targets], minlength=self._bins + 1)
        self._neg_hist += np.bincount(levels[~targets], minlength=self._bins + 1)

    def _switch_to_bins(self) -> None:
        for buffer in (self._positives, self._negatives):
            if buffer.size and float(buffer.values().min()) < 0:
                raise ValueError(
                    f"exact pixel metrics exceed max_memory_gb={self._budget_bytes / 1e9:g} and binning needs "
                    "scores >= 0; raise the budget"
                )
        self._start_histograms()
        for block in self._positives.blocks():
            self._pos_hist += np.bincount(self._levels(block), minlength=self._bins + 1)
        for block in self._negatives.blocks():
            self._neg_hist += np.bincount(self._levels(block), minlength=self._bins + 1)
        self._neg_hist[0] += self._negative_zeros
        self._negative_zeros = 0
        self._positives.clear()
        self._negatives.clear()
        self._exact = False

    def result(self) -> PixelMetrics:
        """AP and best Dice of all pixels added so far (more may be added afterwards).

        Raises:
            DataError: if no target pixel has been added.
        """
        if self._n_positive == 0:
            raise DataError(
                f"no anomalous pixels among the {self._n_pixels} evaluated: pixel AP and Dice are undefined"
            )
        if self._exact:
            positives = self._positives.values()
            positives.sort()  # in place; the held values are a multiset, so their order is free
            negatives = self._negatives.values()
            negatives.sort()
            ap, dice, threshold = _exact_summary(positives, negatives, self._negative_zeros)
        else:
            ap, dice, threshold = self._binned_summary()
        return PixelMetrics(
            ap=ap,
            max_dice=dice,
            best_threshold=threshold,
            n_pixels=self._n_pixels,
            n_positive=self._n_positive,
            exact=self._exact,
        )

    def _binned_summary(self) -> tuple[float, float, float]:
        tp_all = np.cumsum(self._pos_hist[::-1])[::-1]
        fp_all = np.cumsum(self._neg_hist[::-1])[::-1]
        occupied = np.flatnonzero(self._pos_hist)
        width = self._max_value / self._bins
        edges = np.maximum(occupied - 1, 0) * width
        # Level 1 starts just above 0 (exact zeros are level 0), so its threshold is the smallest positive float.
        edges = np.where(occupied == 1, float(np.nextafter(np.float32(0), np.float32(1))), edges)
        return _summarise(edges, tp_all[occupied], fp_all[occupied], self._n_positive)


class SliceAccumulator:
    """Collects one score and one binary label per slice, then gives image-level AP and AUROC."""

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add the scores (float) and labels (bool or 0/1) of a batch of slices, both of shape (B,)."""
        scores = np.asarray(scores)
        labels = np.asarray(labels)
        if scores.shape != labels.shape or scores.ndim != 1:
            raise ValueError(f"slice scores and labels must be 1-D of equal length, got {scores.shape}, {labels.shape}")
        self._scores.append(_as_scores(scores).astype(np.float64, copy=True))
        self._labels.append(_as_labels(labels, "slice labels").copy())

    @property
    def n_slices(self) -> int:
        """Slices added so far."""
        return sum(s.size for s in self._scores)

    def result(self) -> SliceMetrics:
        """AP and AUROC of all slices added so far.

        Raises:
            DataError: if all slices have the same label.
        """
        scores = np.concatenate(self._scores) if self._scores else np.empty(0)
        labels = np.concatenate(self._labels) if self._labels else np.empty(0, dtype=bool)
        n_positive = int(labels.sum())
        if n_positive == 0 or n_positive == labels.size:
            raise DataError(
                f"slice metrics need both normal and anomalous slices, got {n_positive} anomalous of {labels.size}"
            )
        return SliceMetrics(
            ap=average_precision(labels, scores),
            auroc=auroc(labels, scores),
            n_slices=int(labels.size),
            n_positive=n_positive,
        )

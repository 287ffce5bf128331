"""What an evaluation reports: typed, frozen records for :func:`engine.evaluation.evaluate` (scans with lesion labels)
and :func:`engine.synthetic.evaluate_synthetic` (synthetic anomalies on healthy scans), and the summary of either
that a model card keeps (:class:`EvaluationRecord`); also the report on healthy scans alone
(:class:`HealthyReport`, from :func:`engine.calibration.healthy_report`).

Every report's :meth:`to_dict` gives the JSON that ``condiff-engine evaluate --json`` writes: the model's metrics at
the top level, beside them the controls ``random``, ``noise`` and ``brain_area``, then the counts and how the run was
made. This module holds data only (no torch), so model cards can be read without loading a network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.json_records import INLINE, OPTIONAL, record_to_json
from engine.transfer import TransferResult

HEADLINE = ("ap_image", "auroc_image", "ap_pixel", "max_dice")
"""The four numbers a model card records for the model and each control (the paper's metrics)."""

SYNTHETIC_COUNTING = "model space, brain slices of the healthy scans; anomaly = synthetic mask inside the brain"
"""How the synthetic benchmark counts slices and pixels."""

_SKIP_NONE = {OPTIONAL: True}


@dataclass(frozen=True)
class Scores:
    """Some of the four headline metrics; None for one not measured (e.g. pixel metrics of a slice-level control).

    Attributes:
        ap_image / auroc_image: average precision and ROC area of the slice score against slice labels.
        ap_pixel / max_dice: average precision and best Dice of the map against pixel labels.
    """

    ap_image: float | None = field(default=None, metadata=_SKIP_NONE)
    auroc_image: float | None = field(default=None, metadata=_SKIP_NONE)
    ap_pixel: float | None = field(default=None, metadata=_SKIP_NONE)
    max_dice: float | None = field(default=None, metadata=_SKIP_NONE)

    def rounded(self, digits: int = 4) -> Scores:
        """The same scores rounded (what a model card keeps)."""
        return Scores(*(None if v is None else round(float(v), digits) for v in self._values()))

    def _values(self) -> tuple[float | None, ...]:
        return self.ap_image, self.auroc_image, self.ap_pixel, self.max_dice


@dataclass(frozen=True)
class DetectionScores:
    """A map's pooled detection metrics on a test set.

    Attributes:
        ap_image / auroc_image: slice score = the map's mean over the canvas (the paper's).
        ap_pixel / max_dice / best_threshold: pixel level; ``best_threshold`` reaches ``max_dice``.
        ap_image_brain_mean / auroc_image_brain_mean: slice score = the map's mean over the brain.
        ap_image_topk / auroc_image_topk: slice score = the mean of the slice's highest brain values.
    """

    ap_image: float
    auroc_image: float
    ap_pixel: float
    max_dice: float
    best_threshold: float
    ap_image_brain_mean: float
    auroc_image_brain_mean: float
    ap_image_topk: float
    auroc_image_topk: float

    def headline(self) -> Scores:
        """The four headline metrics."""
        return Scores(self.ap_image, self.auroc_image, self.ap_pixel, self.max_dice)


@dataclass(frozen=True)
class Detection:
    """The model's detection metrics beside the controls a number needs to mean anything.

    Attributes:
        scores: the model's maps.
        random: chance level (prevalence for AP, ``2p / (1 + p)`` for max Dice, 0.5 for AUROC).
        noise: the same map pipeline fed Gaussian noise with each slice's brain mean and spread as "restoration".
        brain_area: the number of brain pixels as slice score (slice-level metrics only).
    """

    scores: DetectionScores = field(metadata={INLINE: True})
    random: Scores
    noise: DetectionScores
    brain_area: Scores


@dataclass(frozen=True)
class ThresholdResult:
    """What the calibrated threshold does on a test set (all None for an uncalibrated model).

    Attributes:
        threshold: the threshold applied.
        lesion_sensitivity: share of lesion pixels flagged.
        dice: Dice of the flagged pixels against the lesions.
        healthy_brain_flagged: share of non-lesion brain pixels flagged.
    """

    threshold: float | None
    lesion_sensitivity: float | None
    dice: float | None
    healthy_brain_flagged: float | None


@dataclass(frozen=True)
class HealthyReport:
    """A model on healthy scans: how faithfully it restores them and how much brain the threshold flags.

    Attributes:
        scans: number of healthy scans.
        restoration_dssim_in_brain / restoration_mae_in_brain: mean over scans of 1 - SSIM and of the absolute error
            inside the brain.
        threshold: the calibrated threshold (None when uncalibrated).
        flagged_brain_fraction: share of brain voxels at or above it on the map a user gets (each scan's own grid;
            None without a threshold).
        shifted_flagged: the same share on the scans as other acquisitions show them (:func:`engine.transfer.
            shifted_healthy`: ``"1mm"``, ``"bias"``, ``"contrast"``), when asked for.
    """

    scans: int
    restoration_dssim_in_brain: float
    restoration_mae_in_brain: float
    threshold: float | None
    flagged_brain_fraction: float | None
    shifted_flagged: Mapping[str, float] = field(default_factory=dict, metadata=_SKIP_NONE)


@dataclass(frozen=True)
class Removal:
    """The removal check: inside the anomalies, is the restoration closer to the healthy truth than to the input?

    Attributes:
        mae_to_truth / mae_to_input: mean absolute error inside the anomalies to the healthy truth and to the input.
        removes_anomalies: ``mae_to_truth < mae_to_input``.
        healthy_dssim / healthy_mae: on the slices left healthy, 1 - SSIM and absolute error inside the brain.
    """

    mae_to_truth: float
    mae_to_input: float
    removes_anomalies: bool
    healthy_dssim: float
    healthy_mae: float


@dataclass(frozen=True)
class LesionCounts:
    """What an evaluation on lesion scans counted (model space)."""

    cases: int
    slices: int
    lesion_slices: int
    pixels: int
    lesion_pixels: int
    brain_pixels: int
    lesion_pixels_in_brain: int


@dataclass(frozen=True)
class SyntheticCounts:
    """What the synthetic benchmark counted (model space)."""

    slices: int
    anomalous_slices: int
    brain_pixels: int
    anomaly_pixels: int


@dataclass(frozen=True)
class CaseResult:
    """One evaluation case: its size, its lesion, and the mean map inside and outside it."""

    case: str
    slices: int
    lesion_slices: int
    lesion_pixels: int
    mean_map_in_lesion: float | None
    mean_map_in_healthy_brain: float


@dataclass(frozen=True)
class EvaluationReport:
    """The paper's evaluation of a model on scans with lesion labels (:func:`engine.evaluation.evaluate`).

    Attributes:
        detection: the model's metrics and the controls.
        at_threshold: what the calibrated threshold flags.
        counts / counting: what was counted, and how.
        model / members / sampler / steps / seed: what produced the maps.
        cases: per case, its size and mean map values.
        seconds: how long the evaluation took.
        healthy: the healthy-scan part, when healthy scans were given.
        transfer: what the calibrated threshold flags on the map a user gets (each scan's own grid, the analysed
            slices and those filled between them): sensitivity, precision, non-lesion brain and brain far from any
            lesion flagged (None for an uncalibrated model).
        dataset / modality: where the cases came from (set by the caller; left out of the JSON when None).
    """

    detection: Detection = field(metadata={INLINE: True})
    at_threshold: ThresholdResult
    counts: LesionCounts
    counting: str
    model: str
    members: tuple[int, ...]
    sampler: str
    steps: int
    seed: int
    cases: tuple[CaseResult, ...]
    seconds: float
    healthy: HealthyReport | None = field(default=None, metadata=_SKIP_NONE)
    transfer: TransferResult | None = field(default=None, metadata=_SKIP_NONE)
    dataset: str | None = field(default=None, metadata=_SKIP_NONE)
    modality: str | None = field(default=None, metadata=_SKIP_NONE)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``evaluate --json``."""
        return record_to_json(self)


@dataclass(frozen=True)
class SyntheticScores:
    """The synthetic benchmark's metrics for given restorations (:func:`engine.synthetic.score_synthetic`).

    Attributes:
        detection: the model's metrics and the controls.
        removal: the removal check and the fidelity of the slices left healthy.
        counts: what was counted.
        tasks: the synthetic tasks the anomalies came from.
        seed: the benchmark's corruption seed.
    """

    detection: Detection = field(metadata={INLINE: True})
    removal: Removal = field(metadata={INLINE: True})
    counts: SyntheticCounts
    tasks: tuple[int, ...]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for a :class:`SyntheticReport`, the JSON of ``evaluate --synthetic --json``): the metrics and
        the removal check at the top level, then controls and counts."""
        return record_to_json(self)


@dataclass(frozen=True)
class SyntheticReport(SyntheticScores):
    """The synthetic benchmark of a model folder on healthy scans (:func:`engine.synthetic.evaluate_synthetic`): the
    benchmark's scores (the fields of :class:`SyntheticScores`) and how they were made.

    Attributes:
        scans: number of healthy scans the slices came from.
        model / members / sampler / steps: what produced the maps.
        p_no_task: share of slices left healthy.
        seconds: how long the benchmark took.
        dataset / modality: where the scans came from (set by the caller; left out of the JSON when None).
        counting: how slices and pixels were counted.
    """

    scans: int
    model: str
    members: tuple[int, ...]
    sampler: str
    steps: int
    p_no_task: float
    seconds: float
    dataset: str | None = field(default=None, metadata=_SKIP_NONE)
    modality: str | None = field(default=None, metadata=_SKIP_NONE)
    counting: str = SYNTHETIC_COUNTING


@dataclass(frozen=True, kw_only=True)
class EvaluationRecord:
    """The summary of an evaluation that a model card keeps under ``evaluations``: the four metrics beside the
    controls, what was counted, the sampler and members that produced it, and the command that reproduces it.

    Attributes:
        dataset / modality: what was evaluated.
        sampler / steps / seed / members: how the maps were made.
        metrics: the model's four metrics (rounded to 4 digits).
        controls: the same for ``random``, ``noise`` and ``brain_area``.
        counts / counting: what was counted, and how.
        seconds: how long it took.
        recorded: when it was recorded (ISO 8601, UTC).
        command: the command line that reproduces it.
        healthy / at_threshold / removal: the parts of the report that ran (None for the others).
    """

    dataset: str
    modality: str
    sampler: str
    steps: int
    seed: int
    members: tuple[int, ...]
    metrics: Scores
    controls: Mapping[str, Scores]
    counts: Mapping[str, int]
    counting: str
    seconds: float
    recorded: str
    command: str
    healthy: HealthyReport | None = field(default=None, metadata=_SKIP_NONE)
    at_threshold: ThresholdResult | None = field(default=None, metadata=_SKIP_NONE)
    removal: Removal | None = field(default=None, metadata=_SKIP_NONE)


def evaluation_record(report: EvaluationReport | SyntheticReport, *, command: str, recorded: str) -> EvaluationRecord:
    """The model card's summary of ``report``.

    Args:
        report: an evaluation whose ``dataset`` and ``modality`` are set.
        command: the command line that made it.
        recorded: the time of recording (ISO 8601).
    """
    detection = report.detection
    lesions = report if isinstance(report, EvaluationReport) else None
    return EvaluationRecord(
        dataset=report.dataset or "",
        modality=report.modality or "",
        sampler=report.sampler,
        steps=report.steps,
        seed=report.seed,
        members=report.members,
        metrics=detection.scores.headline().rounded(),
        controls={"random": detection.random.rounded(), "noise": detection.noise.headline().rounded(),
                  "brain_area": detection.brain_area.rounded()},
        counts=record_to_json(report.counts),
        counting=report.counting,
        seconds=report.seconds,
        recorded=recorded,
        command=command,
        healthy=lesions.healthy if lesions else None,
        at_threshold=lesions.at_threshold if lesions else None,
        removal=report.removal if isinstance(report, SyntheticReport) else None,
    )


@dataclass(frozen=True)
class ResultsReport:
    """Lesion cases scored from a cohort's written maps (``evaluate --results``), without running a model.

    Everything is counted on each scan's own grid, inside the brain its analysis used, on the map a user gets (the
    ``anomalyscore`` map ``infer`` wrote).

    Attributes:
        results: the cohort output folder read.
        model / members / sampler / steps / seed: what made the maps (from ``cohort.json``).
        cases: the cases scored, in the order given.
        ap_pixel / max_dice: pixel-level AP and best Dice over brain voxels, pooled over the cases.
        random_ap_pixel / random_max_dice: the same for a random map (the lesion share of brain voxels).
        transfer: what the cohort's threshold flags (sensitivity, precision, non-lesion and far brain flagged).
    """

    results: str
    model: str
    members: tuple[int, ...]
    sampler: str
    steps: int
    seed: int
    cases: tuple[str, ...]
    ap_pixel: float
    max_dice: float
    random_ap_pixel: float
    random_max_dice: float
    transfer: TransferResult
    dataset: str | None = field(default=None, metadata=_SKIP_NONE)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``evaluate --results --json``."""
        return record_to_json(self)

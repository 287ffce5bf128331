"""The data that crosses the engine's public boundary: analysis settings, model description and results, and the
threshold rule (:func:`flagged`) every consumer of a map applies.

Everything here is plain Python, numpy arrays and frozen dataclasses (no torch types), so the viewer and scripts can
hold results without knowing how they were made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.config import MapScoring
from engine.errors import ConfigError
from engine.samplers import SAMPLERS, SamplerName

Sampler = SamplerName


@dataclass(frozen=True)
class AnalysisSettings:
    """How to run an analysis.

    Attributes:
        sampler: ``"ddim"`` or ``"dpm"`` (few-step, for interactive use) or ``"paper"`` (50-step DDPM, leading
            spacing, as in Baugh et al.).
        steps: sampler steps; None takes the model's default (``"paper"`` always uses 50).
        seed: seed of the initial noise; the same seed gives the same result on the same device.
        batch_size: slices restored together per member (memory knob).
        slice_stride: when analysing a whole volume, analyse every ``slice_stride``-th axial slice and interpolate
            the slices in between; None picks the model's in-plane spacing over the scan's slice thickness (e.g. 3
            for a 3 mm model on a 1 mm scan), 1 analyses every slice. Ignored when slices are chosen explicitly.
        scoring: how restorations are compared with the input; None takes the model card's.
    """

    sampler: Sampler = "ddim"
    steps: int | None = None
    seed: int = 0
    batch_size: int = 64
    slice_stride: int | None = None
    scoring: MapScoring | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise ConfigError(f"steps must be between 1 and 1000, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.slice_stride is not None and self.slice_stride < 1:
            raise ConfigError(f"slice_stride must be positive, got {self.slice_stride}")


@dataclass(frozen=True)
class Calibration:
    """What an anomaly-map value means for a model, measured on healthy scans.

    The anomaly map is ``1 - SSIM`` (the model's SSIM convention) averaged over members; ``threshold`` is in those
    same units and flags ``healthy_fpr`` of healthy brain voxels.

    Attributes:
        threshold: default decision threshold on the anomaly map.
        healthy_fpr: fraction of healthy brain voxels above ``threshold`` on the calibration scans.
        display_max: a sensible top of the colour scale (a high healthy percentile times a margin).
        healthy_percentiles: map-value percentiles over healthy brain voxels, keyed by percentile ("50", "90", ...).
        slice_score_percentiles: the same for healthy slice scores.
        units: a short description of the units, shown beside the threshold slider.
        scans: number of healthy scans used.
        sampler / steps: the sampler settings the calibration was measured with (maps of other settings differ).
        restoration_dssim_in_brain / restoration_mae_in_brain: how faithfully the calibration scans were restored
            (mean over scans of 1 - SSIM and of the absolute error inside the brain; None in older calibrations).
        heldout_scans / heldout_fpr: healthy scans kept out of the threshold's choice, and the share of their brain
            voxels the threshold flags (the calibration's honest check; 0 / None when none were held out).
        heldout_dssim_in_brain: how faithfully those held-out scans were restored (1 - SSIM inside the brain).
        grid: where the voxels were counted: ``"native"``, the map a user gets (each scan's own grid, the analysed
            slices and the ones filled between them), or ``"model"`` (the model canvas, every slice; older cards).
        slice_stride: the slice stride the maps were made with (None: the model's automatic stride).
        scoring: the comparison the maps were made with (None in older cards: the plain one).
        shift_thresholds: with ``calibrate --shifts``, the threshold flagging the same share of each shifted
            acquisition of the calibration scans (``"thick"``, ``"noise"``, ...); ``threshold`` is the highest of
            these and the plain one.
    """

    threshold: float
    healthy_fpr: float
    display_max: float
    healthy_percentiles: dict[str, float] = field(default_factory=dict)
    slice_score_percentiles: dict[str, float] = field(default_factory=dict)
    units: str = "1 - SSIM (ensemble mean)"
    scans: int = 0
    sampler: str = ""
    steps: int = 0
    restoration_dssim_in_brain: float | None = None
    restoration_mae_in_brain: float | None = None
    heldout_scans: int = 0
    heldout_fpr: float | None = None
    heldout_dssim_in_brain: float | None = None
    grid: str = "model"
    slice_stride: int | None = None
    scoring: MapScoring | None = None
    shift_thresholds: dict[str, float] = field(default_factory=dict)

    def mismatches(self, sampler: str, steps: int, slice_stride: int | None, scoring: MapScoring) -> tuple[str, ...]:
        """What differs between an analysis's settings and the ones this threshold was measured with (empty when
        the threshold holds for them)."""
        out = []
        if self.sampler and self.sampler != sampler:
            out.append(f"sampler {sampler} (calibrated: {self.sampler})")
        if self.steps and self.steps != steps:
            out.append(f"{steps} steps (calibrated: {self.steps})")
        if self.grid == "native" and self.slice_stride != slice_stride:
            out.append(f"slice stride {slice_stride or 'auto'} (calibrated: {self.slice_stride or 'auto'})")
        if (self.scoring or MapScoring()) != scoring:
            out.append("another map comparison than the calibrated one")
        return tuple(out)


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model folder, as a user sees it.

    Attributes:
        name / version / model_id: ``model_id`` is ``"<name>-v<version>"``.
        modality: the MR contrast the model was trained on (``"t1"``).
        preset: name of the preset (``"small"``, ...).
        members: number of ensemble members (one per task fold).
        folds: fold index of each member.
        device: the torch device the members run on (``"cpu"`` or ``"cuda"``).
        runtime: what runs the members' networks there (a key of :data:`engine.runtimes.RUNTIMES`).
        expects_skull_stripped: True if the model was trained on brain-extracted scans.
        ssim_convention: ``"paper"`` or ``"standard"`` constants of the anomaly map.
        calibration: healthy-scan calibration, or None for an uncalibrated model.
        default_sampler / default_steps: the settings used when the caller gives none.
        path: the model folder.
        slice_score: how a slice's score is made from its map (:data:`engine.anomaly.SliceScoreMode`): ``"canvas"``
            (the paper's mean over the canvas) or ``"topk"`` (the mean of the slice's highest brain values).
    """

    name: str
    version: str
    model_id: str
    modality: str
    preset: str
    members: int
    folds: tuple[int, ...]
    device: str
    expects_skull_stripped: bool
    ssim_convention: str
    calibration: Calibration | None
    default_sampler: str
    default_steps: int
    path: str
    slice_score: str = "canvas"
    runtime: str = "torch"

    @property
    def runs_on(self) -> str:
        """Where the members run, as a user reads it: ``"cpu (onnxruntime)"``, ``"cuda"``."""
        return self.device if self.runtime == "torch" else f"{self.device} ({self.runtime})"


@dataclass(frozen=True, eq=False)
class AnomalyResult:
    """The analysis of one volume, on the input's own voxel grid (same shape, same voxel order, same affine).

    Voxels outside the analysed slices (or outside the brain) hold 0 in the maps and the input's own value in
    ``restored``.

    Attributes:
        anomaly_map: float32, ensemble mean of the members' ``1 - SSIM`` maps, zero in the background.
        member_spread: float32, standard deviation of the members' maps (disagreement).
        restored: float32, the pseudo-healthy restoration in the input's intensity units.
        slice_scores: float32 of length ``n_slices`` along ``slice_axis``: the model's slice score
            (``ModelInfo.slice_score``) of the model-space map; NaN for slices not analysed.
        analysed: bool of length ``n_slices``: which slices along ``slice_axis`` were restored by the model.
        covered: bool of length ``n_slices``: slices whose maps hold values, analysed or interpolated between
            analysed neighbours (see ``AnalysisSettings.slice_stride``).
        slice_axis: the native array axis the engine slices along (the one closest to inferior-superior).
        seed / sampler / steps / model_id: what produced the result.
        threshold: the model's calibrated default threshold (None when uncalibrated).
        warnings: one-line warnings about the input (e.g. "not skull-stripped?").
        uncalibrated_for: what in this analysis's settings differs from those the threshold was calibrated with
            (sampler, steps, stride, comparison); empty when the threshold holds for them.
    """

    anomaly_map: np.ndarray
    member_spread: np.ndarray
    restored: np.ndarray
    slice_scores: np.ndarray
    analysed: np.ndarray
    covered: np.ndarray
    slice_axis: int
    seed: int
    sampler: str
    steps: int
    model_id: str
    threshold: float | None = None
    warnings: tuple[str, ...] = ()
    uncalibrated_for: tuple[str, ...] = ()


def flagged(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """The voxels a threshold flags: score at or above it, compared in float32 as the maps are stored (the one rule
    behind the exported mask, its voxel count, the findings, the transfer counts and the viewer's overlay)."""
    return np.asarray(anomaly_map) >= np.float32(threshold)

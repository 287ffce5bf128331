"""Calibration on healthy scans: the threshold a model ships with, and how healthy scans fare at it.

Each healthy scan is analysed whole, as ``infer`` does (the model's slice stride, the slices in between filled), and
counted on the map a user gets: the scan's own grid, inside the brain the analysis used.

* :func:`calibrate` pools the brain voxels' map values and the slice scores of the calibration scans and picks the
  threshold flagging a chosen share of healthy brain (:func:`threshold_for_fpr`), optionally checked on held-out
  scans and made to hold on shifted acquisitions (:data:`engine.transfer.SHIFTS`); :func:`store_calibration` writes
  it into the model card.
* :func:`healthy_report` measures the same things with a stored calibration: how faithfully healthy scans are
  restored and the share of their brain the calibrated threshold flags (as they are and shifted). It is the healthy
  part of :func:`engine.evaluation.evaluate` and ``condiff-engine evaluate --healthy``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.brain import analysis_brain
from engine.card import ModelCard, update_card
from engine.data import ScanPair
from engine.ensemble import Ensemble, ModelSpaceResult
from engine.errors import ConfigError, DataError
from engine.evaluation_records import HealthyReport
from engine.progress import CancelToken, Progress, check_cancel
from engine.readers import load_mask, load_volume
from engine.results import AnalysisSettings, Calibration
from engine.transfer import TransferCounts, shifted_healthy

HEALTHY_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.5, 99.9)


@dataclass(frozen=True, eq=False)
class _HealthyScan:
    """One healthy scan analysed as a user would: model space, the restored slices' result, the user's map."""

    ms: Any
    chosen: np.ndarray
    result: ModelSpaceResult
    native_map: np.ndarray
    brain: np.ndarray
    zooms: tuple[float, ...]


def _healthy_scans(ensemble: Ensemble, scans: Sequence[ScanPair], settings: AnalysisSettings,
                   cancel: CancelToken | None, shift: str | None = None) -> Iterator[_HealthyScan]:
    """Each healthy scan (optionally as another acquisition shows it) analysed whole, as ``infer`` would."""
    for scan in scans:
        check_cancel(cancel)
        volume = load_volume(scan.image)
        mask = load_mask(scan.mask, volume) if scan.mask else None
        if shift is not None:
            volume, mask = shifted_healthy(volume, analysis_brain(volume, mask), shift)
        ms = ensemble.to_model_space(volume, mask)
        chosen = ensemble.stride_choice(volume, ms, settings)
        result = ensemble.analyse_model_space(ms.slices[chosen], ms.brain[chosen], ms.native_index[chosen], settings,
                                              cancel=cancel)
        native = ensemble.native_result(volume, ms, result, chosen, settings, mask)
        yield _HealthyScan(ms, chosen, result, native.anomaly_map, analysis_brain(volume, mask), volume.zooms)


def _fidelity(scan: _HealthyScan) -> tuple[float, float]:
    """How faithfully one healthy scan came back: mean 1 - SSIM and mean absolute error inside its brain (over the
    restored model slices)."""
    brain = scan.ms.brain[scan.chosen]
    return (float(scan.result.mean_map[brain].mean()),
            float(np.abs(scan.result.restored - scan.ms.slices[scan.chosen])[brain].mean()))


def healthy_report(ensemble: Ensemble, scans: Sequence[ScanPair], settings: AnalysisSettings, *,
                   shifts: Sequence[str] = (), cancel: CancelToken | None = None) -> HealthyReport:
    """On healthy scans: how faithfully slices are restored, and the brain flagged at the calibrated threshold on
    the map a user gets; with ``shifts``, also on the scans as other acquisitions show them."""
    threshold = ensemble.info.calibration.threshold if ensemble.info.calibration else None
    counts = TransferCounts(threshold if threshold is not None else np.inf)
    fidelity = []
    for scan in _healthy_scans(ensemble, scans, settings, cancel):
        fidelity.append(_fidelity(scan))
        counts.add(scan.native_map, scan.brain, None, scan.zooms)
    shifted = {}
    if threshold is not None:
        for shift in shifts:
            shift_counts = TransferCounts(threshold)
            for scan in _healthy_scans(ensemble, scans, settings, cancel, shift):
                shift_counts.add(scan.native_map, scan.brain, None, scan.zooms)
            shifted[shift] = float(shift_counts.result().brain_flagged or 0.0)
    dssim, mae = np.mean(fidelity, axis=0)
    return HealthyReport(
        scans=len(scans),
        restoration_dssim_in_brain=float(dssim),
        restoration_mae_in_brain=float(mae),
        threshold=threshold,
        flagged_brain_fraction=counts.result().brain_flagged if threshold is not None else None,
        shifted_flagged=shifted,
    )


def threshold_for_fpr(values: np.ndarray, fpr: float) -> float:
    """The lowest float32 threshold ``t`` with ``mean(values >= t) <= fpr``.

    At most ``floor(fpr * n)`` values are flagged, never more, whatever ties there are: ``t`` sits one float32 step
    above the largest value that must stay unflagged.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float32).ravel())
    if ordered.size == 0:
        raise ValueError("no values to calibrate on")
    allowed = int(np.floor(fpr * ordered.size))
    highest_unflagged = ordered[ordered.size - 1 - allowed]
    return float(np.nextafter(highest_unflagged, np.float32(np.inf)))


def calibrate(
    ensemble: Ensemble,
    scans: Sequence[ScanPair],
    settings: AnalysisSettings,
    *,
    fpr: float = 0.01,
    hold_out: int = 0,
    shifts: Sequence[str] = (),
    cancel: CancelToken | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Calibration:
    """Measure the healthy distribution of map values and slice scores, and the threshold flagging ``fpr`` of
    healthy brain voxels on the map a user gets: each scan analysed whole as ``infer`` does (the model's slice stride,
    the slices in between filled), on its own grid, inside its brain mask. Voxels and slice scores of all calibration
    scans are pooled; the sampler, steps, stride and comparison are recorded with the threshold.

    With ``hold_out = n``, the last ``n`` scans do not take part in choosing the threshold; the share of their brain
    voxels it flags is recorded as :attr:`Calibration.heldout_fpr` (a threshold that holds on other healthy scans
    stays near ``fpr`` there).

    With ``shifts`` (:data:`engine.transfer.SHIFTS`), the calibration scans are also analysed as those other
    acquisitions would show them, and the threshold is the highest of the per-acquisition thresholds: it flags at
    most ``fpr`` of healthy brain on the scans as they are *and* on each shifted version (recorded in
    :attr:`Calibration.shift_thresholds`). One scanner's healthy scans then no longer set a threshold that only holds
    on that scanner.
    """
    if not 0 < fpr < 1:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr}")
    if hold_out < 0 or hold_out >= len(scans):
        raise DataError(f"calibration needs at least one healthy scan besides the {hold_out} held out, "
                        f"got {len(scans)}")
    start = time.monotonic()
    values, scores, fidelity = [], [], []
    heldout_values, heldout_fidelity = [], []
    n_fit = len(scans) - hold_out
    for i, scan in enumerate(_healthy_scans(ensemble, scans, settings, cancel)):
        brain_values = scan.native_map[scan.brain].astype(np.float32)
        if i < n_fit:
            values.append(brain_values)
            scores.append(scan.result.scores.astype(np.float32))
            fidelity.append(_fidelity(scan))
        else:
            heldout_values.append(brain_values)
            heldout_fidelity.append(_fidelity(scan))
        if on_progress is not None:
            on_progress(Progress(i + 1, len(scans), "healthy scans", time.monotonic() - start))
    pooled = np.concatenate(values)
    pooled_scores = np.concatenate(scores)
    threshold = threshold_for_fpr(pooled, fpr)
    shift_thresholds = {}
    for shift in shifts:
        shifted = [scan.native_map[scan.brain] for scan in _healthy_scans(ensemble, scans[:n_fit], settings, cancel,
                                                                           shift)]
        shift_thresholds[shift] = threshold_for_fpr(np.concatenate(shifted), fpr)
        if on_progress is not None:
            on_progress(Progress(len(scans), len(scans), f"shift {shift}", time.monotonic() - start))
    threshold = max([threshold, *shift_thresholds.values()])
    dssim, mae = np.mean(fidelity, axis=0)
    heldout = np.concatenate(heldout_values) if heldout_values else None
    return Calibration(
        threshold=threshold,
        healthy_fpr=float((pooled >= threshold).mean()),
        display_max=float(min(1.0, max(2.0 * threshold, np.quantile(pooled, 0.9999)))),
        healthy_percentiles={f"{p:g}": float(np.percentile(pooled, p)) for p in HEALTHY_PERCENTILES},
        slice_score_percentiles={f"{p:g}": float(np.percentile(pooled_scores, p)) for p in HEALTHY_PERCENTILES},
        scans=n_fit,
        sampler=settings.sampler,
        steps=ensemble.steps_for(settings),
        restoration_dssim_in_brain=float(dssim),
        restoration_mae_in_brain=float(mae),
        heldout_scans=hold_out,
        heldout_fpr=float((heldout >= threshold).mean()) if heldout is not None else None,
        heldout_dssim_in_brain=float(np.mean([f[0] for f in heldout_fidelity])) if heldout_fidelity else None,
        grid="native",
        slice_stride=settings.slice_stride,
        shift_thresholds=shift_thresholds,
        scoring=settings.scoring or ensemble.scoring,
    )


def store_calibration(model_dir: str | Path, calibration: Calibration, *, slice_score: str | None = None) -> None:
    """Write ``calibration`` into the model folder's card (and the slice score and map comparison it was measured
    with: the card's comparison becomes the calibration's, so the threshold and the maps agree)."""
    def change(card: ModelCard) -> ModelCard:
        return replace(card, calibration=calibration, slice_score=slice_score or card.slice_score,
                       scoring=calibration.scoring or card.scoring)

    update_card(model_dir, change)

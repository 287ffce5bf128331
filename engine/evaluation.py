"""The paper's evaluation of a model on scans with lesion labels, with the controls that give its numbers meaning.

Cases are found by :func:`find_cases` (a BraTS-style folder, a single case folder or a CSV manifest). :func:`evaluate`
runs the model on them; :func:`evaluate_results` scores the maps a cohort run already wrote. With healthy scans,
:func:`evaluate` adds their report (:func:`engine.calibration.healthy_report`).

:func:`evaluate` works in model space, like the paper: slices and pixels are counted on the model's canvas (all brain
slices of a scan, ``size x size`` pixels each, background included), with lesion labels carried into model space by
the same resampling as the intensities and thresholded at 0.4 (the paper's rule for segmentations).

Evaluation reports, beside the model, the controls a detection number needs to mean anything:

* ``random``: chance level (prevalence for AP, ``2p / (1 + p)`` for max Dice, 0.5 for AUROC); at pixel level the
  random map is, like every map, zero outside the brain, so ``p`` is the lesion share of brain pixels;
* ``noise``: the same map pipeline fed a "restoration" that is Gaussian noise with each slice's brain mean and
  spread, i.e. what 1 - SSIM finds without any model;
* ``brain_area``: the number of brain pixels as the slice score (lesion slices hold more brain, so slice-level
  numbers must beat this).
"""
from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from engine.anomaly import anomaly_map as ssim_anomaly_map
from engine.anomaly import slice_scores
from engine.brain import analysis_brain
from engine.calibration import healthy_report
from engine.data import ScanPair
from engine.ensemble import Ensemble, ModelSpaceResult
from engine.errors import DataError, VolumeError
from engine.evaluation_records import (
    CaseResult,
    Detection,
    DetectionScores,
    EvaluationReport,
    LesionCounts,
    ResultsReport,
    Scores,
    ThresholdResult,
)
from engine.metrics import PixelAccumulator, SliceAccumulator, random_baseline
from engine.preprocess import native_to_model
from engine.progress import CancelToken, Progress, check_cancel
from engine.readers import load_mask, load_volume
from engine.results import AnalysisSettings, flagged
from engine.transfer import TransferCounts

logger = logging.getLogger(__name__)

LABEL_THRESHOLD = 0.4
_LABEL_WORDS = ("seg", "lesion", "label", "mask")


@dataclass(frozen=True)
class Case:
    """One evaluation scan with its lesion label (and optional brain mask)."""

    name: str
    image: Path
    label: Path
    brain_mask: Path | None = None


def _matches_modality(path: Path, modality: str) -> bool:
    stem = path.name.lower().split(".nii")[0]
    return stem.endswith(f"_{modality.lower()}") or stem.endswith(f"_{modality.lower()}w")


def _case_in_folder(folder: Path, modality: str) -> Case | None:
    images = [p for p in sorted(folder.glob("*.nii*")) if _matches_modality(p, modality)]
    labels = [p for p in sorted(folder.glob("*.nii*"))
              if any(re.search(rf"_{w}\b", p.name.lower().split(".nii")[0]) for w in _LABEL_WORDS)]
    if not images or not labels:
        return None
    return Case(folder.name, images[0], labels[0])


def find_cases(dataset: str | Path, modality: str) -> list[Case]:
    """Cases of a dataset: a folder of case folders (BraTS layout: ``<case>/<case>_<modality>.nii.gz`` with
    ``<case>/<case>_seg.nii.gz``), a single case folder (``*_<modality>.nii.gz`` with ``*_seg`` / ``*_lesion``), or a
    CSV manifest with columns ``image`` and ``label`` (optional ``brain_mask``, ``name``; paths relative to the CSV).

    Raises:
        DataError: nothing usable was found.
    """
    dataset = Path(dataset)
    if dataset.is_file() and dataset.suffix.lower() == ".csv":
        cases = []
        with dataset.open(newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if "image" not in row or "label" not in row:
                    raise DataError(f"{dataset}: the manifest needs 'image' and 'label' columns")
                base = dataset.parent
                mask = row.get("brain_mask") or None
                cases.append(Case(row.get("name") or f"case{i}", base / row["image"], base / row["label"],
                                  base / mask if mask else None))
        if not cases:
            raise DataError(f"{dataset}: the manifest lists no cases")
        return cases
    if not dataset.is_dir():
        raise DataError(f"{dataset}: no such dataset folder or CSV manifest")
    single = _case_in_folder(dataset, modality)
    if single is not None:
        return [single]
    cases = [c for c in (_case_in_folder(sub, modality) for sub in sorted(dataset.iterdir()) if sub.is_dir()) if c]
    if not cases:
        raise DataError(f"{dataset}: no case with a *_{modality} scan and a *_seg/*_lesion label")
    return cases


def noise_restoration(slices: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The noise control: per slice, Gaussian noise with the slice's brain mean and standard deviation."""
    out = np.zeros_like(slices)
    for i in range(slices.shape[0]):
        values = slices[i][brain[i]]
        if values.size:
            out[i] = rng.normal(values.mean(), values.std(), size=slices.shape[1:]).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _maps_of(restored: np.ndarray, slices: np.ndarray, brain: np.ndarray, convention: str) -> np.ndarray:
    maps = ssim_anomaly_map(torch.from_numpy(restored)[:, None], torch.from_numpy(slices)[:, None],
                            convention=convention, foreground=torch.from_numpy(brain)[:, None])  # type: ignore[arg-type]
    return maps[:, 0].numpy()


@dataclass
class Scoreboard:
    """Pools maps and labels over a test set: pixel AP / max Dice, slice AP / AUROC (canvas mean, the paper's score,
    and brain mean), and the brain pixels they were counted in (for a chance level that, like every map, is zero
    outside the brain)."""

    pixels: PixelAccumulator
    slices_canvas: SliceAccumulator
    slices_brain: SliceAccumulator
    slices_topk: SliceAccumulator
    brain_pixels: int = 0
    lesion_pixels_in_brain: int = 0

    @classmethod
    def new(cls) -> Scoreboard:
        """An empty scoreboard."""
        return cls(PixelAccumulator(), SliceAccumulator(), SliceAccumulator(), SliceAccumulator())

    def add(self, maps: np.ndarray, brain: np.ndarray, labels: np.ndarray) -> None:
        """Add float ``(N, H, W)`` maps with their bool brain masks and lesion labels."""
        self.brain_pixels += int(brain.sum())
        self.lesion_pixels_in_brain += int((labels & brain).sum())
        self.pixels.add(maps, labels)
        slice_labels = labels.reshape(labels.shape[0], -1).any(axis=1)
        self.slices_canvas.add(maps.reshape(maps.shape[0], -1).mean(axis=1), slice_labels)
        counts = brain.reshape(brain.shape[0], -1).sum(axis=1)
        sums = (maps * brain).reshape(maps.shape[0], -1).sum(axis=1)
        self.slices_brain.add(np.where(counts > 0, sums / np.maximum(counts, 1), 0.0), slice_labels)
        topk = slice_scores(torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None],
                            torch.from_numpy(np.ascontiguousarray(brain))[:, None], mode="topk")
        self.slices_topk.add(topk.numpy(), slice_labels)

    def result(self) -> DetectionScores:
        """The pooled metrics of everything added."""
        pixel = self.pixels.result()
        canvas = self.slices_canvas.result()
        brain = self.slices_brain.result()
        topk = self.slices_topk.result()
        return DetectionScores(
            ap_image=canvas.ap,
            auroc_image=canvas.auroc,
            ap_pixel=pixel.ap,
            max_dice=pixel.max_dice,
            best_threshold=pixel.best_threshold,
            ap_image_brain_mean=brain.ap,
            auroc_image_brain_mean=brain.auroc,
            ap_image_topk=topk.ap,
            auroc_image_topk=topk.auroc,
        )

    def detection(self, noise: Scoreboard, area: SliceAccumulator, n_slices: int, n_positive_slices: int) -> Detection:
        """This scoreboard's metrics beside the controls: chance, the ``noise`` scoreboard's metrics and brain area
        as slice score (``area``), for a test set of ``n_slices`` slices of which ``n_positive_slices`` hold an
        anomaly."""
        # Every map is zero outside the brain, so the fair random control is too: random scores on brain pixels only.
        chance_pixels = random_baseline(self.brain_pixels, self.lesion_pixels_in_brain)
        chance_slices = random_baseline(n_slices, n_positive_slices)
        area_metrics = area.result()
        return Detection(
            scores=self.result(),
            random=Scores(ap_image=chance_slices.ap, auroc_image=0.5, ap_pixel=chance_pixels.ap,
                          max_dice=chance_pixels.max_dice),
            noise=noise.result(),
            brain_area=Scores(ap_image=area_metrics.ap, auroc_image=area_metrics.auroc),
        )


@dataclass
class ThresholdCounts:
    """What a fixed threshold does on a test set: lesion sensitivity, Dice and the flagged share of non-lesion brain."""

    lesion: int = 0
    lesion_flagged: int = 0
    healthy_brain: int = 0
    healthy_flagged: int = 0

    def add(self, flagged: np.ndarray, brain: np.ndarray, labels: np.ndarray) -> None:
        """Add bool ``(N, H, W)`` flagged pixels with their brain masks and lesion labels."""
        healthy = brain & ~labels
        self.lesion += int(labels.sum())
        self.lesion_flagged += int((flagged & labels).sum())
        self.healthy_brain += int(healthy.sum())
        self.healthy_flagged += int((flagged & healthy).sum())

    def result(self, threshold: float | None) -> ThresholdResult:
        """Sensitivity, Dice and flagged non-lesion brain share at ``threshold`` (all None without a threshold)."""
        if threshold is None:
            return ThresholdResult(threshold=None, lesion_sensitivity=None, dice=None, healthy_brain_flagged=None)
        flagged = self.lesion_flagged + self.healthy_flagged
        return ThresholdResult(
            threshold=float(threshold),
            lesion_sensitivity=self.lesion_flagged / self.lesion if self.lesion else None,
            dice=2 * self.lesion_flagged / (self.lesion + flagged) if self.lesion + flagged else None,
            healthy_brain_flagged=self.healthy_flagged / self.healthy_brain if self.healthy_brain else None,
        )


@dataclass(frozen=True, eq=False)
class LoadedCase:
    """One evaluation case read once: the scan, its brain mask (None: the foreground), its native lesion label, the
    scan in model space and the label there (bool ``(N, size, size)``)."""

    case: Case
    volume: Any
    brain_mask: np.ndarray | None
    label: np.ndarray
    ms: Any
    labels: np.ndarray


def iter_model_space(ensemble: Ensemble, cases: Sequence[Case]) -> Iterator[LoadedCase]:
    """Each case read and carried into model space, with its lesion labels there."""
    for case in cases:
        volume = load_volume(case.image)
        brain = load_mask(case.brain_mask, volume) if case.brain_mask else None
        if not case.label.exists():
            raise VolumeError(f"{case.label}: no such label file")
        label = _native_label(case, volume)
        ms = ensemble.to_model_space(volume, brain)
        labels = native_to_model(label.astype(np.float32), ms) > LABEL_THRESHOLD
        yield LoadedCase(case, volume, brain, label, ms, labels)


def evaluate(
    ensemble: Ensemble,
    cases: Sequence[Case],
    settings: AnalysisSettings,
    *,
    healthy: Sequence[ScanPair] = (),
    shifts: Sequence[str] = (),
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> EvaluationReport:
    """The paper's metrics for ``ensemble`` on ``cases``, with the controls (``to_dict()`` gives its JSON)."""
    start = time.monotonic()
    model, noise = Scoreboard.new(), Scoreboard.new()
    area = SliceAccumulator()
    rng = np.random.default_rng(settings.seed)
    threshold = ensemble.info.calibration.threshold if ensemble.info.calibration else None
    at_threshold = ThresholdCounts()
    transfer = TransferCounts(threshold) if threshold is not None else None
    per_case = []
    n_slices = 0
    for index, loaded in enumerate(iter_model_space(ensemble, cases)):
        case, ms, labels = loaded.case, loaded.ms, loaded.labels
        check_cancel(cancel)
        result = ensemble.analyse_model_space(ms.slices, ms.brain, ms.native_index, settings, cancel=cancel)
        model.add(result.mean_map, ms.brain, labels)
        if threshold is not None:
            at_threshold.add(flagged(result.mean_map, threshold), ms.brain, labels)
        if transfer is not None:
            _count_user_map(ensemble, loaded, result, settings, transfer)
        noise_maps = _maps_of(noise_restoration(ms.slices, ms.brain, rng), ms.slices, ms.brain,
                              ensemble.ssim_convention)
        noise.add(noise_maps, ms.brain, labels)
        slice_labels = labels.reshape(len(ms), -1).any(axis=1)
        area.add(ms.brain.reshape(len(ms), -1).sum(axis=1).astype(np.float64), slice_labels)
        n_slices += len(ms)
        per_case.append(CaseResult(
            case=case.name, slices=len(ms), lesion_slices=int(slice_labels.sum()), lesion_pixels=int(labels.sum()),
            mean_map_in_lesion=float(result.mean_map[labels].mean()) if labels.any() else None,
            mean_map_in_healthy_brain=float(result.mean_map[ms.brain & ~labels].mean())))
        logger.info("%s: %d slices, %d lesion pixels", case.name, len(ms), int(labels.sum()))
        if on_progress is not None:
            on_progress(Progress(index + 1, len(cases), case.name, time.monotonic() - start))
    pixels = model.pixels
    slice_metrics = model.slices_canvas.result()
    size = ensemble.preset.preprocess.size
    return EvaluationReport(
        detection=model.detection(noise, area, slice_metrics.n_slices, slice_metrics.n_positive),
        at_threshold=at_threshold.result(threshold),
        counts=LesionCounts(cases=len(cases), slices=slice_metrics.n_slices, lesion_slices=slice_metrics.n_positive,
                            pixels=pixels.n_pixels, lesion_pixels=pixels.n_positive, brain_pixels=model.brain_pixels,
                            lesion_pixels_in_brain=model.lesion_pixels_in_brain),
        counting=f"model space: every brain slice of each scan on the model canvas ({size}x{size} pixels of "
                 f"{ensemble.preset.preprocess.spacing_mm} mm, background included); lesion = label > 0 resampled "
                 f"and thresholded at {LABEL_THRESHOLD}",
        model=ensemble.info.model_id,
        members=ensemble.info.folds,
        sampler=settings.sampler,
        steps=ensemble.steps_for(settings),
        seed=settings.seed,
        cases=tuple(per_case),
        seconds=round(time.monotonic() - start, 1),
        healthy=healthy_report(ensemble, healthy, settings, shifts=shifts, cancel=cancel) if healthy else None,
        transfer=transfer.result() if transfer is not None else None,
    )


def evaluate_results(folder: str | Path, cases: Sequence[Case], *,
                     on_progress: Callable[[Progress], None] | None = None) -> ResultsReport:
    """Score ``cases`` from a cohort output folder (``infer`` on them, e.g. from a manifest) instead of analysing
    them again: the written anomaly maps against each case's label, on the scan's own grid, inside the brain the
    analysis used, at the cohort's threshold.

    Raises:
        DataError: the folder is not a cohort's results, a case is not among them (or failed there), its brain mask
            differs from the one the cohort used, or its written map does not lie on the scan's grid.
    """
    import json  # noqa: PLC0415

    from engine.cohort import read_cohort, read_cohort_settings  # noqa: PLC0415

    folder = Path(folder)
    settings = read_cohort_settings(folder)
    by_image = {Path(s.image).resolve(): s for s in read_cohort(folder)}
    start = time.monotonic()
    pixels = PixelAccumulator()
    transfer = TransferCounts(float(settings["threshold"]))
    for index, case in enumerate(cases):
        summary = by_image.get(case.image.resolve())
        if summary is None or summary.status == "failed":
            raise DataError(f"{case.image}: {'failed in' if summary else 'not among'} the cohort results in "
                            f"{folder} (run condiff-engine infer on it first)")
        sidecar = json.loads((folder / summary.files["sidecar"]).read_text())
        used = sidecar.get("BrainMask")
        wanted = str(case.brain_mask) if case.brain_mask else None
        if (Path(used).resolve() if used else None) != (Path(wanted).resolve() if wanted else None):
            raise DataError(f"{case.image}: the cohort analysed it with brain mask {used}, the case has {wanted}")
        volume = load_volume(case.image)
        brain = analysis_brain(volume, load_mask(case.brain_mask, volume) if case.brain_mask else None)
        map_path = folder / summary.files["map"]
        map_img = nib.load(str(map_path))
        if map_img.shape != volume.shape or not np.allclose(map_img.affine, volume.affine, atol=1e-4):
            raise DataError(f"{map_path}: does not lie on the grid of {case.image}")
        anomaly = np.asarray(map_img.dataobj, dtype=np.float32)
        label = _native_label(case, volume) & brain
        pixels.add(anomaly[brain], label[brain])
        transfer.add(anomaly, brain, label, volume.zooms)
        if on_progress is not None:
            on_progress(Progress(index + 1, len(cases), case.name, time.monotonic() - start))
    metrics = pixels.result()
    if not metrics.n_positive:
        raise DataError(f"{folder}: the cases' labels hold no lesion voxel inside the brain; nothing to score")
    chance = random_baseline(metrics.n_pixels, metrics.n_positive)
    return ResultsReport(
        results=str(folder), model=str(settings["model"]), members=tuple(settings["members"]),
        sampler=str(settings["sampler"]), steps=int(settings["steps"]), seed=int(settings["seed"]),
        cases=tuple(c.name for c in cases), ap_pixel=metrics.ap, max_dice=metrics.max_dice,
        random_ap_pixel=chance.ap, random_max_dice=chance.max_dice, transfer=transfer.result())


def _take(result: ModelSpaceResult, index: np.ndarray) -> ModelSpaceResult:
    """The slices ``index`` of a model-space result."""
    return ModelSpaceResult(mean_map=result.mean_map[index], spread=result.spread[index],
                            restored=result.restored[index], scores=result.scores[index],
                            brain_scores=result.brain_scores[index])


def _count_user_map(ensemble: Ensemble, loaded: LoadedCase, result: ModelSpaceResult, settings: AnalysisSettings,
                    counts: TransferCounts) -> None:
    """Add one case to ``counts`` on the map a user gets from a whole-volume analysis: the slices it restores (a
    subset of those evaluated, with identical results since each slice's noise depends on its index alone), filled
    between, on the scan's own grid, inside the brain the analysis used."""
    volume, mask, ms = loaded.volume, loaded.brain_mask, loaded.ms
    chosen = ensemble.stride_choice(volume, ms, settings)
    native = ensemble.native_result(volume, ms, _take(result, chosen), chosen, settings, mask)
    counts.add(native.anomaly_map, analysis_brain(volume, mask), loaded.label, volume.zooms)


def _native_label(case: Case, volume: Any) -> np.ndarray:
    label_img = nib.load(str(case.label))
    label = np.asanyarray(label_img.dataobj) > 0
    if label.shape != volume.shape:
        raise VolumeError(f"{case.label}: label shape {label.shape} differs from the scan's {volume.shape}")
    return label

"""The synthetic benchmark: synthetic anomalies on healthy validation slices, scored exactly like real lesions.

Real lesion scans are for confirming a model, not for choosing one: every look at them spends their credibility. This
benchmark gives a selection signal that needs no lesion scan. Healthy model-space slices (the IXI validation scans)
are corrupted with fixed seeds by synthetic tasks a member did not train on (its fold's held-out tasks; all five for
an ensemble), the model restores them, and the 1 - SSIM maps are scored against the synthetic masks with the same
pooled metrics and controls as :func:`engine.evaluation.evaluate` (AP_p, max Dice, AP_i and AUROC of the slice
score, against random, noise-restoration and brain-area controls). Beside it, the removal check: inside the
anomalies, is the restoration closer to the healthy truth than to the corrupted input?

A share ``p_no_task`` of the slices is left healthy, so that slice-level metrics have both classes; those slices
also measure how faithfully healthy slices come back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from engine.anomaly import anomaly_map
from engine.evaluation import Scoreboard
from engine.evaluation_records import Removal, SyntheticCounts, SyntheticReport, SyntheticScores
from engine.metrics import SliceAccumulator
from engine.seeding import Stream, derive_seed
from engine.tasks.base import SliceSource
from engine.tasks.registry import TASK_NAMES, build_tasks, corrupt

DEFAULT_P_NO_TASK = 0.5
"""Share of benchmark slices left healthy (about the share of lesion-free slices in the BraTS dev cases)."""
_STREAM = Stream.BENCHMARK

@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """Fixed synthetic test slices in model space.

    Attributes:
        condition: float32 ``(N, H, W)`` the corrupted slices (what the model sees).
        clean: float32 ``(N, H, W)`` the healthy truth.
        mask: bool ``(N, H, W)`` synthetic anomaly inside the brain (empty for healthy slices).
        brain: bool ``(N, H, W)`` the brain of each slice.
        task: int ``(N,)`` task id applied to each slice, -1 for healthy ones.
        index: int ``(N,)`` the slice's index in its source (also its noise-seed key).
        task_ids: the tasks the set was drawn from.
    """

    condition: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    brain: np.ndarray
    task: np.ndarray
    index: np.ndarray
    task_ids: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.condition.shape[0])


def make_synthetic_set(
    source: SliceSource,
    task_ids: Sequence[int],
    *,
    seed: int = 0,
    n_slices: int | None = None,
    p_no_task: float = DEFAULT_P_NO_TASK,
    external_source: SliceSource | None = None,
) -> SyntheticSet:
    """Corrupt slices of ``source`` with ``task_ids``, each slice from its own fixed generator.

    Args:
        source: healthy slices with their brains (e.g. :class:`engine.data.HealthySlices` of validation scans); task
            0 blends patches from the same source.
        task_ids: the synthetic tasks to draw from (uniformly per slice).
        seed: the benchmark's seed; the same seed and source give the same set.
        n_slices: how many slices to use (an evenly spread, seeded subset); None uses every slice.
        p_no_task: share of slices left healthy.
        external_source: images for task 1 (None: the bundled ones).
    """
    task_ids = tuple(int(t) for t in task_ids)
    unknown = [t for t in task_ids if t not in TASK_NAMES]
    if not task_ids or unknown:
        raise ValueError(f"the synthetic benchmark needs task ids from {sorted(TASK_NAMES)}, got {task_ids}")
    total = len(source)
    if n_slices is None or n_slices >= total:
        indices = np.arange(total)
    else:
        if n_slices < 2:
            raise ValueError(f"the synthetic benchmark needs at least 2 slices, got {n_slices}")
        rng = np.random.default_rng(derive_seed(seed, _STREAM, total))
        indices = np.sort(rng.choice(total, size=n_slices, replace=False))
    tasks = build_tasks(task_ids, same_source=source, external_source=external_source)
    conditions, cleans, masks, brains, applied = [], [], [], [], []
    for index in indices:
        image, foreground = source.get(int(index))
        brain = foreground if foreground is not None else image > 0
        result = corrupt(image, brain, tasks, np.random.default_rng(derive_seed(seed, _STREAM, int(index))),
                         p_no_task=p_no_task)
        conditions.append(result.image.astype(np.float32))
        cleans.append(image.astype(np.float32))
        masks.append(result.mask & brain)
        brains.append(brain)
        applied.append(-1 if result.task_id is None else result.task_id)
    return SyntheticSet(np.stack(conditions), np.stack(cleans), np.stack(masks), np.stack(brains),
                        np.asarray(applied, dtype=np.int64), indices.astype(np.int64), task_ids)


Restorer = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(condition, brain, index) -> (restored, map)``: float32 ``(N, H, W)`` restorations and anomaly maps."""


def _noise_maps(sset: SyntheticSet, seed: int) -> np.ndarray:
    from engine.evaluation import noise_restoration  # noqa: PLC0415

    rng = np.random.default_rng(derive_seed(seed, _STREAM, 1))
    restored = noise_restoration(sset.condition, sset.brain, rng)
    maps = anomaly_map(torch.from_numpy(restored)[:, None], torch.from_numpy(sset.condition)[:, None],
                       foreground=torch.from_numpy(sset.brain)[:, None])
    return maps[:, 0].numpy()


def score_synthetic(sset: SyntheticSet, restored: np.ndarray, maps: np.ndarray, *, seed: int = 0) -> SyntheticScores:
    """The benchmark's metrics for given restorations and maps of ``sset.condition``, with controls.

    Returns:
        The metrics of the maps against the synthetic masks beside the ``random``, ``noise`` and ``brain_area``
        controls; the removal check (``mae_to_truth`` and ``mae_to_input`` inside the anomalies) and the fidelity of
        the slices left healthy; and the counts.
    """
    board = Scoreboard.new()
    board.add(maps, sset.brain, sset.mask)
    noise = Scoreboard.new()
    noise.add(_noise_maps(sset, seed), sset.brain, sset.mask)
    slice_labels = sset.mask.reshape(len(sset), -1).any(axis=1)
    area = SliceAccumulator()
    area.add(sset.brain.reshape(len(sset), -1).sum(axis=1).astype(np.float64), slice_labels)
    inside = sset.mask
    to_truth = float(np.abs(restored - sset.clean)[inside].mean()) if inside.any() else float("nan")
    to_input = float(np.abs(restored - sset.condition)[inside].mean()) if inside.any() else float("nan")
    healthy = (sset.task < 0)[:, None, None] & sset.brain
    return SyntheticScores(
        detection=board.detection(noise, area, len(sset), int(slice_labels.sum())),
        removal=Removal(
            mae_to_truth=to_truth,
            mae_to_input=to_input,
            removes_anomalies=bool(to_truth < to_input),
            healthy_dssim=float(maps[healthy].mean()) if healthy.any() else float("nan"),
            healthy_mae=float(np.abs(restored - sset.clean)[healthy].mean()) if healthy.any() else float("nan"),
        ),
        counts=SyntheticCounts(slices=len(sset), anomalous_slices=int(slice_labels.sum()),
                               brain_pixels=board.brain_pixels, anomaly_pixels=board.lesion_pixels_in_brain),
        tasks=sset.task_ids,
        seed=seed,
    )


def run_synthetic(sset: SyntheticSet, restore: Restorer, *, seed: int = 0) -> SyntheticScores:
    """Restore ``sset`` with ``restore`` and score it (:func:`score_synthetic`)."""
    restored, maps = restore(sset.condition, sset.brain, sset.index)
    return score_synthetic(sset, np.asarray(restored, np.float32), np.asarray(maps, np.float32), seed=seed)


def evaluate_synthetic(
    ensemble: Any,
    scans: Sequence[Any],
    settings: Any,
    *,
    task_ids: Sequence[int] = tuple(TASK_NAMES),
    n_slices: int | None = None,
    seed: int = 0,
    p_no_task: float = DEFAULT_P_NO_TASK,
) -> SyntheticReport:
    """The synthetic benchmark of a model folder on healthy scans (see the module docstring); ``to_dict()`` gives
    its JSON.

    Args:
        ensemble: a loaded :class:`engine.ensemble.Ensemble`.
        scans: healthy :class:`engine.data.ScanPair` s (with brain masks), never used to train the model.
        settings: the :class:`engine.results.AnalysisSettings` to restore with.
        task_ids: synthetic tasks to apply (default: all five).
        n_slices: use a seeded subset of this many slices (None: every brain slice of every scan).
        seed: the benchmark's corruption seed.
        p_no_task: share of slices left healthy.
    """
    import time  # noqa: PLC0415

    from engine.data import HealthySlices  # noqa: PLC0415

    start = time.monotonic()
    slices = HealthySlices(scans, ensemble.preset.preprocess)
    sset = make_synthetic_set(slices, task_ids, seed=seed, n_slices=n_slices, p_no_task=p_no_task)

    def restore(condition: np.ndarray, brain: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = ensemble.analyse_model_space(condition, brain, index, settings)
        return result.restored, result.mean_map

    scores = run_synthetic(sset, restore, seed=seed)
    return SyntheticReport(
        **{f.name: getattr(scores, f.name) for f in fields(SyntheticScores)},
        scans=len(scans),
        model=ensemble.info.model_id,
        members=ensemble.info.folds,
        sampler=settings.sampler,
        steps=ensemble.steps_for(settings),
        p_no_task=p_no_task,
        seconds=round(time.monotonic() - start, 1),
    )

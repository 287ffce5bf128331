"""Training one ensemble member: the conditioned diffusion model for one fold of synthetic tasks.

The loop follows the paper (Baugh et al. 2024, reference-method.md §1.3-1.6): pairs (condition, clean) where the
condition is the clean healthy slice corrupted by one of the fold's 3 training tasks (or left clean with probability
``p_no_task``), diffusion loss with Min-SNR weighting and offset noise, AdamW with gradient clipping, an EMA of the
weights with diffusers' decay formula, and model selection by a moving average (0.9) of the EMA model's loss on the
fold's 2 held-out tasks. Two extra checks guard against models that look fine by loss but are useless:

* healthy restoration: clean validation slices restored with the fast sampler must come back faithfully
  (1 - SSIM and MAE inside the brain);
* anomaly removal: inside synthetic anomalies of the held-out tasks, the restoration should be closer to the healthy
  truth than to the corrupted input.

Determinism and resume: the data and noise of step ``k`` are drawn from generators seeded by ``(seed, fold, k, i)``
for each image ``i``, so a run resumed from any checkpoint (even after SIGKILL) continues exactly as an uninterrupted
one, and a DDP run (``torchrun``) sees the same global batches as a single process.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from engine import checkpoints
from engine.anomaly import anomaly_map
from engine.augment import AcquisitionAugmentation, acquisition_augment
from engine.card import TrainingCheck, TrainingSummary, read_card
from engine.config import DiffusionConfig, Preset
from engine.devices import resolve_device
from engine.diffusion import (
    draw_timesteps_and_noise,
    initial_noise,
    make_sampler,
    make_train_scheduler,
    restore,
    training_loss,
)
from engine.errors import ConfigError, DataError
from engine.network import build_unet
from engine.progress import CancelToken, Progress, check_cancel
from engine.seeding import Stream
from engine.seeding import derive_seed as _seed
from engine.synthetic import make_synthetic_set, score_synthetic
from engine.tasks.base import SliceSource
from engine.tasks.registry import build_tasks, corrupt, fold_tasks

logger = logging.getLogger(__name__)

MA_MOMENTUM = 0.9


@dataclass(frozen=True)
class TrainRequest:
    """One member's training run.

    Attributes:
        preset: the model family (network, geometry, diffusion, optimisation).
        fold: task fold 0..9.
        model_dir: the model folder the member is added to.
        max_steps: optimiser steps to run (the run may stop earlier by early stopping).
        seed: seed of initialisation, data and noise.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        resume: continue from the fold's last checkpoint when there is one.
        batch_size: global batch size; None takes the preset's.
        loader_workers: processes that build the synthetic-task batches ahead of the optimiser (0: build them in
            the training process). The batches are the same either way; workers pay off when the network step is
            fast (a GPU) and batch making becomes the bottleneck.
        init_from: a model folder whose member of the same fold the weights start from (training it longer
            without its checkpoint); the optimiser and the EMA start afresh. Its network and preprocessing must be
            this preset's. None: a fresh initialisation.
    """

    preset: Preset
    fold: int
    model_dir: Path
    max_steps: int
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    batch_size: int | None = None
    loader_workers: int = 0
    init_from: Path | None = None


def coarse_noise(shape: tuple[int, int], std: float, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth low-frequency noise: a ``cells x cells`` grid of N(0, std) values upsampled bilinearly to ``shape``
    (interpolation averages neighbouring grid values, so single pixels spread about 0.7 ``std``)."""
    from skimage.transform import resize  # noqa: PLC0415

    grid = rng.normal(0.0, std, size=(cells, cells))
    return resize(grid, shape, order=1, mode="edge", anti_aliasing=False).astype(np.float32)


def make_pairs(
    source: SliceSource,
    tasks: dict[int, Any],
    indices: Sequence[int],
    seeds: Sequence[int],
    p_no_task: float,
    *,
    condition_noise: float = 0.0,
    condition_noise_cells: int = 8,
    augmentation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Build (condition, clean, anomaly mask) arrays for the given slices, one generator per image.

    With ``condition_noise > 0``, coarse noise (:func:`coarse_noise`) is added to each condition inside the slice's
    foreground after its corruption, drawn from the same generator (the clean target is untouched). With
    ``augmentation > 0``, that share of the slices first gets another acquisition's look
    (:func:`engine.augment.acquisition_augment`), which the target and the condition then share.

    Returns:
        ``condition`` and ``clean`` float32 ``(B, 1, H, W)``, ``mask`` bool ``(B, 1, H, W)``.
    """
    conditions, cleans, masks = [], [], []
    for index, seed in zip(indices, seeds, strict=True):
        image, foreground = source.get(int(index))
        rng = np.random.default_rng(seed)
        if augmentation > 0:
            image = acquisition_augment(image, foreground if foreground is not None else image > 0, rng,
                                        AcquisitionAugmentation(probability=augmentation))
        result = corrupt(image, foreground, tasks, rng, p_no_task=p_no_task)
        condition = result.image
        if condition_noise > 0:
            inside = foreground if foreground is not None else image > 0
            noise = coarse_noise(condition.shape, condition_noise, condition_noise_cells, rng)
            condition = np.where(inside, np.clip(condition + noise, 0.0, 1.0), condition).astype(np.float32)
        conditions.append(condition)
        cleans.append(image)
        masks.append(result.mask)
    return (np.stack(conditions)[:, None].astype(np.float32), np.stack(cleans)[:, None].astype(np.float32),
            np.stack(masks)[:, None])


class _DistEnv:
    """The torchrun environment (or a single process)."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""Condition, clean target, timesteps, noise and anomaly mask of one optimiser step (this process's share)."""


@dataclass(frozen=True)
class _StepBatches:
    """Makes the batch of any step from the step number alone, so batches can be made ahead, in any process."""

    slices: SliceSource
    tasks: Sequence[Any]
    batch_size: int
    rank: int
    world_size: int
    seed: int
    fold: int
    p_no_task: float
    diffusion: DiffusionConfig
    condition_noise: float = 0.0
    condition_noise_cells: int = 8
    augmentation: float = 0.0

    def __call__(self, step: int) -> Batch:
        base = _seed(self.seed, self.fold, Stream.BATCHES, step)
        rng = np.random.default_rng(base)
        indices = rng.integers(0, len(self.slices), size=self.batch_size)
        share = range(self.rank, self.batch_size, self.world_size)
        seeds = [_seed(base, i) for i in share]
        condition, clean, mask = make_pairs(self.slices, self.tasks, indices[list(share)], seeds, self.p_no_task,
                                            condition_noise=self.condition_noise,
                                            condition_noise_cells=self.condition_noise_cells,
                                            augmentation=self.augmentation)
        timesteps, noise = draw_timesteps_and_noise(clean.shape[1:], [_seed(base, Stream.DIFFUSION + i) for i in share],
                                                    self.diffusion)
        return torch.from_numpy(condition), torch.from_numpy(clean), timesteps, noise, torch.from_numpy(mask)


class _StepRange(torch.utils.data.Dataset):
    """Steps ``first .. last - 1`` as a map-style dataset of their batches (for a DataLoader with workers)."""

    def __init__(self, batches: _StepBatches, first: int, last: int) -> None:
        self.batches, self.first, self.last = batches, first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, index: int) -> Batch:
        return self.batches(self.first + index)


@dataclass
class _ValidationSet:
    condition: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor


class Trainer:
    """Trains one member; use :func:`train_member` unless you need the pieces (tests do)."""

    def __init__(
        self,
        request: TrainRequest,
        train_slices: SliceSource,
        val_slices: SliceSource,
        *,
        external_source: SliceSource | None = None,
    ) -> None:
        if len(train_slices) == 0 or len(val_slices) == 0:
            raise DataError("no training or validation slices: check the data folder and the brain masks")
        self.request = request
        self.preset = request.preset
        self.cfg = request.preset.train
        self.dist = _DistEnv()
        self.device = self._device()
        self.batch_size = request.batch_size or self.cfg.batch_size
        if self.batch_size % self.dist.world_size:
            raise ConfigError(f"batch size {self.batch_size} is not divisible by {self.dist.world_size} processes")
        self.train_slices = train_slices
        self.val_slices = val_slices
        self.train_ids, self.val_ids = fold_tasks(request.fold)
        self.train_tasks = build_tasks(self.train_ids, same_source=train_slices, external_source=external_source)
        self.val_tasks = build_tasks(self.val_ids, same_source=val_slices, external_source=external_source)
        self.batches = _StepBatches(train_slices, self.train_tasks, self.batch_size, self.dist.rank,
                                    self.dist.world_size, request.seed, request.fold, self.cfg.p_no_task,
                                    self.preset.diffusion, self.cfg.condition_noise, self.cfg.condition_noise_cells,
                                    self.cfg.acquisition_augmentation)
        self.autocast = torch.bfloat16 if self.device.type == "cuda" else None

        torch.manual_seed(_seed(request.seed, request.fold, Stream.INIT))
        self.model = build_unet(self.preset.unet, self.preset.preprocess.size).to(self.device)
        self.initialised_from = self._initialise_from(request.init_from) if request.init_from is not None else None
        self.scheduler = make_train_scheduler(self.preset.diffusion)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.learning_rate,
                                           weight_decay=self.cfg.weight_decay)
        self.ema = EMAModel(self.model.parameters(), decay=self.cfg.ema_max_decay)
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)

        self.step = 0
        self.best_step = 0
        self.best_ma = math.inf
        self.ma: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.checks: list[TrainingCheck] = []
        self.elapsed = 0.0
        self.stopped_early = False
        self.validation = self._validation_set()
        self.check_pairs = self._check_set()
        synthetic_seed = _seed(request.seed, request.fold, Stream.SYNTHETIC)
        self.synthetic = (make_synthetic_set(val_slices, self.val_ids, seed=synthetic_seed,
                                             n_slices=self.cfg.synthetic_slices, external_source=external_source)
                          if self.cfg.synthetic_slices else None)

    # ----------------------------------------------------------------------------------------------- setup
    def _device(self) -> torch.device:
        device = resolve_device(self.request.device)
        if device.type == "cuda" and self.dist.enabled:
            return torch.device("cuda", self.dist.local_rank)
        return device

    @property
    def work_dir(self) -> Path:
        """Where this fold's training checkpoints live."""
        return Path(self.request.model_dir) / ".train" / f"fold-{self.request.fold}"

    def _validation_set(self) -> _ValidationSet:
        n = min(self.cfg.validation_slices, len(self.val_slices))
        base = _seed(self.request.seed, self.request.fold, Stream.VALIDATION)
        rng = np.random.default_rng(base)
        indices = rng.choice(len(self.val_slices), size=n, replace=False)
        seeds = [_seed(base, i) for i in range(n)]
        # Held-out tasks only: the paper keeps p_no_task for validation too.
        condition, clean, mask = make_pairs(self.val_slices, self.val_tasks, indices, seeds, self.cfg.p_no_task)
        shape = clean.shape[1:]
        timesteps, noise = draw_timesteps_and_noise(shape, [_seed(base, Stream.DIFFUSION + i) for i in range(n)],
                                                    self.preset.diffusion)
        return _ValidationSet(torch.from_numpy(condition), torch.from_numpy(clean), torch.from_numpy(mask),
                              timesteps, noise)

    def _check_set(self) -> dict[str, torch.Tensor]:
        n = min(self.cfg.check_slices, len(self.val_slices))
        base = _seed(self.request.seed, self.request.fold, Stream.CHECKS)
        rng = np.random.default_rng(base)
        indices = rng.choice(len(self.val_slices), size=n, replace=False)
        healthy = np.stack([self.val_slices.get(int(i))[0] for i in indices])[:, None].astype(np.float32)
        seeds = [_seed(base, i) for i in range(n)]
        # Anomalies always applied (p_no_task = 0) so that every check slice has an anomaly to remove.
        condition, clean, mask = make_pairs(self.val_slices, self.val_tasks, indices, seeds, 0.0)
        return {"healthy": torch.from_numpy(healthy), "condition": torch.from_numpy(condition),
                "clean": torch.from_numpy(clean), "mask": torch.from_numpy(mask)}

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "best_step": self.best_step,
            "best_ma": self.best_ma,
            "ma": self.ma if self.ma is not None else float("nan"),
            "best_state": self.best_state if self.best_state is not None else {},
            "checks": [asdict(c) for c in self.checks],
            "elapsed": self.elapsed,
            "stopped_early": self.stopped_early,
            "preset": self.preset.to_dict(),
            "fold": self.request.fold,
            "seed": self.request.seed,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (same preset, fold, seed and batch size)."""
        for key, mine in (("fold", self.request.fold), ("seed", self.request.seed), ("batch_size", self.batch_size)):
            if state[key] != mine:
                raise DataError(f"{self.work_dir}: checkpoint has {key}={state[key]}, this run {key}={mine}; "
                                "use the same settings or a new --out folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.best_step = int(state["best_step"])
        self.best_ma = float(state["best_ma"])
        self.ma = None if math.isnan(float(state["ma"])) else float(state["ma"])
        self.best_state = state["best_state"] or None
        self.checks = [TrainingCheck(**c) for c in state["checks"]]
        self.elapsed = float(state["elapsed"])
        self.stopped_early = bool(state["stopped_early"])

    def save_checkpoint(self) -> None:
        """Write the resumable state (main process only)."""
        if self.dist.is_main:
            checkpoints.save_training_state(self.work_dir / "checkpoint.pt", self.state_dict())

    def _initialise_from(self, folder: Path) -> str:
        """Load the weights of ``folder``'s member of this fold into the network; returns what was loaded."""
        card = read_card(folder)
        mismatched = [name for name in ("unet", "preprocess", "diffusion")
                      if getattr(card.preset, name) != getattr(self.preset, name)]
        if mismatched:
            raise ConfigError(f"{folder}: its members were trained with another {' and '.join(mismatched)} "
                              "configuration; --init-from needs the same network, preprocessing and diffusion")
        self.model.load_state_dict(checkpoints.load_member_state(folder, self.request.fold, card))
        entry = card.members[self.request.fold]
        logger.info("fold %d starts from %s (%s)", self.request.fold, folder / entry.file, card.model_id)
        return f"{card.model_id} member {self.request.fold} sha256 {entry.sha256}"

    def try_resume(self) -> bool:
        """Load the fold's checkpoint if there is one; return whether it did."""
        path = self.work_dir / "checkpoint.pt"
        if not path.exists():
            return False
        self.load_state_dict(checkpoints.load_training_state(path))
        logger.info("resumed fold %d at step %d", self.request.fold, self.step)
        return True

    # ----------------------------------------------------------------------------------------------- steps
    def batch_for_step(self, step: int) -> Batch:
        """This process's share of the global batch of ``step``: condition, clean, timesteps, noise, anomaly mask."""
        return self.batches(step)

    def _batch_stream(self, first: int, last: int) -> Iterator[Batch]:
        """The batches of steps ``first .. last - 1`` in order, made here or by ``loader_workers`` processes."""
        workers = self.request.loader_workers
        if workers <= 0:
            return (self.batches(step) for step in range(first, last))
        loader = torch.utils.data.DataLoader(_StepRange(self.batches, first, last), batch_size=None,
                                             num_workers=workers, prefetch_factor=4,
                                             pin_memory=self.device.type == "cuda")
        return iter(loader)

    def train_step(self, batch: Batch) -> float:
        """One optimiser step on ``batch`` (the batch of the current step); returns its mean loss."""
        self.model.train()
        condition, clean, timesteps, noise, mask = batch
        weight = 1.0 + self.cfg.anomaly_loss_weight * mask.float() if self.cfg.anomaly_loss_weight else None
        loss = training_loss(self.ddp_model, clean.to(self.device), condition.to(self.device), self.scheduler,
                             self.preset.diffusion, timesteps, noise, autocast_dtype=self.autocast,
                             pixel_weight=weight).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.step(self.model.parameters())
        self.step += 1
        return float(loss.detach())

    def _with_ema(self, fn: Callable[[], Any]) -> Any:
        self.ema.store(self.model.parameters())
        self.ema.copy_to(self.model.parameters())
        try:
            self.model.eval()
            return fn()
        finally:
            self.ema.restore(self.model.parameters())

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Loss of the EMA model on the fixed held-out-task validation pairs."""
        def run() -> float:
            v = self.validation
            total = 0.0
            for start in range(0, v.clean.shape[0], 32):
                sl = slice(start, start + 32)
                losses = training_loss(self.model, v.clean[sl].to(self.device), v.condition[sl].to(self.device),
                                       self.scheduler, self.preset.diffusion, v.timesteps[sl], v.noise[sl],
                                       autocast_dtype=self.autocast)
                total += float(losses.sum())
            return total / v.clean.shape[0]

        return float(self._with_ema(run))

    @torch.no_grad()
    def run_checks(self) -> TrainingCheck:
        """Healthy-restoration and anomaly-removal checks with the EMA weights and the preset's fast sampler."""
        def run() -> TrainingCheck:
            pairs = self.check_pairs
            sampler = self.preset.default_sampler
            steps = self.preset.default_steps

            def restore_all(condition: torch.Tensor) -> torch.Tensor:
                scheduler, _ = make_sampler(sampler, self.preset.diffusion, steps)
                seeds = [_seed(self.request.seed, Stream.CHECK_NOISE, i) for i in range(condition.shape[0])]
                noise = initial_noise(condition.shape[1:], seeds, self.device)
                return restore(self.model, condition.to(self.device), scheduler, noise,
                               generator=torch.Generator().manual_seed(0) if self.device.type == "cpu" else None,
                               autocast_dtype=self.autocast).cpu()

            healthy = pairs["healthy"]
            restored = restore_all(healthy)
            brain = healthy > 0
            dssim = anomaly_map(restored.clamp(0, 1), healthy, convention="standard")
            healthy_dssim = float(dssim[brain].mean())
            healthy_mae = float((restored - healthy).abs()[brain].mean())
            restored_anom = restore_all(pairs["condition"])
            mask = pairs["mask"]
            to_truth = float((restored_anom - pairs["clean"]).abs()[mask].mean()) if mask.any() else float("nan")
            to_input = float((restored_anom - pairs["condition"]).abs()[mask].mean()) if mask.any() else float("nan")
            synthetic: dict[str, float] = {}
            if self.synthetic is not None:
                sset = self.synthetic
                condition = torch.from_numpy(sset.condition)[:, None]
                restored_syn = restore_all(condition).clamp(0, 1)
                maps = anomaly_map(restored_syn, condition, convention="standard",
                                   foreground=torch.from_numpy(sset.brain)[:, None])
                scores = score_synthetic(sset, restored_syn[:, 0].numpy(), maps[:, 0].numpy()).detection.scores
                synthetic = {f"synthetic_{k}": float(getattr(scores, k))
                             for k in ("ap_pixel", "max_dice", "ap_image", "auroc_image")}
            return TrainingCheck(self.step, healthy_dssim, healthy_mae, to_truth, to_input, sampler, steps, **synthetic)

        result = self._with_ema(run)
        self.checks.append(result)
        return result

    def _validate(self) -> None:
        loss = self.validation_loss()
        self.ma = loss if self.ma is None else MA_MOMENTUM * self.ma + (1 - MA_MOMENTUM) * loss
        if self.ma < self.best_ma:
            self.best_ma = self.ma
            self.best_step = self.step
            self.best_state = self._with_ema(lambda: copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()}))
        logger.info("fold %d step %d: val loss %.5f, moving average %.5f (best %.5f at %d)",
                    self.request.fold, self.step, loss, self.ma, self.best_ma, self.best_step)

    def _should_stop(self) -> bool:
        stop = self.step - self.best_step > self.cfg.early_stop_patience and self.best_state is not None
        if self.dist.enabled:
            import torch.distributed as dist  # noqa: PLC0415

            flag = torch.tensor([1 if stop else 0], device=self.device)
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        return stop

    # ----------------------------------------------------------------------------------------------- run
    def fit(self, *, on_progress: Callable[[Progress], None] | None = None,
            cancel: CancelToken | None = None) -> TrainingSummary:
        """Train until ``max_steps`` (or early stopping), checkpointing as configured; then write the member.

        Raises:
            Cancelled: ``cancel`` was set; the last checkpoint allows resuming.
        """
        cfg = self.cfg
        max_steps = self.request.max_steps
        start_time = time.monotonic() - self.elapsed
        first_step = self.step
        loss_ema: float | None = None
        batches = self._batch_stream(self.step, max_steps)
        while self.step < max_steps and not self.stopped_early:
            check_cancel(cancel)
            loss = self.train_step(next(batches))
            loss_ema = loss if loss_ema is None else 0.98 * loss_ema + 0.02 * loss
            if self.dist.is_main:
                if self.step % cfg.validate_every == 0 or self.step == max_steps:
                    self._validate()
                if self.step % cfg.check_every == 0 or self.step == max_steps:
                    c = self.run_checks()
                    logger.info("fold %d step %d: healthy 1-SSIM %.3f MAE %.4f; anomaly MAE to truth %.4f, "
                                "to input %.4f; synthetic AP_p %.3f max Dice %.3f AP_i %.3f AUROC %.3f",
                                self.request.fold, self.step, c.healthy_dssim, c.healthy_mae,
                                c.anomaly_mae_to_truth, c.anomaly_mae_to_input, c.synthetic_ap_pixel,
                                c.synthetic_max_dice, c.synthetic_ap_image, c.synthetic_auroc_image)
            self.elapsed = time.monotonic() - start_time
            if self._should_stop():
                self.stopped_early = True
            if self.step % cfg.checkpoint_every == 0 or self.step == max_steps or self.stopped_early:
                self.save_checkpoint()
            if on_progress is not None:
                on_progress(Progress(self.step, max_steps, f"loss {loss_ema:.4f}", self.elapsed))
        del batches  # stops loader workers at once when training ends early
        summary = self.summary(first_step)
        if self.dist.is_main:
            self.write_member(summary)
        return summary

    def summary(self, first_step: int = 0) -> TrainingSummary:
        """The run so far as a :class:`TrainingSummary`."""
        return TrainingSummary(
            fold=self.request.fold,
            train_tasks=self.train_ids,
            val_tasks=self.val_ids,
            steps=self.step,
            best_step=self.best_step,
            best_val_loss_ma=self.best_ma,
            stopped_early=self.stopped_early,
            seconds=round(self.elapsed, 1),
            steps_per_second=round(self.step / self.elapsed, 4) if self.elapsed > 0 else 0.0,
            batch_size=self.batch_size,
            world_size=self.dist.world_size,
            device=self.device.type,
            seed=self.request.seed,
            train_slices=len(self.train_slices),
            val_slices=len(self.val_slices),
            checks=tuple(self.checks),
            initialised_from=self.initialised_from,
        )

    def write_member(self, summary: TrainingSummary) -> Path:
        """Save the selected (best moving-average validation loss) EMA weights as the fold's member."""
        state = self.best_state
        if state is None:  # no validation happened yet: take the current EMA weights
            state = self._with_ema(lambda: {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        return checkpoints.save_member(self.request.model_dir, self.request.fold, state, summary)


def setup_distributed() -> _DistEnv:
    """Initialise torch.distributed when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    env = _DistEnv()
    if env.enabled:
        import torch.distributed as dist  # noqa: PLC0415

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(env.local_rank)
            dist.init_process_group(backend=backend)
    return env


def finish_distributed(env: _DistEnv) -> None:
    """End a torchrun job cleanly: every rank waits for the others (rank 0 may still be writing a member), then the
    process group is destroyed on all of them, so no rank exits while a peer still holds its connections."""
    if env.enabled:
        import torch.distributed as dist  # noqa: PLC0415

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def train_member(
    request: TrainRequest,
    train_slices: SliceSource,
    val_slices: SliceSource,
    *,
    external_source: SliceSource | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> TrainingSummary:
    """Train (or resume) one member and add it to ``request.model_dir``."""
    trainer = Trainer(request, train_slices, val_slices, external_source=external_source)
    if request.resume:
        trainer.try_resume()
    return trainer.fit(on_progress=on_progress, cancel=cancel)

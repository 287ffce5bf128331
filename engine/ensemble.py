"""Ensembles: load a model folder and analyse volumes with all its members.

Analysis of a volume (:meth:`Ensemble.analyse`):

1. the scan goes to model space (:func:`engine.preprocess.to_model_space`): skull-stripped with the brain mask when
   given, reoriented, resampled to the model's canvas and normalised to [0, 1];
2. every member restores every slice from pure noise with the slice as condition (the chosen sampler); each slice's
   starting noise comes from its own seed ``(seed, fold, native slice index)``, so a slice's result does not depend on
   which other slices were analysed with it;
3. each member's anomaly map is ``1 - SSIM(restored, input)`` (zeroed outside the brain); the ensemble map is the mean
   over members and the member spread their standard deviation; the restoration is the members' mean;
4. everything is mapped back onto the scan's own grid (:func:`engine.preprocess.from_model_space`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from engine import checkpoints
from engine.anomaly import MemberMoments, SliceScoreMode, anomaly_map, slice_scores
from engine.brain import analysis_brain
from engine.card import ModelCard, read_card
from engine.config import MapScoring
from engine.devices import resolve_device
from engine.diffusion import initial_noise, make_sampler, restore, unlearned_timesteps
from engine.errors import ModelLoadError, exception_line
from engine.network import build_unet
from engine.preprocess import ModelSpace, foreground_mask, from_model_space, to_model_space
from engine.progress import CancelToken, Progress, ProgressThrottle, check_cancel
from engine.results import AnalysisSettings, AnomalyResult, ModelInfo
from engine.runtimes import RUNTIMES, Denoiser, RuntimeName, in_runtime, resolve_runtime
from engine.samplers import steps_for
from engine.seeding import Stream, derive_seed, slice_seed
from engine.slice_fill import fill_between_slices
from engine.tasks.registry import fold_tasks
from engine.volumes import Volume

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "condiff-t1-small"
SKULL_ON_LITRES = 2.3
"""Above this foreground volume (litres) a scan is most likely not skull-stripped (a brain is about 1-1.7 l)."""
NETWORK_BATCH: dict[str, int] = {"cpu": 4, "cuda": 32, "mps": 16}
"""Slices per network call by device type. Every call is padded to this width, so a slice's result does not depend
on which slices share its batch (CPU kernels block by batch size: on the build machine, batches of 1, 2, 3 or 30 gave
maps up to 1.3e-4 apart from a batch of 4). On one CPU thread the time per slice is flat from 4 to 48 slices a batch;
on two, 8 wide is about 20 % faster per volume, but the viewer's first chunk (3 slices) would then cost 8. A GPU wants
wider calls."""


def default_model_path() -> Path:
    """The bundled model folder (``resources/models/condiff-t1-small``), from a checkout or a frozen bundle."""
    import sys  # noqa: PLC0415

    roots = []
    if getattr(sys, "frozen", False):
        roots.append(Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)))
    roots.append(Path(__file__).resolve().parents[1])
    for root in roots:
        candidate = root / "resources" / "models" / DEFAULT_MODEL_NAME
        if candidate.exists():
            return candidate
    return roots[-1] / "resources" / "models" / DEFAULT_MODEL_NAME


@dataclass(frozen=True, eq=False)
class ModelSpaceResult:
    """An analysis in model space (what evaluation and calibration work on).

    Attributes:
        mean_map / spread: float32 ``(N, H, W)`` ensemble mean and standard deviation of the members' maps.
        restored: float32 ``(N, H, W)`` mean restoration in model units (clamped to [0, 1]).
        scores: float32 ``(N,)`` the model's slice score of the mean map (``ModelInfo.slice_score``: the paper's
            canvas mean unless the model card names another).
        brain_scores: float32 ``(N,)`` mean of the mean map over brain pixels.
        member_restored: float32 ``(M, N, H, W)`` each member's restoration, when asked for (``keep_members``), so
            other comparisons can be scored without restoring again (:meth:`Ensemble.score_restorations`).
    """

    mean_map: np.ndarray
    spread: np.ndarray
    restored: np.ndarray
    scores: np.ndarray
    brain_scores: np.ndarray
    member_restored: np.ndarray | None = None


class Ensemble:
    """The members of a model folder, ready to analyse scans. Create with :func:`load_ensemble`.

    Public: ``path``, ``preset`` (a frozen dataclass), ``card`` (the folder's :class:`engine.card.ModelCard`),
    ``info`` (:class:`engine.ModelInfo`: members, device, calibration, ...) and the analysis methods; the torch
    networks stay inside.
    """

    def __init__(self, path: Path, card: ModelCard, members: list[tuple[int, Denoiser]], device: torch.device,
                 runtime: RuntimeName = "torch") -> None:
        self.path = path
        self.card = card
        self.preset = card.preset
        self._members = members
        self._device = device
        self.ssim_convention = card.ssim_convention
        self.scoring = card.scoring
        if card.slice_score not in get_args(SliceScoreMode):
            raise ModelLoadError(f"{path}: model.json names an unknown slice_score {card.slice_score!r}; "
                                 f"known: {', '.join(get_args(SliceScoreMode))}")
        self.info = ModelInfo(
            name=card.name,
            version=str(card.version),
            model_id=card.model_id,
            modality=card.modality,
            preset=self.preset.name,
            members=len(members),
            folds=tuple(f for f, _ in members),
            device=device.type,
            runtime=runtime,
            expects_skull_stripped=card.expects_skull_stripped,
            ssim_convention=self.ssim_convention,
            calibration=card.calibration,
            default_sampler=self.preset.default_sampler,
            default_steps=self.preset.default_steps,
            path=str(path),
            slice_score=card.slice_score,
        )

    # ------------------------------------------------------------------------------------------- model space
    def steps_for(self, settings: AnalysisSettings) -> int:
        """Number of sampler steps ``settings`` will run."""
        return steps_for(settings.sampler, settings.steps, self.preset.default_steps)

    @torch.no_grad()
    def analyse_model_space(
        self,
        slices: np.ndarray,
        brain: np.ndarray,
        native_index: Sequence[int],
        settings: AnalysisSettings,
        *,
        on_step: Callable[[int], None] | None = None,
        cancel: CancelToken | None = None,
        keep_members: bool = False,
    ) -> ModelSpaceResult:
        """Restore and score model-space slices with every member.

        Args:
            slices: float32 ``(N, H, W)`` in [0, 1].
            brain: bool ``(N, H, W)``; the maps are zeroed outside it.
            native_index: per slice, an integer identifying it (its native slice index) for its noise seed.
            settings: sampler, steps, seed, batch size.
            on_step: called with the number of slice-steps done so far (for progress).
            cancel: checked before every sampler step.
            keep_members: also return every member's restoration (``member_restored``).
        """
        n = slices.shape[0]
        size = self.preset.preprocess.size
        if n == 0:
            empty = np.zeros((0, size, size), np.float32)
            return ModelSpaceResult(empty, empty, empty, np.zeros(0, np.float32), np.zeros(0, np.float32))
        steps = self.steps_for(settings)
        autocast = torch.bfloat16 if self._device.type == "cuda" else None
        moments = MemberMoments((n, 1, size, size))
        sum_restored = torch.zeros((n, 1, size, size), dtype=torch.float32)
        kept = np.zeros((len(self._members), n, size, size), np.float32) if keep_members else None
        scoring = settings.scoring or self.scoring
        condition_all = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
        brain_all = torch.from_numpy(np.ascontiguousarray(brain, dtype=bool))[:, None]
        width = self.network_batch(settings)
        # A slice's result must not depend on the slices it is analysed with (a whole-volume run, the viewer's
        # chunks). Torch's kernels pick their blocking by batch size, so there every call sees exactly ``width``
        # slices, the last batch padded with empty ones whose results are dropped; a batch-invariant runtime
        # needs no padding, and a lone slice (the viewer's first map) costs one slice.
        padded_to = 0 if RUNTIMES[self.info.runtime].batch_invariant else width
        counter = _StepCounter(on_step)

        def member_pass(fold: int, model: Denoiser) -> _Batches:
            """One member over every slice: ``(start, maps, restored)`` per network batch."""
            batches = []
            for start in range(0, n, width):
                stop = min(n, start + width)
                condition = _padded(condition_all[start:stop], padded_to).to(self._device)
                seeds = [slice_seed(settings.seed, fold, int(k)) for k in native_index[start:stop]]
                seeds += [0] * (padded_to - len(seeds))
                noise = initial_noise(condition.shape[1:], seeds, self._device)
                scheduler, _ = make_sampler(settings.sampler, self.preset.diffusion, steps)
                # One generator per slice (CPU, like the starting noise): a stochastic sampler's draws for a slice
                # depend on (seed, fold, slice) only, never on the batch the slice is in or on the device.
                generator = [torch.Generator().manual_seed(derive_seed(s, Stream.SAMPLER_STEPS)) for s in seeds]
                restored = restore(model, condition, scheduler, noise, generator=generator,
                                   on_step=counter.batch(stop - start), cancel=cancel,
                                   autocast_dtype=autocast).clamp(0.0, 1.0)[: stop - start]
                maps = anomaly_map(restored, condition[: stop - start], convention=self.ssim_convention,
                                   foreground=brain_all[start:stop].to(self._device), scoring=scoring)
                batches.append((start, maps, restored.cpu()))
            return batches

        # The members' passes are summed in member order whether they ran one after another or side by side, so
        # the result is the same bit for bit either way.
        for member, batches in enumerate(self._member_passes(member_pass)):
            for start, maps, restored in batches:
                moments.add(maps, start)
                sum_restored[start: start + restored.shape[0]] += restored
                if kept is not None:
                    kept[member, start: start + restored.shape[0]] = restored[:, 0].float().numpy()
            moments.member_done()
        return self._result(moments, sum_restored / len(self._members), brain_all, kept)

    def _member_passes(self, member_pass: Callable[[int, Denoiser], _Batches]) -> Iterator[_Batches]:
        """Each member's pass, in member order: one member at a time, or, for a runtime that runs members side by
        side (:attr:`~engine.runtimes.RuntimeSpec.parallel_members`), as many at once as torch has threads."""
        workers = min(len(self._members), torch.get_num_threads())
        if not RUNTIMES[self.info.runtime].parallel_members or workers < 2:
            yield from (member_pass(fold, model) for fold, model in self._members)
            return
        pool = ThreadPoolExecutor(workers, thread_name_prefix="condiff-member")
        try:
            yield from pool.map(lambda member: member_pass(*member), self._members)
        finally:  # an error or a cancel in one pass: the passes not started yet are dropped
            pool.shutdown(wait=True, cancel_futures=True)

    def network_batch(self, settings: AnalysisSettings) -> int:
        """Slices per network call: :data:`NETWORK_BATCH` for this device, or fewer if ``settings.batch_size`` (the
        memory knob) asks. Results are the same for a given width whatever slices are analysed together."""
        return max(1, min(settings.batch_size, NETWORK_BATCH.get(self._device.type, NETWORK_BATCH["cpu"])))

    def _result(self, moments: MemberMoments, restored: torch.Tensor, brain: torch.Tensor,
                member_restored: np.ndarray | None) -> ModelSpaceResult:
        """The model-space result of the members' accumulated maps and their mean ``(N, 1, H, W)`` restoration."""
        mean_f, spread = moments.mean_std()
        return ModelSpaceResult(
            mean_map=mean_f[:, 0].numpy(),
            spread=spread[:, 0].numpy(),
            restored=restored[:, 0].numpy(),
            scores=slice_scores(mean_f, brain, mode=self.info.slice_score).numpy(),  # type: ignore[arg-type]
            brain_scores=slice_scores(mean_f, brain, mode="brain").numpy(),
            member_restored=member_restored,
        )

    def score_restorations(self, member_restored: np.ndarray, slices: np.ndarray, brain: np.ndarray,
                           scoring: MapScoring | None = None) -> ModelSpaceResult:
        """Score members' restorations (``ModelSpaceResult.member_restored``) against their input slices with another
        comparison (None: the model card's), exactly as :meth:`analyse_model_space` would have."""
        restored = torch.from_numpy(np.ascontiguousarray(member_restored, dtype=np.float32))[:, :, None]
        condition = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
        brain_t = torch.from_numpy(np.ascontiguousarray(brain, dtype=bool))[:, None]
        moments = MemberMoments(tuple(condition.shape))
        for member in restored:
            moments.add(anomaly_map(member, condition, convention=self.ssim_convention, foreground=brain_t,
                                    scoring=scoring or self.scoring))
            moments.member_done()
        return self._result(moments, restored.mean(dim=0), brain_t, np.asarray(member_restored, dtype=np.float32))

    # ------------------------------------------------------------------------------------------- volumes
    def to_model_space(self, volume: Volume, brain_mask: np.ndarray | None = None,
                       slices: Sequence[int] | None = None, *, foreground: np.ndarray | None = None) -> ModelSpace:
        """The model-space view of ``volume`` this model analyses (``foreground``: see
        :func:`engine.preprocess.to_model_space`)."""
        return to_model_space(volume, self.preset.preprocess, brain_mask, slices=slices, foreground=foreground)

    def input_warnings(self, volume: Volume, brain_mask: np.ndarray | None,
                       foreground: np.ndarray | None = None) -> tuple[str, ...]:
        """One-line warnings about using this model on ``volume`` (``foreground``: the scan's foreground when the
        caller has it already)."""
        warnings = []
        if self.info.expects_skull_stripped and brain_mask is None:
            litres = skull_on_litres(volume, foreground)
            if litres > SKULL_ON_LITRES:
                warnings.append(f"{volume.name}: looks not skull-stripped ({litres:.1f} l of foreground, a brain is "
                                "1-1.7 l); this model expects brain-extracted scans or a brain mask")
        return tuple(warnings)

    def calibration_mismatches(self, settings: AnalysisSettings) -> tuple[str, ...]:
        """What in ``settings`` differs from the settings the calibrated threshold was measured with (empty: it
        holds, or there is no calibration)."""
        calibration = self.info.calibration
        if calibration is None:
            return ()
        return calibration.mismatches(settings.sampler, self.steps_for(settings), settings.slice_stride,
                                      settings.scoring or self.scoring)

    def auto_stride(self, volume: Volume, slice_axis: int) -> int:
        """Slice stride that matches the model's spacing through the plane (``slice_spacing_mm``, else its in-plane
        spacing) over the scan's slice thickness, at least 1."""
        spec = self.preset.preprocess
        thickness = float(volume.zooms[slice_axis])
        return max(1, int(round((spec.slice_spacing_mm or spec.spacing_mm) / max(thickness, 1e-3))))

    def stride_choice(self, volume: Volume, ms: ModelSpace, settings: AnalysisSettings) -> np.ndarray:
        """Model-slice positions a whole-volume analysis restores: every stride-th brain slice and the last."""
        if len(ms) <= 2:
            return np.arange(len(ms))
        stride = settings.slice_stride or self.auto_stride(volume, ms.slice_axis)
        order = np.argsort(ms.native_index)
        return np.unique(np.concatenate([order[::stride], order[-1:]]))

    def plan_slices(self, volume: Volume, brain_mask: np.ndarray | None = None,
                    settings: AnalysisSettings | None = None) -> tuple[int, ...]:
        """The native slice indices (along :func:`engine.axial_axis`) that a whole-volume :meth:`analyse` restores,
        ascending: every ``slice_stride``-th brain slice and the last. A caller may analyse them in any order and in
        any chunks (``analyse(volume, slices=chunk)`` gives each slice the same result), then fill the slices in
        between with :func:`engine.fill_between_slices`."""
        settings = settings or AnalysisSettings(sampler=self.preset.default_sampler)  # type: ignore[arg-type]
        ms = self.to_model_space(volume, brain_mask)
        return tuple(sorted(int(k) for k in ms.native_index[self.stride_choice(volume, ms, settings)]))

    def analyse(
        self,
        volume: Volume,
        *,
        settings: AnalysisSettings | None = None,
        slices: Sequence[int] | None = None,
        brain_mask: np.ndarray | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> AnomalyResult:
        """Analyse a volume (all brain slices, or the given native slice indices) on its own grid.

        Args:
            volume: the scan.
            settings: sampler, steps, seed, batch size, slice stride; defaults to the model's defaults.
            slices: native indices along :func:`engine.axial_axis` to analyse; None analyses the whole brain, every
                ``settings.slice_stride``-th slice, interpolating the maps of the slices in between.
            brain_mask: bool mask on the volume's grid (recommended for scans that are not skull-stripped).
            on_progress: receives at most 10 reports a second; ``done``/``total`` count slice-steps.
            cancel: stops the analysis within one sampler step (raises :class:`~engine.errors.Cancelled`).

        Raises:
            VolumeError: the scan or mask cannot be analysed (e.g. no brain).
            Cancelled: the cancel token was set.
        """
        settings = settings or AnalysisSettings(sampler=self.preset.default_sampler)  # type: ignore[arg-type]
        check_cancel(cancel)
        brain = analysis_brain(volume, brain_mask)  # once: model space and the native result both need it
        ms = self.to_model_space(volume, brain_mask, slices, foreground=brain if brain_mask is None else None)
        chosen = np.arange(len(ms)) if slices is not None else self.stride_choice(volume, ms, settings)
        steps = self.steps_for(settings)
        total = len(chosen) * steps * len(self._members)
        throttle = ProgressThrottle(on_progress, total)
        n_members = len(self._members)

        def on_step(done: int) -> None:
            throttle.report(done, f"{done // max(1, steps * n_members)}/{len(chosen)} slices")

        throttle.report(0, f"0/{len(chosen)} slices", force=True)
        partial = self.analyse_model_space(ms.slices[chosen], ms.brain[chosen], ms.native_index[chosen], settings,
                                           on_step=on_step, cancel=cancel)
        throttle.report(total, f"{len(chosen)}/{len(chosen)} slices", force=True)
        return self.native_result(volume, ms, partial, chosen, settings, brain_mask, brain=brain)

    def native_result(self, volume: Volume, ms: ModelSpace, partial: ModelSpaceResult, chosen: np.ndarray,
                      settings: AnalysisSettings, brain_mask: np.ndarray | None = None, *,
                      brain: np.ndarray | None = None) -> AnomalyResult:
        """The result on the scan's own grid of model slices ``chosen`` (positions in ``ms``) analysed as
        ``partial``: the analysed slices mapped back, then, when slices were skipped, the slices in between filled
        on the native grid by :func:`engine.fill_between_slices`, exactly as the viewer fills its chunks. This is
        what :meth:`analyse` returns; evaluation and calibration use it to score the map a user gets. ``brain``:
        :func:`engine.analysis_brain` of the volume and mask, when the caller has it already."""
        steps = self.steps_for(settings)
        chosen = np.asarray(chosen, dtype=np.int64)
        n_model, size = len(ms), self.preset.preprocess.size

        def on_model_slices(values: np.ndarray, fill: float) -> np.ndarray:
            full = np.full((n_model, size, size), fill, dtype=np.float32)
            full[chosen] = values
            return full

        data = np.asarray(volume.data, dtype=np.float32)
        amap = from_model_space(on_model_slices(partial.mean_map, 0.0), ms, fill=0.0)
        spread = from_model_space(on_model_slices(partial.spread, 0.0), ms, fill=0.0)
        restored_model = from_model_space(ms.to_native_intensity(on_model_slices(partial.restored, np.nan)), ms,
                                          fill=np.nan)
        n_native = volume.shape[ms.slice_axis]
        analysed = np.zeros(n_native, dtype=bool)
        analysed[ms.native_index[chosen]] = True
        shape = [1, 1, 1]
        shape[ms.slice_axis] = n_native
        brain = analysis_brain(volume, brain_mask) if brain is None else brain
        outside = ~(analysed.reshape(shape) & brain)
        # In place: the three arrays are fresh from from_model_space (whole-volume temporaries cost page faults).
        restored = restored_model.astype(np.float32, copy=False)
        np.copyto(restored, data, where=outside | ~np.isfinite(restored))
        amap = amap.astype(np.float32, copy=False)
        np.copyto(amap, np.float32(0), where=outside)
        spread = spread.astype(np.float32, copy=False)
        np.copyto(spread, np.float32(0), where=outside)
        scores = np.full(n_native, np.nan, dtype=np.float32)
        scores[ms.native_index[chosen]] = partial.scores
        calibration = self.info.calibration
        mismatches = self.calibration_mismatches(settings)
        # What the reader said about the file travels with the result, into the sidecar, the report and the viewer.
        warnings = tuple(volume.warnings) + self.input_warnings(volume, brain_mask, brain)
        if mismatches:
            warnings += (f"the threshold is uncalibrated for these settings: {', '.join(mismatches)}",)
        unlearned = unlearned_timesteps(self.preset.diffusion, settings.sampler, steps)
        if unlearned:
            warnings += (f"the members learned {self.preset.diffusion.train_timesteps} timesteps only; "
                         f"{settings.sampler} with {steps} steps also visits {len(unlearned)} others, so the "
                         f"restorations are less trustworthy",)
        if ms.cropped:
            warnings += (f"{volume.name}: the brain is larger than the model's canvas and was cropped",)
        result = AnomalyResult(
            anomaly_map=amap,
            member_spread=spread,
            restored=restored,
            slice_scores=scores,
            analysed=analysed,
            covered=analysed.copy(),
            slice_axis=ms.slice_axis,
            seed=settings.seed,
            sampler=settings.sampler,
            steps=steps,
            model_id=self.info.model_id,
            threshold=calibration.threshold if calibration else None,
            warnings=warnings,
            uncalibrated_for=mismatches,
        )
        return fill_between_slices(result, brain, copy=False) if len(chosen) < n_model else result


_Batches = list[tuple[int, torch.Tensor, torch.Tensor]]
"""One member's pass over the slices: ``(first slice, maps, restorations)`` per network batch."""


class _StepCounter:
    """Slice-steps done across every member's pass, reported to ``on_step`` as one rising count even when members
    run side by side on several threads."""

    def __init__(self, on_step: Callable[[int], None] | None) -> None:
        self._on_step = on_step
        self._done = 0
        self._lock = threading.Lock()

    def batch(self, width: int) -> Callable[[int], None]:
        """The ``on_step`` for one batch of ``width`` slices: called with the number of its steps done so far."""
        seen = 0

        def step_done(i: int) -> None:
            nonlocal seen
            with self._lock:
                self._done += (i - seen) * width
                seen = i
                if self._on_step is not None:
                    self._on_step(self._done)

        return step_done


def _padded(batch: torch.Tensor, width: int) -> torch.Tensor:
    """``batch`` with empty slices appended up to ``width``."""
    if batch.shape[0] >= width:
        return batch
    return torch.cat([batch, batch.new_zeros((width - batch.shape[0], *batch.shape[1:]))])


def skull_on_litres(volume: Volume, foreground: np.ndarray | None = None) -> float:
    """Volume of the scan's foreground (:func:`engine.preprocess.foreground_mask`, the brain an analysis takes when
    given no mask; pass it when it is at hand) in litres: a brain is 1-1.7 l, a head with its skull well over 2.3 l."""
    if foreground is None:
        foreground = foreground_mask(np.asarray(volume.data, dtype=np.float32))
    voxel_ml = float(np.prod(volume.zooms)) / 1000.0
    return float(np.count_nonzero(foreground)) * voxel_ml / 1000.0


def load_ensemble(path: str | Path, *, device: str = "auto", folds: Sequence[int] | None = None,
                  runtime: str = "auto") -> Ensemble:
    """Load a model folder's members (all, or the given folds) onto a device, to run in a runtime.

    Args:
        runtime: one of :data:`engine.runtimes.RUNTIME_CHOICES`; ``auto`` runs the members with ONNX Runtime on a CPU
            where it is installed, else with torch (:func:`engine.runtimes.resolve_runtime`).

    Raises:
        ModelLoadError: the folder is missing, has no members, or a member file is missing or altered; or
            ``onnxruntime`` was asked for and cannot run these members (``auto`` then runs them with torch).
        ConfigError: a runtime that cannot run here.
    """
    path = Path(path)
    card = read_card(path)
    preset = card.preset
    available = sorted(card.members)
    if not available:
        raise ModelLoadError(f"{path}: the model has no trained members yet")
    chosen = available if folds is None else [int(f) for f in folds]
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise ModelLoadError(f"{path}: has no member for fold(s) {missing}")
    for fold in chosen:
        recorded = card.members[fold].training.train_tasks
        expected = list(fold_tasks(fold)[0])
        if recorded is not None and list(recorded) != expected:
            raise ModelLoadError(f"{path}: member {fold} was trained on tasks {list(recorded)}, but fold {fold} is "
                                 f"tasks {expected}; the fold table changed since it was trained")
    torch_device = resolve_device(device)
    chosen_runtime = resolve_runtime(runtime, torch_device)
    networks = []
    for fold in chosen:
        model = build_unet(preset.unet, preset.preprocess.size)
        model.load_state_dict(checkpoints.load_member_state(path, fold, card))  # its keys and shapes are checked there
        networks.append((fold, model.to(torch_device).eval()))
    members: list[tuple[int, Denoiser]] = list(networks)
    if chosen_runtime == "onnxruntime":
        try:
            members = [(fold, in_runtime(net, chosen_runtime, preset, weights_sha256=card.members[fold].sha256))
                       for fold, net in networks]
        except Exception as exc:
            if runtime != "auto":
                raise ModelLoadError(f"{path}: cannot run with onnxruntime ({exception_line(exc)})") from exc
            # ``auto`` never costs an analysis: every member stays in torch, which runs everything ONNX Runtime does.
            logger.warning("%s: onnxruntime unavailable here (%s); running with torch", path, exception_line(exc))
            chosen_runtime = "torch"
    logger.info("loaded %s (%d members) on %s with %s", path, len(members), torch_device, chosen_runtime)
    return Ensemble(path, card, members, torch_device, chosen_runtime)

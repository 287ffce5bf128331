"""AnalysisController: the viewer's link to the engine, without widgets (QtCore only).

It owns what the analysis needs besides the picture: the scan's and brain mask's identities, the model's lifecycle
(loaded in the background, on a chosen device), one background job at a time with a queue of typed requests for what
the user asked while it was busy, the result cache and its keys, and the calibration policy (the model's threshold and
colour scale, or a scale taken from the result for an uncalibrated model). Results go into :class:`ViewerState`;
everything a person should read (errors, status lines, progress) leaves through signals. The main window and the
headless renderer in :mod:`app.main` drive the same controller.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEventLoop, QObject, QTimer, Signal

from app import exporter, slicing, study, text
from app.findings_model import FindingsModel
from app.results_cache import ResultCache
from app.state import ViewerState
from app.volume_run import VolumeRun, merge_chunk
from app.workers import BackgroundRunner, Job
from engine import flagged

logger = logging.getLogger(__name__)

BASE_DEVICES = ("auto", "cpu")
"""Devices offered before the model has loaded: listing the real ones imports torch."""


class AnalysisMode(StrEnum):
    """What an analysis covers."""

    SLICE = "slice"  # the axial slice under the cursor
    VOLUME = "volume"  # the whole scan, in chunks nearest the cursor first (app.volume_run)


# --- requests queued while the worker is busy ----------------------------------------------------------------------
@dataclass(frozen=True)
class LoadModelRequest:
    explicit: bool  # asked for by the user (errors are shown) rather than loaded on the side


@dataclass(frozen=True)
class AnalysisRequest:
    mode: AnalysisMode


# --- tasks of the jobs handed to the worker --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelLoad:
    path: Path
    device: str
    explicit: bool


@dataclass(frozen=True, eq=False)
class Analysis:
    key: Hashable  # the cache entry the result merges into
    mode: AnalysisMode
    slices: tuple[int, ...]  # native slice indices along the axial axis still to analyse
    n_slices: int  # axial slices in the scan
    volume: Any  # the scan it ran on (a result for a scan no longer shown is cached, not shown)


@dataclass(frozen=True, eq=False)
class VolumePlan:
    run: VolumeRun  # asks the engine which slices a whole-volume analysis restores, and the brain it uses


@dataclass(frozen=True, eq=False)
class VolumeChunk:
    run: VolumeRun
    slices: tuple[int, ...]  # planned slices analysed by this chunk
    last: bool  # the plan is done after it (the result is then filled between all analysed slices)


@dataclass(frozen=True)
class AnalysisProgress:
    """Progress of an analysis in the scan's own units.

    Attributes:
        slices: how many slices of the scan the run covers (for a whole-volume run: the slices that carry a map at
            the end; 0 while the run is still finding them).
        n_slices: slices of the scan along the analysed axis.
        first_slice: the analysed slice when the run covers one slice.
        fraction: share done, in [0, 1].
        eta_s: estimated seconds left, or None before the first step is done.
        done: slices that carry a map so far, when known (a whole-volume run); else taken from ``fraction``.
        volume: True for a whole-volume run.
    """

    slices: int
    n_slices: int
    first_slice: int
    fraction: float
    eta_s: float | None
    done: int | None = None
    volume: bool = False

    @property
    def slices_done(self) -> int:
        if self.done is not None:
            return min(self.slices, self.done)
        return min(self.slices, int(round(self.fraction * self.slices)))


def file_key(path: Path) -> tuple[Any, ...]:
    """Identity of a file's content for the result cache: resolved path, modification time and size."""
    try:
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:  # unreadable metadata: a key that matches nothing cached
        return (str(path), time.time())


class AnalysisController(QObject):
    """Scan and mask input, model lifecycle, background jobs, result cache and calibration for one viewer.

    Args:
        backend: the engine's public API (the ``engine`` module, or the tests' fake).
        state: the viewer state the results go into.
        model_path: model folder (None: ``backend.default_model_path()``).
    """

    error_reported = Signal(str, str)  # title, one line
    status = Signal(str)
    model_changed = Signal()  # model, loading state or model error changed
    model_ready = Signal()
    devices_changed = Signal(list)
    calibration_changed = Signal()
    settings_changed = Signal()
    brain_mask_changed = Signal()
    warnings_changed = Signal(list)
    busy_changed = Signal(bool)
    analysis_progress = Signal(object)  # AnalysisProgress, also once at the start
    analysis_stopped = Signal()  # the running analysis ended, whatever the outcome
    analysis_done = Signal()  # a request settled (ran, was cached, failed or was cancelled) and nothing is queued

    def __init__(self, backend: Any, state: ViewerState, model_path: str | Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.state = state
        self.cache = ResultCache()
        self._read_result: tuple[Any, Any] | None = None  # (scan key, result) read from a cohort's files
        self._reference_scores: tuple[Any, Any] | None = None  # (result, reference, threshold) -> volume scores
        self.findings = FindingsModel(backend, state, self)
        # Engine errors (a damaged file, a bad setting) are logged as one line; anything else with its traceback.
        self.runner = BackgroundRunner(backend.CancelToken, backend.Cancelled, self, expected_type=backend.EngineError)
        self.errors: list[str] = []
        self.model: Any = None
        self.model_error: str | None = None
        self.model_loading = False
        self.model_path: Path | None = Path(model_path) if model_path is not None else None
        self.devices: list[str] = list(BASE_DEVICES)
        self.samplers: tuple[str, ...] = tuple(backend.SAMPLERS)  # the engine's one sampler registry
        self.sampler, self.steps, self.seed, self.device = "ddim", 0, 0, "auto"
        self.brain_mask: np.ndarray | None = None
        self.brain_mask_path: Path | None = None
        self.analysis_axis: int | None = None
        self.warnings: list[str] = []
        self._brain_mask_key: Any = None
        self._scan_key: Any = None
        self._pending: deque[LoadModelRequest | AnalysisRequest] = deque()
        self._run: VolumeRun | None = None  # the whole-volume analysis going on, between and during its chunks
        self._busy = False
        self._closing = False
        state.result_changed.connect(self._on_result_changed)
        self.runner.progress.connect(self._on_job_progress)
        self.runner.finished.connect(self._on_job_finished)
        self.runner.failed.connect(self._on_job_failed)
        self.runner.cancelled.connect(self._on_job_cancelled)
        self.runner.busy_changed.connect(self._update_busy)

    # ============================================================================================ errors
    def report_error(self, title: str, message: str) -> None:
        """Record a problem as one line and announce it (the window shows it; headless callers read ``errors``)."""
        line = " ".join(str(message).split())
        logger.info("%s: %s", title, line)
        self.errors.append(line)
        self.error_reported.emit(title, line)

    def report_unexpected(self, error: BaseException) -> None:
        """Report an exception that is not an engine error (the traceback goes to the log)."""
        self.report_error(text.ERR_UNEXPECTED, text.ERR_UNEXPECTED_LINE.format(kind=type(error).__name__,
                                                                               message=error))

    def _read(self, title: str, path: Path, load: Callable[[Path], Any]) -> Any:
        """``load(path)``, or None after reporting why it failed (never an exception out of a bad file)."""
        try:
            return load(path)
        except self.backend.EngineError as error:
            self.report_error(title, str(error))
        except Exception as error:  # never let a bad file take the viewer down
            logger.exception("unexpected error reading %s", path)
            self.report_error(title, text.ERR_READ.format(path=path, kind=type(error).__name__, message=error))
        return None

    # ============================================================================================ scan and mask
    def open_scan(self, path: str | Path) -> Any:
        """Read a scan and show it; returns the volume, or None after reporting why (the current scan stays)."""
        path = Path(path)
        volume = self._read(text.ERR_OPEN, path, self.backend.load_volume)
        if volume is None:
            return None
        if np.ndim(volume.data) != 3:
            self.report_error(text.ERR_OPEN, text.ERR_NOT_3D.format(path=path, shape=np.shape(volume.data)))
            return None
        self._scan_key = file_key(path)
        self.analysis_axis = self._axial_axis(volume)
        self._set_brain_mask(None, None, None)  # a mask belongs to the scan it was opened for
        self.state.set_volume(volume)
        self.refresh_warnings()
        self.show_cached_result()
        return volume

    def _axial_axis(self, volume: Any) -> int:
        return int(self.backend.axial_axis(volume.affine))

    def open_brain_mask(self, path: str | Path) -> bool:
        """Use a brain mask on the open scan's grid; on failure report why and keep the current one.

        Results computed without the mask (or with another one) stay cached under their own key.
        """
        volume = self.state.volume
        if volume is None:
            self.report_error(text.ERR_BRAIN_MASK, text.ERR_NO_SCAN)
            return False
        path = Path(path)
        mask = self._read(text.ERR_BRAIN_MASK, path, lambda p: np.asarray(self.backend.load_mask(p, volume), bool))
        if mask is None:
            return False
        if not mask.any():
            self.report_error(text.ERR_BRAIN_MASK, text.ERR_BRAIN_MASK_EMPTY.format(path=path))
            return False
        self._set_brain_mask(mask, path, file_key(path))
        self.show_cached_result()
        self.refresh_warnings()
        voxels = int(mask.sum())
        litres = voxels * float(np.prod(slicing.voxel_sizes(volume.affine))) / 1e6
        self.status.emit(text.STATUS_BRAIN_MASK.format(name=path.name, voxels=voxels, litres=litres))
        return True

    def clear_brain_mask(self) -> None:
        """Analyse without a brain mask again (the scan is taken as skull-stripped)."""
        if self.brain_mask is None:
            return
        self._set_brain_mask(None, None, None)
        self.show_cached_result()
        self.refresh_warnings()
        self.status.emit(text.STATUS_BRAIN_MASK_CLEARED)

    def _set_brain_mask(self, mask: np.ndarray | None, path: Path | None, key: Any) -> None:
        self.brain_mask, self.brain_mask_path, self._brain_mask_key = mask, path, key
        self.brain_mask_changed.emit()

    # ============================================================================================ settings
    def set_settings(self, *, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                     device: str | None = None) -> None:
        """Change the analysis settings; the cached result for the new settings (or none) is shown."""
        new = (sampler if sampler is not None else self.sampler, int(steps) if steps is not None else self.steps,
               int(seed) if seed is not None else self.seed, device or self.device)
        if new != (self.sampler, self.steps, self.seed, self.device):
            self.sampler, self.steps, self.seed, self.device = new
            self.settings_changed.emit()
            self.show_cached_result()

    def analysis_settings(self) -> Any:
        """The engine's ``AnalysisSettings`` for the current choices."""
        return self.backend.AnalysisSettings(sampler=self.sampler, steps=self.steps if self.steps > 0 else None,
                                             seed=self.seed)

    def result_key(self) -> Hashable | None:
        """Cache key of the result for the open scan, brain mask, model and settings (None without scan or model)."""
        if self.model is None or self._scan_key is None:
            return None
        s = self.analysis_settings()
        # Keyed on the device the model runs on (results differ across devices by rounding), not on a setting.
        info = self.model.info
        return (self._scan_key, self._brain_mask_key, info.model_id, info.device, s.sampler, s.steps, s.seed)

    def show_result(self, result: Any) -> None:
        """Show a result read from files (a cohort's), at the threshold it was written with. It stays the open scan's
        result until the viewer analyses the scan itself (a model loading or a setting changing does not hide it);
        it is not cached, so an analysis asked for now runs with the viewer's own settings."""
        self._read_result = (self._scan_key, result)
        self.state.set_result(result)
        if result.threshold is not None:
            self.state.set_threshold(float(result.threshold))
        self.refresh_warnings()

    def show_cached_result(self) -> None:
        key = self.result_key()
        cached = self.cache.get(key) if key is not None else None
        if cached is None and self._read_result is not None and self._read_result[0] == self._scan_key:
            cached = self._read_result[1]
        if cached is not self.state.result and self.state.volume is not None:
            self.state.set_result(cached)

    # ============================================================================================ model
    def load_model(self, path: str | Path | None = None, *, explicit: bool = False) -> None:
        """Load a model folder in the background (default: the one given at start, else the bundled model)."""
        path = path if path is not None else self.model_path
        if path is None:
            try:
                path = self.backend.default_model_path()
            except Exception as error:  # the engine part that knows the default may be missing
                self._set_no_model(str(error), show=explicit)
                return
        self.model_path = Path(path)
        if not self.model_path.exists():
            self._set_no_model(text.ERR_MODEL_FOLDER_MISSING.format(path=self.model_path), show=explicit)
            return
        if self.runner.busy:
            self._yield_background()
            self._pending.appendleft(LoadModelRequest(explicit))
            return
        task = ModelLoad(self.model_path, self.device or "auto", explicit)
        self.model_loading = True
        self.model_changed.emit()
        self.status.emit(text.STATUS_MODEL_LOADING)
        self.runner.submit(task, _model_loader(self.backend, task))

    def describe_model(self) -> str:
        """The model's name, modality, members and device; or why there is none."""
        if self.model_loading:
            return text.STATUS_MODEL_LOADING
        if self.model is None:
            return text.MODEL_NONE if self.model_error is None else text.STATUS_NO_MODEL.format(reason=self.model_error)
        info = self.model.info
        return text.MODEL_SUMMARY.format(name=info.name, version=info.version, modality=info.modality.upper(),
                                         members=info.members, device=info.device)

    def _set_no_model(self, reason: str, *, show: bool) -> None:
        self.model = None
        self.model_error = reason
        self.model_loading = False
        self.model_changed.emit()
        self.status.emit(text.STATUS_NO_MODEL.format(reason=reason))
        if show:
            self.report_error(text.ERR_MODEL, reason)

    def _set_devices(self, devices: list[str]) -> None:
        self.devices = list(devices)
        if self.device not in self.devices:
            self.device = self.devices[0]
        self.devices_changed.emit(self.devices)

    def offer_device(self, device: str) -> None:
        """Offer a device (a saved choice) before the real list is known; it is checked when the model loads."""
        if device not in self.devices:
            self.devices.append(device)
            self.devices_changed.emit(self.devices)

    # ============================================================================================ calibration
    @property
    def calibration(self) -> Any:
        """The model's calibration, or None (no model, or an uncalibrated one)."""
        return getattr(self.model.info, "calibration", None) if self.model is not None else None

    def threshold_help(self) -> tuple[str, str]:
        """Units of the threshold and its calibrated default, as shown to the user."""
        calibration = self.calibration
        if calibration is None:
            return text.THRESHOLD_UNITS_UNCALIBRATED, text.THRESHOLD_DEFAULT_UNCALIBRATED
        return calibration.units, f"{calibration.threshold:.4g}"

    def reference_slice_score(self) -> float | None:
        """A high percentile (the 99th if known) of healthy scans' slice scores, for the slice-score plot."""
        calibration = self.calibration
        if calibration is None:
            return None
        percentiles = calibration.slice_score_percentiles
        key = "99" if "99" in percentiles else (max(percentiles, key=float) if percentiles else None)
        return float(percentiles[key]) if key is not None else None

    def _apply_calibration(self) -> None:
        calibration = self.calibration
        if calibration is not None:
            self.state.set_display_max(max(float(calibration.display_max), 1e-6))
            self.state.set_threshold(float(calibration.threshold))
        self.calibration_changed.emit()

    def _on_result_changed(self) -> None:
        result = self.state.result
        if result is not None and self.calibration is None:
            # An uncalibrated model: scale the colours to this result instead.
            values = result.anomaly_map[result.anomaly_map > 0]
            if values.size:
                top = float(np.percentile(values, 99.9))
                if top > 0 and math.isfinite(top):
                    self.state.set_display_max(top)
        self.refresh_warnings()

    def refresh_warnings(self) -> None:
        """Recompute the warnings about the open scan, model and result, and announce them."""
        warnings: list[str] = []
        volume = self.state.volume
        # What the loader said about the file (a label image opened as a scan, sform/qform disagreeing, ...).
        warnings += [text.WARN_MODALITY.format(message=line) for line in getattr(volume, "warnings", ())]
        if volume is not None and self.model is not None:
            try:
                message = self.backend.modality_warning(volume, self.model.info.modality)
            except (AttributeError, ImportError) as error:
                logger.debug("modality check unavailable: %s", error)
                message = None
            if message:
                warnings.append(text.WARN_MODALITY.format(message=message))
        result = self.state.result
        if result is not None:
            for warning in result.warnings:
                line = text.WARN_MODALITY.format(message=warning)
                if line not in warnings:
                    warnings.append(line)
        self.warnings = warnings
        self.warnings_changed.emit(list(warnings))

    # ============================================================================================ analysis
    def request_analysis(self, mode: AnalysisMode | str) -> None:
        """Analyse the slice under the cursor or the whole volume (only what the cache does not hold yet)."""
        mode = AnalysisMode(mode)
        if self.state.volume is None:
            self.report_error(text.ERR_ANALYSIS, text.ERR_NO_SCAN)
            return
        if self._yield_background():
            self._pending.append(AnalysisRequest(mode))
            return
        if self.busy:
            if self.runner.current is not None and isinstance(self.runner.current.task, ModelLoad):
                self._pending.append(AnalysisRequest(mode))
            else:
                self.status.emit(text.STATUS_BUSY)
            return
        if self.model is None and self.model_error is None:
            self.load_model()  # never asked for yet (the window loads it only after the first image)
            if self.runner.busy:
                self._pending.append(AnalysisRequest(mode))
                return
        wanted_device = self.device or "auto"
        if self.model is not None and wanted_device != "auto" and self.model.info.device != wanted_device:
            self._pending.append(AnalysisRequest(mode))
            self.load_model(self.model_path, explicit=True)
            return
        if self.model is None:
            self.report_error(text.ERR_ANALYSIS, text.ERR_NO_MODEL.format(
                reason=self.model_error or text.REASON_NONE_CHOSEN))
            self.analysis_done.emit()
            return
        axis = self.analysis_axis if self.analysis_axis is not None else 2
        n = int(np.shape(self.state.volume.data)[axis])
        key = self.result_key()
        if mode is AnalysisMode.VOLUME:
            self._start_volume_run(key, axis, n)
            return
        missing = self.cache.missing(key, [int(self.state.cursor[axis])])
        if not missing:
            self.show_cached_result()
            self.status.emit(text.STATUS_CACHED)
            self.analysis_done.emit()
            return
        task = Analysis(key, mode, tuple(missing), n, self.state.volume)
        model, settings, brain_mask = self.model, self.analysis_settings(), self.brain_mask

        def run(on_progress: Any, cancel: Any) -> Any:
            return model.analyse(task.volume, settings=settings, slices=list(missing), brain_mask=brain_mask,
                                 on_progress=on_progress, cancel=cancel)

        self.status.emit(text.STATUS_ANALYSING.format(count=len(missing)))
        self.analysis_progress.emit(AnalysisProgress(len(missing), n, missing[0], 0.0, None))
        self.runner.submit(task, run)

    # ------------------------------------------------------------------------------------ whole volume, in chunks
    def _start_volume_run(self, key: Hashable, axis: int, n: int) -> None:
        """Ask the engine for its plan (in the worker); the chunks follow in :meth:`_next_chunk`."""
        run = VolumeRun(key, self.state.volume, n, axis)
        model, settings, brain_mask, backend = self.model, self.analysis_settings(), self.brain_mask, self.backend

        def plan(_on_progress: Any, _cancel: Any) -> Any:
            planned = model.plan_slices(run.volume, brain_mask=brain_mask, settings=settings)
            return planned, np.asarray(backend.analysis_brain(run.volume, brain_mask), dtype=bool)

        self._run = run
        self._update_busy()
        self.status.emit(text.STATUS_PLANNING)
        self.analysis_progress.emit(AnalysisProgress(0, n, int(self.state.cursor[axis]), 0.0, None, volume=True))
        self.runner.submit(VolumePlan(run), plan)

    def _next_chunk(self, run: VolumeRun) -> None:
        """Submit the planned slices nearest the cursor *now*; or end the run when the scan or settings changed."""
        if run.volume is not self.state.volume or run.key != self.result_key():
            self._run = None
            self.status.emit(text.STATUS_RUN_STOPPED)
            return
        chunk = run.next_chunk(int(self.state.cursor[run.axis]))
        last = not run.todo
        # The first chunk gets the user's mask as given (so the engine's input warnings come with it); later ones
        # the brain the engine computed from it, which is the same mask without recomputing the foreground each time.
        brain_mask = self.brain_mask if run.chunks == 1 else run.brain
        base = self.cache.get(run.key)
        model, settings, fill = self.model, self.analysis_settings(), self.backend.fill_between_slices

        def analyse(on_progress: Any, cancel: Any) -> Any:
            part = model.analyse(run.volume, settings=settings, slices=list(chunk), brain_mask=brain_mask,
                                 on_progress=on_progress, cancel=cancel)
            return merge_chunk(base, part, run.plan, run.brain, fill, last=last)

        self.runner.submit(VolumeChunk(run, chunk, last), analyse)

    def _run_progress(self, run: VolumeRun, fraction: float, first_slice: int) -> AnalysisProgress:
        return AnalysisProgress(run.total, run.n_slices, first_slice, fraction, run.eta_s(fraction),
                                done=run.slices_with_map(self.cache.get(run.key)), volume=True)

    def _on_plan(self, run: VolumeRun, planned: Any) -> None:
        slices, brain = planned
        entry = self.cache.get(run.key)
        run.set_plan(slices, brain, np.asarray(entry.analysed, dtype=bool) if entry is not None else None)
        if run.todo:
            self._next_chunk(run)
            return
        self._run = None  # every planned slice was analysed before: fill in between and show it
        if entry is not None:
            self.cache.put(run.key, self.backend.fill_between_slices(entry, brain))
        self.show_cached_result()
        self.status.emit(text.STATUS_CACHED_VOLUME)

    def _on_chunk(self, task: VolumeChunk, result: Any) -> None:
        run = task.run
        self.cache.put(run.key, result)
        if run.key == self.result_key() and run.volume is self.state.volume:
            self.state.set_result(result)
        if run is not self._run:  # cancelled while this chunk was finishing: keep what it brought, go no further
            return
        self.analysis_progress.emit(self._run_progress(run, run.fraction(0, 0.0), task.slices[0]))
        if task.last:
            self._run = None
            self.status.emit(text.STATUS_VOLUME_DONE.format(count=run.slices_with_map(result), analysed=len(run.plan),
                                                            seconds=time.monotonic() - run.started))
            self.refresh_warnings()
        else:
            self._next_chunk(run)

    @property
    def busy(self) -> bool:
        """A job of the user's runs, or a whole-volume analysis is between two of its chunks (a worklist scan
        analysed in the background does not count: it gives way, see :meth:`_yield_background`)."""
        return (self.runner.busy and not _is_background(self.runner.current)) or self._run is not None

    def _yield_background(self) -> bool:
        """Stop a background worklist scan so the user's request runs next; True if one was running (the request
        must then wait in the queue for the worker to come free)."""
        if self.runner.busy and _is_background(self.runner.current):
            self.runner.cancel()
            return True
        return False

    def _update_busy(self, *_: Any) -> None:
        if self.busy != self._busy:
            self._busy = self.busy
            self.busy_changed.emit(self._busy)

    def cancel_analysis(self) -> None:
        """Stop the running analysis at the engine's next step and drop queued ones."""
        self._pending = deque(p for p in self._pending if not isinstance(p, AnalysisRequest))
        self._run = None  # no further chunks
        current = self.runner.current
        if current is not None and isinstance(current.task, ANALYSIS_TASKS):
            self.runner.cancel()
        self._update_busy()

    @property
    def analysing(self) -> bool:
        current = self.runner.current
        return self._run is not None or (current is not None and isinstance(current.task, ANALYSIS_TASKS))

    def is_idle(self) -> bool:
        """No background job running or queued, and no whole-volume analysis under way."""
        return not self.runner.busy and not self._pending and self._run is None

    def wait_idle(self, timeout_s: float = 600.0) -> bool:
        """Process events until no background job runs or waits (for headless use); True if idle in time."""
        deadline = time.monotonic() + timeout_s
        loop = QEventLoop()
        while not self.is_idle() and time.monotonic() < deadline:
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        return self.is_idle()

    def export(self, folder: str | Path | None,
               confirm_overwrite: Callable[[int, Path], bool]) -> dict[str, Path] | None:
        """Write the shown result (beside the scan when ``folder`` is None); None after reporting why not."""
        volume, result = self.state.volume, self.state.result
        if volume is None or result is None:
            self.report_error(text.ERR_EXPORT, text.ERR_NO_RESULT if volume is not None else text.ERR_NO_SCAN)
            return None
        out_dir = Path(folder) if folder is not None else (Path(volume.path).parent if volume.path else Path.cwd())
        try:
            written = exporter.export(self.backend, volume, result, out_dir, threshold=self.state.threshold,
                                      brain_mask_path=self.brain_mask_path, confirm_overwrite=confirm_overwrite,
                                      findings=self.findings.findings)
        except exporter.ExportProblem as problem:
            self.report_error(text.ERR_EXPORT, str(problem))
            return None
        if written is not None:
            self.status.emit(text.STATUS_EXPORTED.format(count=len(written), folder=out_dir)
                             + exporter.partial_note(result))
        return written

    def reference_volume_scores(self) -> Any:
        """The shown mask against the reference segmentation over the whole volume (``app.study.ReferenceScores``),
        or None without both; computed once per result, reference and threshold, not per slice."""
        reference, result = self.state.reference, self.state.result
        if reference is None or result is None:
            return None
        key = (id(result), id(reference), self.state.threshold)
        if self._reference_scores is None or self._reference_scores[0] != key:
            mask = flagged(result.anomaly_map, self.state.threshold) & (result.anomaly_map > 0)
            self._reference_scores = (key, study.reference_scores(mask, reference.data))
        return self._reference_scores[1]

    def save_report(self, folder: str | Path | None) -> Path | None:
        """Write the one-page PDF report of the shown result (beside the scan when ``folder`` is None); None after
        reporting why not."""
        volume, result = self.state.volume, self.state.result
        if volume is None or result is None:
            self.report_error(text.ERR_REPORT, text.ERR_NO_RESULT if volume is not None else text.ERR_NO_SCAN)
            return None
        study_options: dict[str, Any] = {}
        shown = self.state.sequences.get(self.state.sequence)
        if shown is not None:  # the report draws what the user reads under the map
            study_options["underlay"] = (text.REPORT_SEQUENCE.format(name=shown.name, file=shown.path.name),
                                         shown.data)
        reference, scores = self.state.reference, self.reference_volume_scores()
        if reference is not None and scores is not None:
            study_options["reference"] = (reference.path.name, reference.data)
            study_options["notes"] = [(text.REPORT_REFERENCE_LABEL, text.REPORT_REFERENCE.format(
                file=reference.path.name, threshold=self.state.threshold, dice=text.share(scores.dice),
                sensitivity=text.share(scores.sensitivity), precision=text.share(scores.precision)))]
        try:
            path = self.backend.write_report(
                volume, result, self.findings.findings, self.backend.report_path(volume, folder),
                model=self.model.info if self.model is not None else None, display_max=self.state.display_max,
                brain_mask=self.brain_mask_path.name if self.brain_mask_path is not None else None, **study_options)
        except self.backend.EngineError as error:
            self.report_error(text.ERR_REPORT, str(error))
            return None
        self.status.emit(text.STATUS_REPORT.format(path=path))
        return Path(path)

    def export_dicom_seg(self, folder: str | Path | None) -> Path | None:
        """Write the findings as a DICOM SEG referencing the source series (beside the series folder when ``folder``
        is None); None after reporting why not (e.g. the scan was not read from a DICOM series)."""
        volume, result = self.state.volume, self.state.result
        if volume is None or result is None:
            self.report_error(text.ERR_EXPORT, text.ERR_NO_RESULT if volume is not None else text.ERR_NO_SCAN)
            return None
        if getattr(volume, "source_format", "") != "dicom":
            self.report_error(text.ERR_EXPORT, text.ERR_NOT_DICOM.format(name=Path(volume.path or "").name,
                                                                        kind=volume.source_format))
            return None
        try:
            path = self.backend.write_dicom_seg(volume, self.findings.findings, folder, model_id=result.model_id)
        except self.backend.EngineError as error:
            self.report_error(text.ERR_EXPORT, str(error))
            return None
        self.status.emit(text.STATUS_DICOM_SEG.format(path=path, count=len(self.findings.findings.items)))
        return Path(path)

    def shutdown(self) -> None:
        """Drop queued requests, cancel the running job and stop the worker thread."""
        self._closing = True
        self._pending.clear()
        self._run = None
        self.runner.shutdown()

    # ============================================================================================ job outcomes
    def _on_job_progress(self, job: Job, progress: Any) -> None:
        task = job.task  # a background worklist scan has no progress of the user's to show
        if isinstance(task, Analysis):
            self.analysis_progress.emit(AnalysisProgress(len(task.slices), task.n_slices, task.slices[0],
                                                         float(progress.fraction), progress.eta_s))
        elif isinstance(task, VolumeChunk) and task.run is self._run:
            fraction = task.run.fraction(len(task.slices), float(progress.fraction))
            self.analysis_progress.emit(self._run_progress(task.run, fraction, task.slices[0]))

    def _on_job_finished(self, job: Job, result: Any, seconds: float) -> None:
        task = job.task
        if _is_background(job):  # its owner (app.worklist_analysis) takes the outcome
            self._after_job(job)
            return
        if isinstance(task, ModelLoad):
            self.model, devices = result
            logger.info("model %s loaded in %.1f s on %s", self.model.info.model_id, seconds, self.model.info.device)
            self.model_error = None
            self.model_loading = False
            self._set_devices(devices)
            self.model_changed.emit()
            self._apply_calibration()
            self.status.emit(self.describe_model().replace("\n", ", "))
            self.refresh_warnings()
            self.show_cached_result()
            self.model_ready.emit()
        elif isinstance(task, Analysis):
            merged = self.cache.add(task.key, result)
            if task.key == self.result_key() and task.volume is self.state.volume:
                self.state.set_result(merged)
            self.status.emit(text.STATUS_DONE.format(count=len(task.slices), seconds=seconds))
            self.refresh_warnings()
        elif isinstance(task, VolumePlan):
            if task.run is self._run:
                self._on_plan(task.run, result)
        elif isinstance(task, VolumeChunk):
            self._on_chunk(task, result)
        self._after_job(job)

    def _on_job_failed(self, job: Job, error: Any) -> None:
        if _is_background(job):
            self._after_job(job)
            return
        if isinstance(job.task, (VolumePlan, VolumeChunk)):
            self._run = None
        if isinstance(job.task, ModelLoad):
            wanted_by_user = job.task.explicit or any(isinstance(p, AnalysisRequest) for p in self._pending)
            self._pending = deque(p for p in self._pending if not isinstance(p, AnalysisRequest))
            self._set_no_model(str(error), show=wanted_by_user)
        elif isinstance(error, self.backend.EngineError):
            self.report_error(text.ERR_ANALYSIS, str(error))
        else:
            self.report_unexpected(error)
        self._after_job(job)

    def _on_job_cancelled(self, job: Job) -> None:
        if _is_background(job):
            self._after_job(job)
            return
        if isinstance(job.task, (VolumePlan, VolumeChunk)):
            self._run = None
        if isinstance(job.task, ModelLoad):
            self.model_loading = False
            self.model_changed.emit()
        self.status.emit(text.STATUS_CANCELLED)
        self._after_job(job)

    def _after_job(self, job: Job) -> None:
        if self._run is not None and self.runner.busy:  # a whole-volume analysis goes on with its next chunk
            return
        self._update_busy()
        ran_analysis = isinstance(job.task, ANALYSIS_TASKS)
        if ran_analysis:
            self.analysis_stopped.emit()
        if self._closing:
            return
        if self._pending:
            request = self._pending.popleft()
            if isinstance(request, LoadModelRequest):
                self.load_model(self.model_path, explicit=request.explicit)
            else:
                self.request_analysis(request.mode)
            if self.runner.busy:
                return
        if (ran_analysis or not self._pending) and not _is_background(job):
            self.analysis_done.emit()


ANALYSIS_TASKS = (Analysis, VolumePlan, VolumeChunk)



def _is_background(job: Job | None) -> bool:
    """A job that gives way to the user's (a task with ``background = True``, such as a worklist scan)."""
    return job is not None and bool(getattr(job.task, "background", False))


def _model_loader(backend: Any, task: ModelLoad) -> Callable[[Any, Any], Any]:
    """The worker's job for loading a model: list the devices, check the wanted one, load the ensemble."""

    def load(_progress: Any, _cancel: Any) -> Any:
        try:
            devices = list(backend.available_devices())
        except Exception as error:  # an engine without the listing still works on the CPU
            logger.warning("cannot list devices: %s", error)
            devices = list(BASE_DEVICES)
        if task.device not in devices:
            raise backend.ModelLoadError(text.ERR_DEVICE_UNAVAILABLE.format(device=task.device,
                                                                             devices=", ".join(devices)))
        return backend.load_ensemble(task.path, device=task.device), devices

    return load

"""The viewer's background work: one job at a time, a queue for what the user asked meanwhile (QtCore only).

:class:`AnalysisScheduler` owns the worker thread. It loads the model (for :class:`~app.model_session.ModelSession`),
analyses the slice under the cursor, and runs a whole-volume analysis as the engine's plan followed by chunks nearest
the cursor first (:mod:`app.volume_run`). Results merge into the result cache; a background job (a worklist scan, see
:mod:`app.worklist_analysis`) gives way to whatever the user asks for.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from PySide6.QtCore import QEventLoop, QObject, QTimer, Signal

from app import text
from app.model_session import ModelLoad, ModelSession, model_loader
from app.reporting import Reporter
from app.results_cache import ResultCache
from app.scan_session import ScanSession
from app.state import ViewerState
from app.volume_run import VolumeRun, merge_chunk
from app.workers import BackgroundRunner, Job


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


# --- tasks of the jobs handed to the worker (and ModelLoad) ----------------------------------------------------------
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


ANALYSIS_TASKS = (Analysis, VolumePlan, VolumeChunk)


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


@dataclass(frozen=True)
class ResultHooks:
    """What the scheduler asks of the result display (the controller's): the cache key of what is shown now, show the
    cached result for it, recompute the warnings."""

    key: Callable[[], Hashable | None]
    show_cached: Callable[[], None]
    refresh_warnings: Callable[[], None]


class AnalysisScheduler(QObject):
    """Model loads and analyses for one viewer, one job at a time.

    Args:
        backend: the engine's public API.
        state: the viewer state (the scan, the cursor; results go into it).
        cache: the result cache analyses merge into.
        reporter: where errors and status lines go.
        scan: the open scan and its brain mask.
        models: the model and the analysis settings.
        results: the result display's hooks.
    """

    busy_changed = Signal(bool)
    analysis_progress = Signal(object)  # AnalysisProgress, also once at the start
    analysis_stopped = Signal()  # the running analysis ended, whatever the outcome
    analysis_done = Signal()  # a request settled (ran, was cached, failed or was cancelled) and nothing is queued

    def __init__(self, backend: Any, state: ViewerState, cache: ResultCache, reporter: Reporter, scan: ScanSession,
                 models: ModelSession, results: ResultHooks, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend, self.state, self.cache, self.reporter = backend, state, cache, reporter
        self.scan, self.models, self.results = scan, models, results
        # Engine errors (a damaged file, a bad setting) are logged as one line; anything else with its traceback.
        self.runner = BackgroundRunner(backend.CancelToken, backend.Cancelled, self, expected_type=backend.EngineError)
        self._pending: deque[LoadModelRequest | AnalysisRequest] = deque()
        self._run: VolumeRun | None = None  # the whole-volume analysis going on, between and during its chunks
        self._busy = False
        self._closing = False
        self.runner.progress.connect(self._on_job_progress)
        self.runner.finished.connect(self._on_job_finished)
        self.runner.failed.connect(self._on_job_failed)
        self.runner.cancelled.connect(self._on_job_cancelled)
        self.runner.busy_changed.connect(self._update_busy)

    # ============================================================================================ model
    def load_model(self, path: Any = None, *, explicit: bool = False) -> None:
        """Load a model folder in the background (default: the one given at start, else the bundled model)."""
        task = self.models.begin_load(path, explicit=explicit)
        if task is None:
            return
        if self.runner.busy:
            self._yield_background()
            self._pending.appendleft(LoadModelRequest(explicit))
            return
        self.models.loading_started()
        self.runner.submit(task, model_loader(self.backend, task))

    # ============================================================================================ analysis
    def request_analysis(self, mode: AnalysisMode | str) -> None:
        """Analyse the slice under the cursor or the whole volume (only what the cache does not hold yet)."""
        mode = AnalysisMode(mode)
        if self.state.volume is None:
            self.reporter.report_error(text.ERR_ANALYSIS, text.ERR_NO_SCAN)
            return
        if self._yield_background():
            self._pending.append(AnalysisRequest(mode))
            return
        if self.busy:
            if self.runner.current is not None and isinstance(self.runner.current.task, ModelLoad):
                self._pending.append(AnalysisRequest(mode))
            else:
                self.reporter.status.emit(text.STATUS_BUSY)
            return
        models = self.models
        if models.model is None and models.model_error is None:
            self.load_model()  # never asked for yet (the window loads it only after the first image)
            if self.runner.busy:
                self._pending.append(AnalysisRequest(mode))
                return
        if models.wants_other_device():
            self._pending.append(AnalysisRequest(mode))
            self.load_model(models.model_path, explicit=True)
            return
        if models.model is None:
            self.reporter.report_error(text.ERR_ANALYSIS, text.ERR_NO_MODEL.format(
                reason=models.model_error or text.REASON_NONE_CHOSEN))
            self.analysis_done.emit()
            return
        axis = self.scan.analysis_axis if self.scan.analysis_axis is not None else 2
        n = int(np.shape(self.state.volume.data)[axis])
        key = self.results.key()
        if mode is AnalysisMode.VOLUME:
            self._start_volume_run(key, axis, n)
            return
        self._analyse_slice(key, mode, axis, n)

    def _analyse_slice(self, key: Hashable, mode: AnalysisMode, axis: int, n: int) -> None:
        missing = self.cache.missing(key, [int(self.state.cursor[axis])])
        if not missing:
            self.results.show_cached()
            self.reporter.status.emit(text.STATUS_CACHED)
            self.analysis_done.emit()
            return
        task = Analysis(key, mode, tuple(missing), n, self.state.volume)
        model, settings, brain_mask = self.models.model, self.models.analysis_settings(), self.scan.brain_mask

        def run(on_progress: Any, cancel: Any) -> Any:
            return model.analyse(task.volume, settings=settings, slices=list(missing), brain_mask=brain_mask,
                                 on_progress=on_progress, cancel=cancel)

        self.reporter.status.emit(text.STATUS_ANALYSING.format(count=len(missing)))
        self.analysis_progress.emit(AnalysisProgress(len(missing), n, missing[0], 0.0, None))
        self.runner.submit(task, run)

    # ------------------------------------------------------------------------------------ whole volume, in chunks
    def _start_volume_run(self, key: Hashable, axis: int, n: int) -> None:
        """Ask the engine for its plan (in the worker); the chunks follow in :meth:`_next_chunk`."""
        run = VolumeRun(key, self.state.volume, n, axis)
        model, settings, brain_mask, backend = (self.models.model, self.models.analysis_settings(),
                                                self.scan.brain_mask, self.backend)

        def plan(_on_progress: Any, _cancel: Any) -> Any:
            planned = model.plan_slices(run.volume, brain_mask=brain_mask, settings=settings)
            return planned, np.asarray(backend.analysis_brain(run.volume, brain_mask), dtype=bool)

        self._run = run
        self._update_busy()
        self.reporter.status.emit(text.STATUS_PLANNING)
        self.analysis_progress.emit(AnalysisProgress(0, n, int(self.state.cursor[axis]), 0.0, None, volume=True))
        self.runner.submit(VolumePlan(run), plan)

    def _next_chunk(self, run: VolumeRun) -> None:
        """Submit the planned slices nearest the cursor *now*; or end the run when the scan or settings changed."""
        if run.volume is not self.state.volume or run.key != self.results.key():
            self._run = None
            self.reporter.status.emit(text.STATUS_RUN_STOPPED)
            return
        chunk = run.next_chunk(int(self.state.cursor[run.axis]))
        last = not run.todo
        # The first chunk gets the user's mask as given (so the engine's input warnings come with it); later ones
        # the brain the engine computed from it, which is the same mask without recomputing the foreground each time.
        brain_mask = self.scan.brain_mask if run.chunks == 1 else run.brain
        base = self.cache.get(run.key)
        model, settings, fill = self.models.model, self.models.analysis_settings(), self.backend.fill_between_slices

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
        self.results.show_cached()
        self.reporter.status.emit(text.STATUS_CACHED_VOLUME)

    def _on_chunk(self, task: VolumeChunk, result: Any) -> None:
        run = task.run
        self.cache.put(run.key, result)
        if run.key == self.results.key() and run.volume is self.state.volume:
            self.state.set_result(result)
        if run is not self._run:  # cancelled while this chunk was finishing: keep what it brought, go no further
            return
        self.analysis_progress.emit(self._run_progress(run, run.fraction(0, 0.0), task.slices[0]))
        if task.last:
            self._run = None
            self.reporter.status.emit(text.STATUS_VOLUME_DONE.format(
                count=run.slices_with_map(result), analysed=len(run.plan), seconds=time.monotonic() - run.started))
            self.results.refresh_warnings()
        else:
            self._next_chunk(run)

    # ============================================================================================ busy, cancel, idle
    @property
    def busy(self) -> bool:
        """A job of the user's runs, or a whole-volume analysis is between two of its chunks (a worklist scan
        analysed in the background does not count: it gives way, see :meth:`_yield_background`)."""
        return (self.runner.busy and not is_background(self.runner.current)) or self._run is not None

    def _yield_background(self) -> bool:
        """Stop a background worklist scan so the user's request runs next; True if one was running (the request
        must then wait in the queue for the worker to come free)."""
        if self.runner.busy and is_background(self.runner.current):
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
        if is_background(job):  # its owner (app.worklist_analysis) takes the outcome
            self._after_job(job)
            return
        if isinstance(task, ModelLoad):
            self.models.loaded(result, seconds)
        elif isinstance(task, Analysis):
            merged = self.cache.add(task.key, result)
            if task.key == self.results.key() and task.volume is self.state.volume:
                self.state.set_result(merged)
            self.reporter.status.emit(text.STATUS_DONE.format(count=len(task.slices), seconds=seconds))
            self.results.refresh_warnings()
        elif isinstance(task, VolumePlan):
            if task.run is self._run:
                self._on_plan(task.run, result)
        elif isinstance(task, VolumeChunk):
            self._on_chunk(task, result)
        self._after_job(job)

    def _ended_early(self, job: Job) -> bool:
        """A job failed or was cancelled: a whole-volume run it belonged to ends. True for a background job, whose
        outcome its owner takes (then nothing else is to be done here)."""
        if is_background(job):
            self._after_job(job)
            return True
        if isinstance(job.task, (VolumePlan, VolumeChunk)):
            self._run = None
        return False

    def _on_job_failed(self, job: Job, error: Any) -> None:
        if self._ended_early(job):
            return
        if isinstance(job.task, ModelLoad):
            wanted_by_user = job.task.explicit or any(isinstance(p, AnalysisRequest) for p in self._pending)
            self._pending = deque(p for p in self._pending if not isinstance(p, AnalysisRequest))
            self.models.set_no_model(str(error), show=wanted_by_user)
        elif isinstance(error, self.backend.EngineError):
            self.reporter.report_error(text.ERR_ANALYSIS, str(error))
        else:
            self.reporter.report_unexpected(error)
        self._after_job(job)

    def _on_job_cancelled(self, job: Job) -> None:
        if self._ended_early(job):
            return
        if isinstance(job.task, ModelLoad):
            self.models.loading_cancelled()
        self.reporter.status.emit(text.STATUS_CANCELLED)
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
                self.load_model(self.models.model_path, explicit=request.explicit)
            else:
                self.request_analysis(request.mode)
            if self.runner.busy:
                return
        if (ran_analysis or not self._pending) and not is_background(job):
            self.analysis_done.emit()


def is_background(job: Job | None) -> bool:
    """A job that gives way to the user's (a task with ``background = True``, such as a worklist scan)."""
    return job is not None and bool(getattr(job.task, "background", False))

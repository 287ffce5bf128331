"""Long engine calls (model loading, analysis) off the GUI thread: a worker QObject living in one QThread.

The GUI thread submits a job (a callable taking ``on_progress`` and ``cancel``, and a typed *task* describing it); the
worker runs it in its thread and reports back through queued signals carrying plain Python / numpy objects. Widgets
are never touched from the worker.
Cancellation is cooperative: the job's ``engine.CancelToken`` is set and the engine stops at its next sampler step.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

logger = logging.getLogger(__name__)

JobFunction = Callable[[Callable[[Any], None], Any], Any]


@dataclass
class Job:
    """One unit of background work.

    Attributes:
        job_id: unique number, echoed in every signal about this job.
        task: what the job is and what the submitter needs back with its result (a frozen dataclass of the
            submitter's, e.g. ``app.model_session.ModelLoad``); receivers dispatch on its type.
        function: ``function(on_progress, cancel) -> result``.
        cancel: the ``engine.CancelToken`` handed to the function.
    """

    job_id: int
    task: Any
    function: JobFunction
    cancel: Any


class _Worker(QObject):
    """Runs jobs in its own thread; every signal carries the job."""

    progress = Signal(object, object)  # job, engine.Progress
    finished = Signal(object, object, float)  # job, result, seconds
    failed = Signal(object, object)  # job, exception
    cancelled = Signal(object)  # job

    def __init__(self, cancelled_type: type[BaseException],
                 expected_type: type[BaseException] | tuple[type[BaseException], ...] = ()) -> None:
        super().__init__()
        self._cancelled_type = cancelled_type
        self._expected_type = expected_type

    @Slot(object)
    def run(self, job: Job) -> None:
        start = time.monotonic()
        try:
            if job.cancel.cancelled:
                raise self._cancelled_type("cancelled before start")
            result = job.function(lambda p: self.progress.emit(job, p), job.cancel)
        except self._cancelled_type:
            self.cancelled.emit(job)
        except self._expected_type as error:  # a bad file or setting: one line is the whole story
            logger.info("background job %s failed: %s", type(job.task).__name__, error)
            self.failed.emit(job, error)
        except Exception as error:  # relayed to the GUI thread, which shows it
            logger.exception("background job %s failed", type(job.task).__name__)
            self.failed.emit(job, error)
        else:
            self.finished.emit(job, result, time.monotonic() - start)


class BackgroundRunner(QObject):
    """Owns the worker thread; runs one job at a time.

    Signals mirror the worker's and are delivered in the GUI thread. ``busy`` is True from ``submit`` until the job
    reports finished, failed or cancelled.
    """

    progress = Signal(object, object)
    finished = Signal(object, object, float)
    failed = Signal(object, object)
    cancelled = Signal(object)
    busy_changed = Signal(bool)
    _submit = Signal(object)

    def __init__(self, cancel_token_factory: Callable[[], Any], cancelled_type: type[BaseException],
                 parent: QObject | None = None,
                 expected_type: type[BaseException] | tuple[type[BaseException], ...] = ()) -> None:
        super().__init__(parent)
        self._token_factory = cancel_token_factory
        self._ids = itertools.count(1)
        self._current: Job | None = None
        self._thread = QThread()
        self._thread.setObjectName("condiff-worker")
        self._worker = _Worker(cancelled_type, expected_type)
        self._worker.moveToThread(self._thread)
        self._submit.connect(self._worker.run)
        self._worker.progress.connect(self._on_progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Job | None:
        return self._current

    def submit(self, task: Any, function: JobFunction) -> Job:
        """Start ``function`` for ``task`` in the worker thread; raises RuntimeError if a job is already running."""
        if self._current is not None:
            raise RuntimeError("a background job is already running")
        job = Job(next(self._ids), task, function, self._token_factory())
        self._current = job
        self.busy_changed.emit(True)
        self._submit.emit(job)
        return job

    def cancel(self) -> None:
        """Ask the running job to stop at its next step (no-op when idle)."""
        if self._current is not None:
            self._current.cancel.cancel()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel the running job, stop the thread and wait for it; True if it stopped in time."""
        self.cancel()
        self._thread.quit()
        stopped = bool(self._thread.wait(timeout_ms))
        if not stopped:
            logger.error("worker thread did not stop within %d ms", timeout_ms)
        return stopped

    def _done(self, job: Job) -> bool:
        if self._current is not job:
            return False
        self._current = None
        self.busy_changed.emit(False)
        return True

    @Slot(object, object)
    def _on_progress(self, job: Job, progress: Any) -> None:
        if job is self._current:
            self.progress.emit(job, progress)

    @Slot(object, object, float)
    def _on_finished(self, job: Job, result: Any, seconds: float) -> None:
        if self._done(job):
            self.finished.emit(job, result, seconds)

    @Slot(object, object)
    def _on_failed(self, job: Job, error: Any) -> None:
        if self._done(job):
            self.failed.emit(job, error)

    @Slot(object)
    def _on_cancelled(self, job: Job) -> None:
        if self._done(job):
            self.cancelled.emit(job)

"""Analysing a worklist's scans in the background while the user reads (no widgets).

When a worklist holds scans not analysed yet and the model is loaded and calibrated, the viewer analyses them one at
a time with the engine's one-scan cohort job (``infer_scan``: the analysis, the maps, mask, sidecar and findings on
the scan's own grid), the open scan first and then in list order. The user always comes first: an analysis or a
model load the user asks for stops the background scan at the engine's next step, and it starts again once the
viewer is idle. Each scan's outputs go to a folder of the viewer's cache for that worklist, so the scan opens from
them without running the model, and a worklist opened again later finds its finished scans up to date.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PySide6.QtCore import QObject, QTimer, Signal

from app.worklist import STATUS_ANALYSING, STATUS_NOT_ANALYSED, Worklist, WorklistEntry
from engine import one_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BackgroundScan:
    """The worker's task for one worklist scan; the controller lets such tasks give way to the user's."""

    background: ClassVar[bool] = True
    entry: WorklistEntry
    out_dir: Path


def results_folder(cache_root: Path, worklist_folder: Path) -> Path:
    """Where the viewer writes the outputs of a worklist's scans: one folder per worklist folder in the cache."""
    digest = hashlib.sha1(str(worklist_folder.resolve()).encode()).hexdigest()[:12]
    return cache_root / "worklists" / f"{worklist_folder.name}-{digest}"


class WorklistAnalyser(QObject):
    """Runs the worklist's scans not analysed yet through the controller's worker whenever it has nothing else to do.

    Args:
        worklist: the list whose entries it analyses and updates.
        controller: the :class:`app.controller.AnalysisController` (its ``models`` and ``scheduler``: model, settings,
            worker, idleness).
        cache_root: the viewer's cache folder (outputs go to :func:`results_folder` under it).
    """

    scan_analysed = Signal(int)  # the worklist row whose outputs were just written

    def __init__(self, worklist: Worklist, controller: Any, cache_root: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worklist = worklist
        self.controller = controller
        self.cache_root = Path(cache_root)
        self.enabled = True
        self._job: Any = None
        self._failed: set[Path] = set()  # scans of this list that failed: not retried until the list is opened again
        runner = controller.scheduler.runner
        runner.finished.connect(self._on_finished)
        runner.failed.connect(self._on_failed)
        runner.cancelled.connect(self._on_cancelled)
        runner.busy_changed.connect(lambda busy: busy or self.schedule())
        controller.models.model_ready.connect(self.schedule)
        worklist.loaded.connect(self._failed.clear)
        worklist.changed.connect(self.schedule)
        worklist.current_changed.connect(lambda _index: self.schedule())

    @property
    def running(self) -> bool:
        return self._job is not None

    def schedule(self) -> None:
        """Look for work once the controller has handled what it was doing (its queue runs first)."""
        QTimer.singleShot(0, self._start_next)

    def _next_entry(self) -> int | None:
        entries = self.worklist.entries
        current = self.worklist.current
        order = ([current] if current is not None else []) + list(range(len(entries)))
        for index in order:
            if 0 <= index < len(entries):
                entry = entries[index]
                if entry.status == STATUS_NOT_ANALYSED and entry.image not in self._failed:
                    return index
        return None

    def _start_next(self) -> None:
        c = self.controller
        if not self.enabled or self._job is not None or c.models.model is None or not c.scheduler.is_idle():
            return
        if self.worklist.folder is None:
            return
        index = self._next_entry()
        if index is None:
            return
        calibration = c.models.model.info.calibration
        if calibration is None:
            return  # no threshold to count the flagged volume at; the user can still analyse scans one by one
        entry = self.worklist.entries[index]
        task = BackgroundScan(entry, results_folder(self.cache_root, self.worklist.folder))
        model, settings, backend = c.models.model, c.models.analysis_settings(), c.backend
        threshold = float(calibration.threshold)

        def run(_on_progress: Any, cancel: Any) -> Any:
            summary, _findings = backend.infer_scan(model, entry.image, task.out_dir, settings, threshold=threshold,
                                                    brain_mask=entry.brain_mask, stem=entry.id, force=False,
                                                    cancel=cancel)
            return summary

        self.worklist.set_status(entry.image, STATUS_ANALYSING)
        self._job = c.scheduler.runner.submit(task, run)
        logger.info("worklist: analysing %s in the background", entry.id)

    def _mine(self, job: Any) -> bool:
        if job is not self._job:
            return False
        self._job = None
        return True

    def _on_finished(self, job: Any, summary: Any, seconds: float) -> None:
        if not self._mine(job):
            return
        sidecar = summary.files.get("sidecar")
        index = self.worklist.record(job.task.entry.image, float(summary.flagged_ml), int(summary.findings),
                                     Path(sidecar) if sidecar else None)
        logger.info("worklist: %s %s in %.1f s", summary.id, summary.status, seconds)
        if index is not None:
            self.scan_analysed.emit(index)
        self._finish_list()

    def _on_failed(self, job: Any, error: Any) -> None:
        if not self._mine(job):
            return
        image = job.task.entry.image
        self._failed.add(image)
        self.worklist.record_failure(image, one_line(error))
        self._finish_list()

    def _on_cancelled(self, job: Any) -> None:
        if self._mine(job):  # the user's work came first; the scan waits for its turn again
            self.worklist.set_status(job.task.entry.image, STATUS_NOT_ANALYSED)

    def _finish_list(self) -> None:
        """When the last scan has its result (or its failure), order the list by anomaly load: once, not while the
        rows still change under the user's eyes."""
        if not any(e.status in (STATUS_ANALYSING, STATUS_NOT_ANALYSED) for e in self.worklist.entries):
            self.worklist.sort()

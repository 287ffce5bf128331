"""The worklist: the scans of a folder or of a cohort's results, most worrying first (no widgets).

A folder of scans lists them as not analysed yet. A cohort output folder (``condiff-engine infer`` on many scans, with
its ``cohort.json``) lists each scan with its flagged volume and findings, sorted by anomaly load as the cohort table
is, and keeps where each result was written, so opening a scan shows its map without running the model again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

logger = logging.getLogger(__name__)

STATUS_NOT_ANALYSED = "not analysed"
STATUS_ANALYSED = "analysed"
STATUS_FAILED = "failed"
STATUS_ANALYSING = "analysing"


@dataclass(frozen=True)
class WorklistEntry:
    """One scan of the worklist.

    Attributes:
        id: the scan's id (a cohort's output stem, else the file name without extension).
        image: the scan.
        status: :data:`STATUS_NOT_ANALYSED`, :data:`STATUS_ANALYSED` or :data:`STATUS_FAILED`.
        flagged_ml / findings: what the analysis found (None before it).
        sidecar: the sidecar of the written results (None when there are none to open).
        brain_mask: the brain mask the analysis used (None: the scan's foreground).
        reason: why the cohort could not analyse it.
    """

    id: str
    image: Path
    status: str = STATUS_NOT_ANALYSED
    flagged_ml: float | None = None
    findings: int | None = None
    sidecar: Path | None = None
    brain_mask: Path | None = None
    reason: str = ""


def sort_key(entry: WorklistEntry) -> tuple[Any, ...]:
    """Anomaly load first (flagged volume), scans not analysed next, failures last; ties by id."""
    group = {STATUS_ANALYSED: 0, STATUS_NOT_ANALYSED: 1, STATUS_ANALYSING: 1, STATUS_FAILED: 2}[entry.status]
    return (group, -(entry.flagged_ml or 0.0), entry.id)


def entries_from(folder: Path, backend: Any) -> list[WorklistEntry]:
    """The worklist of ``folder``: a cohort's results when it holds ``cohort.json``, else the scans in it.

    Raises:
        the backend's EngineError: the folder cannot be read as either.
    """
    if (folder / "cohort.json").is_file():
        entries = []
        for summary in backend.read_cohort(folder):
            failed = summary.status == "failed"
            sidecar = summary.files.get("sidecar")
            entries.append(WorklistEntry(
                id=summary.id, image=Path(summary.image), status=STATUS_FAILED if failed else STATUS_ANALYSED,
                flagged_ml=None if failed else float(summary.flagged_ml), findings=None if failed else summary.findings,
                sidecar=folder / sidecar if sidecar and not failed else None, reason=summary.reason))
        return sorted(entries, key=sort_key)
    return sorted((WorklistEntry(item.id, Path(item.image), brain_mask=item.brain_mask)
                   for item in backend.collect_inputs([folder])), key=sort_key)


def is_worklist_folder(path: Path, backend: Any) -> bool:
    """A folder to list rather than open: a cohort's output folder, or a folder of scan files (a DICOM series folder
    is one scan)."""
    if not path.is_dir():
        return False
    if (path / "cohort.json").is_file():
        return True
    try:
        return any(Path(item.image) != path for item in backend.collect_inputs([path]))
    except backend.EngineError:
        return False


class Worklist(QObject):
    """The list and which entry is open; announces changes, opens nothing itself."""

    changed = Signal()
    loaded = Signal()  # a new list replaced the old one (emitted before ``changed``)
    current_changed = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.entries: list[WorklistEntry] = []
        self.folder: Path | None = None
        self.current: int | None = None

    def set_entries(self, folder: Path, entries: list[WorklistEntry]) -> None:
        self.folder, self.entries, self.current = folder, list(entries), None
        self.loaded.emit()
        self.changed.emit()

    def set_current(self, index: int) -> None:
        if 0 <= index < len(self.entries) and index != self.current:
            self.current = index
            self.current_changed.emit(index)

    def step(self, delta: int) -> int | None:
        """The entry ``delta`` rows from the open one (the first when none is open), or None past either end."""
        if not self.entries:
            return None
        index = 0 if self.current is None else self.current + delta
        return index if 0 <= index < len(self.entries) else None

    def _index_of(self, image: Path) -> int | None:
        return next((i for i, e in enumerate(self.entries) if e.image == Path(image)), None)

    def _replace(self, image: Path, **changes: Any) -> int | None:
        index = self._index_of(image)
        if index is not None:
            self.entries[index] = replace(self.entries[index], **changes)
            self.changed.emit()
        return index

    def set_status(self, image: Path, status: str) -> int | None:
        """Show a listed scan's state (e.g. being analysed); its row, or None when it is not listed."""
        return self._replace(image, status=status)

    def record(self, image: Path, flagged_ml: float, findings: int, sidecar: Path | None = None) -> int | None:
        """A listed scan was analysed: show what it found and where its outputs are (the order stays until
        :meth:`sort`); its row, or None when it is not listed."""
        return self._replace(image, status=STATUS_ANALYSED, flagged_ml=flagged_ml, findings=findings,
                             sidecar=sidecar, reason="")

    def record_failure(self, image: Path, reason: str) -> int | None:
        """A listed scan could not be analysed: say why (one line)."""
        return self._replace(image, status=STATUS_FAILED, reason=reason)

    def sort(self) -> bool:
        """Order the entries by anomaly load (:func:`sort_key`), keeping the open one open; True if the order
        changed."""
        ordered = sorted(self.entries, key=sort_key)
        if ordered == self.entries:
            return False
        open_entry = self.entries[self.current] if self.current is not None else None
        self.entries = ordered
        self.current = None if open_entry is None else ordered.index(open_entry)
        self.changed.emit()
        return True

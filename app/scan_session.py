"""The open scan's identity and the brain mask analysed with it (QtCore only, no widgets).

:class:`ScanSession` reads the scan and the mask through the engine, keeps what identifies them for the result cache
(:func:`file_key`), and the axis the engine analyses along. The pixels themselves live in :class:`ViewerState`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from app import slicing, text
from app.reporting import Reporter
from app.state import ViewerState


def file_key(path: Path) -> tuple[Any, ...]:
    """Identity of a file's content for the result cache: resolved path, modification time and size."""
    try:
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:  # unreadable metadata: a key that matches nothing cached
        return (str(path), time.time())


class ScanSession(QObject):
    """The open scan and its brain mask, as the analysis sees them.

    Args:
        backend: the engine's public API (``load_volume``, ``load_mask``, ``axial_axis``).
        state: the viewer state the scan is shown in.
        reporter: where errors and status lines go.
    """

    changed = Signal()  # another scan or brain mask: warnings and the shown result follow
    brain_mask_changed = Signal()

    def __init__(self, backend: Any, state: ViewerState, reporter: Reporter, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.state = state
        self.reporter = reporter
        self.key: Any = None  # file_key of the open scan
        self.brain_mask: np.ndarray | None = None
        self.brain_mask_path: Path | None = None
        self.brain_mask_key: Any = None
        self.analysis_axis: int | None = None

    def open_scan(self, path: str | Path) -> Any:
        """Read a scan and show it; returns the volume, or None after reporting why (the current scan stays)."""
        path = Path(path)
        volume = self.reporter.read(text.ERR_OPEN, path, self.backend.load_volume)
        if volume is None:
            return None
        if np.ndim(volume.data) != 3:
            self.reporter.report_error(text.ERR_OPEN, text.ERR_NOT_3D.format(path=path, shape=np.shape(volume.data)))
            return None
        self.key = file_key(path)
        self.analysis_axis = int(self.backend.axial_axis(volume.affine))
        self._set_brain_mask(None, None, None)  # a mask belongs to the scan it was opened for
        self.state.set_volume(volume)
        self.changed.emit()
        return volume

    def open_brain_mask(self, path: str | Path) -> bool:
        """Use a brain mask on the open scan's grid; on failure report why and keep the current one.

        Results computed without the mask (or with another one) stay cached under their own key.
        """
        volume = self.state.volume
        if volume is None:
            self.reporter.report_error(text.ERR_BRAIN_MASK, text.ERR_NO_SCAN)
            return False
        path = Path(path)
        mask = self.reporter.read(text.ERR_BRAIN_MASK, path,
                                  lambda p: np.asarray(self.backend.load_mask(p, volume), bool))
        if mask is None:
            return False
        if not mask.any():
            self.reporter.report_error(text.ERR_BRAIN_MASK, text.ERR_BRAIN_MASK_EMPTY.format(path=path))
            return False
        self._set_brain_mask(mask, path, file_key(path))
        self.changed.emit()
        voxels = int(mask.sum())
        litres = voxels * float(np.prod(slicing.voxel_sizes(volume.affine))) / 1e6
        self.reporter.status.emit(text.STATUS_BRAIN_MASK.format(name=path.name, voxels=voxels, litres=litres))
        return True

    def clear_brain_mask(self) -> None:
        """Analyse without a brain mask again (the scan is taken as skull-stripped)."""
        if self.brain_mask is None:
            return
        self._set_brain_mask(None, None, None)
        self.changed.emit()
        self.reporter.status.emit(text.STATUS_BRAIN_MASK_CLEARED)

    def _set_brain_mask(self, mask: np.ndarray | None, path: Path | None, key: Any) -> None:
        self.brain_mask, self.brain_mask_path, self.brain_mask_key = mask, path, key
        self.brain_mask_changed.emit()

"""FindingsModel: the findings of the shown result at the shown threshold, kept up to date (QtCore only).

The engine measures the findings (``engine.find_findings``: 3-D connected regions of the thresholded map on the
scan's own grid); this model asks it again whenever the result, the threshold or the minimum size changes (after a
short pause, so dragging the threshold slider does not measure at every step), announces the new list, and moves the
viewer's cursor to a finding when asked. The findings table in :mod:`app.views.findings_table` only draws what it
announces.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.state import ViewerState
from engine import DEFAULT_MIN_VOLUME_ML

logger = logging.getLogger(__name__)

REFRESH_DELAY_MS = 150


class FindingsModel(QObject):
    """The current ``engine.Findings`` (or None without a result).

    Args:
        backend: the engine API (``find_findings``).
        state: the viewer state whose result, volume and threshold it follows.
    """

    findings_changed = Signal(object)  # engine.Findings or None

    def __init__(self, backend: Any, state: ViewerState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.state = state
        self._findings: Any = None
        self._min_volume_ml = DEFAULT_MIN_VOLUME_ML
        self._stale = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        state.result_changed.connect(self._schedule)
        state.threshold_changed.connect(self._schedule)

    @property
    def min_volume_ml(self) -> float:
        """Regions smaller than this (mL) are not listed."""
        return self._min_volume_ml

    def set_min_volume_ml(self, value: float) -> None:
        value = max(0.0, float(value))
        if value != self._min_volume_ml:
            self._min_volume_ml = value
            self._schedule()

    @property
    def findings(self) -> Any:
        """The findings of the shown result and threshold (measured now if a change is still pending)."""
        if self._stale:
            self.refresh()
        return self._findings

    def _schedule(self, *_: Any) -> None:
        self._stale = True
        self._timer.start()

    def refresh(self) -> None:
        """Measure the findings now and announce them."""
        self._timer.stop()
        self._stale = False
        result, volume = self.state.result, self.state.volume
        findings = None
        if result is not None and volume is not None:
            findings = self.backend.find_findings(result, volume.affine, threshold=self.state.threshold,
                                                  min_volume_ml=self._min_volume_ml)
        self._findings = findings
        self.findings_changed.emit(findings)

    def go_to(self, finding_id: int) -> None:
        """Put the cursor on the finding's highest-scoring voxel (every plane then shows it)."""
        findings = self.findings
        if findings is None:
            return
        for finding in findings.items:
            if finding.id == finding_id:
                self.state.set_cursor(tuple(finding.peak_voxel))
                return
        logger.debug("no finding %s", finding_id)

"""AnalysisController: the viewer's link to the engine, without widgets (QtCore only).

It wires four parts and owns what they share:

* :class:`~app.scan_session.ScanSession` (``scan``): the open scan's identity and its brain mask;
* :class:`~app.model_session.ModelSession` (``models``): the model, its device, the settings and the calibration;
* :class:`~app.scheduler.AnalysisScheduler` (``scheduler``): the worker, the queue of requests, slice and
  whole-volume analyses;
* :class:`~app.exporter.Exports` (``exports``): the shown result written as files, a report or a DICOM SEG.

The controller itself is the viewer's :class:`~app.reporting.Reporter` (errors and status lines), holds the result
cache and its keys, decides which result is shown, and keeps the warnings about the scan, model and result. Results go
into :class:`ViewerState`; everything a person should read leaves through signals. The main window and the headless
renderer in :mod:`app.main` drive the same controller.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app import text
from app.exporter import Exports
from app.findings_model import FindingsModel
from app.model_session import ModelSession
from app.reporting import Reporter
from app.results_cache import ResultCache
from app.scan_session import ScanSession
from app.scheduler import AnalysisScheduler, ResultHooks
from app.state import ViewerState

logger = logging.getLogger(__name__)


class AnalysisController(Reporter):
    """The scan, model, scheduler and export parts of one viewer, the result cache and the warnings.

    Args:
        backend: the engine's public API (the ``engine`` module, or the tests' fake).
        state: the viewer state the results go into.
        model_path: model folder (None: ``backend.default_model_path()``).
    """

    warnings_changed = Signal(list)

    def __init__(self, backend: Any, state: ViewerState, model_path: str | Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(backend, parent)
        self.state = state
        self.cache = ResultCache()
        self.warnings: list[str] = []
        self._read_result: tuple[Any, Any] | None = None  # (scan key, result) read from a cohort's files
        self.findings = FindingsModel(backend, state, self)
        self.scan = ScanSession(backend, state, self, self)
        self.models = ModelSession(backend, state, self, model_path, self)
        self.scheduler = AnalysisScheduler(backend, state, self.cache, self, self.scan, self.models,
                                           ResultHooks(self.result_key, self.show_cached_result,
                                                       self.refresh_warnings), self)
        self.exports = Exports(backend, state, self, self.scan, self.models, self.findings)
        # Connected before any view's: what is shown is up to date when the views hear of a new scan or model.
        self.scan.changed.connect(self._on_input_changed)
        self.models.settings_changed.connect(self.show_cached_result)
        self.models.model_ready.connect(self._on_input_changed)
        state.result_changed.connect(self._on_result_changed)

    def result_key(self) -> Hashable | None:
        """Cache key of the result for the open scan, brain mask, model and settings (None without scan or model)."""
        model = self.models.model
        if model is None or self.scan.key is None:
            return None
        s = self.models.analysis_settings()
        # Keyed on the device the model runs on (results differ across devices by rounding), not on a setting.
        info = model.info
        return (self.scan.key, self.scan.brain_mask_key, info.model_id, info.runs_on, s.sampler, s.steps, s.seed)

    def show_result(self, result: Any) -> None:
        """Show a result read from files (a cohort's), at the threshold it was written with. It stays the open scan's
        result until the viewer analyses the scan itself (a model loading or a setting changing does not hide it);
        it is not cached, so an analysis asked for now runs with the viewer's own settings."""
        self._read_result = (self.scan.key, result)
        self.state.set_result(result)
        if result.threshold is not None:
            self.state.set_threshold(float(result.threshold))
        self.refresh_warnings()

    def show_cached_result(self) -> None:
        """Show the cached result for the open scan, mask, model and settings (or a cohort's result read for this
        scan, or none)."""
        key = self.result_key()
        cached = self.cache.get(key) if key is not None else None
        if cached is None and self._read_result is not None and self._read_result[0] == self.scan.key:
            cached = self._read_result[1]
        if cached is not self.state.result and self.state.volume is not None:
            self.state.set_result(cached)

    def _on_input_changed(self) -> None:
        self.refresh_warnings()
        self.show_cached_result()

    def _on_result_changed(self) -> None:
        self.models.scale_to_result(self.state.result)
        self.refresh_warnings()

    def refresh_warnings(self) -> None:
        """Recompute the warnings about the open scan, model and result, and announce them."""
        warnings: list[str] = []
        volume, model = self.state.volume, self.models.model
        # What the loader said about the file (a label image opened as a scan, sform/qform disagreeing, ...).
        warnings += [text.WARN_MODALITY.format(message=line) for line in getattr(volume, "warnings", ())]
        if volume is not None and model is not None:
            try:
                message = self.backend.modality_warning(volume, model.info.modality)
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

    def shutdown(self) -> None:
        """Stop the background work (queued requests dropped, the running job cancelled, the worker stopped)."""
        self.scheduler.shutdown()

"""The model the viewer analyses with: its folder, device, loading state, settings and calibration (QtCore only).

:class:`ModelSession` holds what the model is and how the user wants it run; it never runs a job itself. The
:class:`~app.scheduler.AnalysisScheduler` loads it in the background with :meth:`ModelSession.begin_load` and
:func:`model_loader`, and reports the outcome back (:meth:`ModelSession.loaded`, :meth:`ModelSession.set_no_model`).
Calibration policy lives here too: the model's threshold and colour scale, or a colour scale taken from the result for
an uncalibrated model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from app import text
from app.reporting import Reporter
from app.state import ViewerState

logger = logging.getLogger(__name__)

BASE_DEVICES = ("auto", "cpu")
"""Devices offered before the model has loaded: listing the real ones imports torch."""


@dataclass(frozen=True)
class ModelLoad:
    """The task of a job that loads a model folder on a device."""

    path: Path
    device: str
    explicit: bool  # asked for by the user (errors are shown) rather than loaded on the side


class ModelSession(QObject):
    """The model, its device and the analysis settings for one viewer.

    Args:
        backend: the engine's public API (``load_ensemble``, ``available_devices``, ``AnalysisSettings``, ...).
        state: the viewer state whose threshold and colour scale follow the calibration.
        reporter: where errors and status lines go.
        model_path: model folder (None: ``backend.default_model_path()``).
    """

    model_changed = Signal()  # model, loading state or model error changed
    model_ready = Signal()
    devices_changed = Signal(list)
    calibration_changed = Signal()
    settings_changed = Signal()

    def __init__(self, backend: Any, state: ViewerState, reporter: Reporter, model_path: str | Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.state = state
        self.reporter = reporter
        self.model: Any = None
        self.model_error: str | None = None
        self.model_loading = False
        self.model_path: Path | None = Path(model_path) if model_path is not None else None
        self.devices: list[str] = list(BASE_DEVICES)
        self.samplers: tuple[str, ...] = tuple(backend.SAMPLERS)  # the engine's one sampler registry
        self.sampler, self.steps, self.seed, self.device = "ddim", 0, 0, "auto"

    # ============================================================================================ settings
    def set_settings(self, *, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                     device: str | None = None) -> None:
        """Change the analysis settings (``settings_changed`` then shows the cached result for them, or none)."""
        new = (sampler if sampler is not None else self.sampler, int(steps) if steps is not None else self.steps,
               int(seed) if seed is not None else self.seed, device or self.device)
        if new != (self.sampler, self.steps, self.seed, self.device):
            self.sampler, self.steps, self.seed, self.device = new
            self.settings_changed.emit()

    def analysis_settings(self) -> Any:
        """The engine's ``AnalysisSettings`` for the current choices."""
        return self.backend.AnalysisSettings(sampler=self.sampler, steps=self.steps if self.steps > 0 else None,
                                             seed=self.seed)

    def wants_other_device(self) -> bool:
        """A model is loaded, but on another device than the one chosen since."""
        wanted = self.device or "auto"
        return self.model is not None and wanted != "auto" and self.model.info.device != wanted

    # ============================================================================================ loading
    def begin_load(self, path: str | Path | None, *, explicit: bool) -> ModelLoad | None:
        """The load task for ``path`` (default: the one given at start, else the bundled model); None after saying why
        there is no model to load (the folder is missing)."""
        path = path if path is not None else self.model_path
        if path is None:
            try:
                path = self.backend.default_model_path()
            except Exception as error:  # the engine part that knows the default may be missing
                self.set_no_model(str(error), show=explicit)
                return None
        self.model_path = Path(path)
        if not self.model_path.exists():
            self.set_no_model(text.ERR_MODEL_FOLDER_MISSING.format(path=self.model_path), show=explicit)
            return None
        return ModelLoad(self.model_path, self.device or "auto", explicit)

    def loading_started(self) -> None:
        self.model_loading = True
        self.model_changed.emit()
        self.reporter.status.emit(text.STATUS_MODEL_LOADING)

    def loaded(self, result: tuple[Any, list[str]], seconds: float) -> None:
        """The loader's outcome: the model and the devices it could have used."""
        self.model, devices = result
        logger.info("model %s loaded in %.1f s on %s", self.model.info.model_id, seconds, self.model.info.device)
        self.model_error = None
        self.model_loading = False
        self._set_devices(devices)
        self.model_changed.emit()
        self._apply_calibration()
        self.reporter.status.emit(self.describe_model().replace("\n", ", "))
        self.model_ready.emit()

    def loading_cancelled(self) -> None:
        self.model_loading = False
        self.model_changed.emit()

    def set_no_model(self, reason: str, *, show: bool) -> None:
        """No model: say why in the status line, and as an error when ``show``."""
        self.model = None
        self.model_error = reason
        self.model_loading = False
        self.model_changed.emit()
        self.reporter.status.emit(text.STATUS_NO_MODEL.format(reason=reason))
        if show:
            self.reporter.report_error(text.ERR_MODEL, reason)

    def describe_model(self) -> str:
        """The model's name, modality, members and device; or why there is none."""
        if self.model_loading:
            return text.STATUS_MODEL_LOADING
        if self.model is None:
            return text.MODEL_NONE if self.model_error is None else text.STATUS_NO_MODEL.format(reason=self.model_error)
        info = self.model.info
        return text.MODEL_SUMMARY.format(name=info.name, version=info.version, modality=info.modality.upper(),
                                         members=info.members, device=info.runs_on)

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

    def scale_to_result(self, result: Any) -> None:
        """For an uncalibrated model, scale the colours to ``result`` instead of the calibration."""
        if result is None or self.calibration is not None:
            return
        values = result.anomaly_map[result.anomaly_map > 0]
        if values.size:
            top = float(np.percentile(values, 99.9))
            if top > 0 and math.isfinite(top):
                self.state.set_display_max(top)


def model_loader(backend: Any, task: ModelLoad) -> Callable[[Any, Any], Any]:
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

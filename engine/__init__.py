"""condiff engine: image-conditioned diffusion anomaly detection for brain MRI (Baugh et al. 2024).

This module is the whole public API used by the viewer and by scripts: numpy arrays and frozen dataclasses in and out,
no Qt and no torch types. Names are imported lazily, so ``import engine`` stays cheap (torch loads only when a model
is used).

Typical use::

    import engine
    volume = engine.load_volume("scan.nii.gz")
    model = engine.load_ensemble(engine.default_model_path())
    result = model.analyse(volume, settings=engine.AnalysisSettings(sampler="ddim", steps=5, seed=0))
    engine.write_outputs(volume, result, "out/", threshold=model.info.calibration.threshold)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "EngineError": "engine.errors",
    "VolumeError": "engine.errors",
    "DataError": "engine.errors",
    "ModelLoadError": "engine.errors",
    "OutputError": "engine.errors",
    "Cancelled": "engine.errors",
    "one_line": "engine.errors",
    # progress
    "Progress": "engine.progress",
    "ProgressCallback": "engine.progress",
    "CancelToken": "engine.progress",
    # data types
    "AnalysisSettings": "engine.results",
    "AnomalyResult": "engine.results",
    "Calibration": "engine.results",
    "ModelInfo": "engine.results",
    "fill_between_slices": "engine.slice_fill",
    "flagged": "engine.results",
    "DEFAULT_MIN_VOLUME_ML": "engine.config",
    "SAMPLERS": "engine.samplers",
    "SamplerSpec": "engine.samplers",
    # volumes: the type, reading, writing
    "Volume": "engine.volumes",
    "same_grid": "engine.volumes",
    "load_volume": "engine.readers",
    "load_mask": "engine.readers",
    "save_like": "engine.writers",
    "axial_axis": "engine.preprocess",
    "analysis_brain": "engine.brain",
    # models and analysis
    "Ensemble": "engine.ensemble",
    "load_ensemble": "engine.ensemble",
    "default_model_path": "engine.ensemble",
    "available_devices": "engine.devices",
    "write_outputs": "engine.outputs",
    "output_paths": "engine.outputs",
    "modality_warning": "engine.outputs",
    "read_outputs": "engine.outputs",
    "file_stem": "engine.outputs",
    "collect_inputs": "engine.cohort",
    "read_cohort": "engine.cohort",
    "infer_scan": "engine.cohort",
    # findings
    "Finding": "engine.findings",
    "Findings": "engine.findings",
    "find_findings": "engine.findings",
    "findings_paths": "engine.findings",
    "format_findings": "engine.findings",
    "write_findings": "engine.findings",
    # DICOM SEG
    "dicom_seg_path": "engine.dicom_seg",
    "write_dicom_seg": "engine.dicom_seg",
    # the one-page PDF report
    "report_path": "engine.pdf_report",
    "write_report": "engine.pdf_report",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from engine.brain import analysis_brain
    from engine.cohort import collect_inputs, infer_scan, read_cohort
    from engine.config import DEFAULT_MIN_VOLUME_ML
    from engine.devices import available_devices
    from engine.dicom_seg import dicom_seg_path, write_dicom_seg
    from engine.ensemble import Ensemble, default_model_path, load_ensemble
    from engine.errors import Cancelled, DataError, EngineError, ModelLoadError, OutputError, VolumeError, one_line
    from engine.findings import Finding, Findings, find_findings, findings_paths, format_findings, write_findings
    from engine.outputs import file_stem, modality_warning, output_paths, read_outputs, write_outputs
    from engine.pdf_report import report_path, write_report
    from engine.preprocess import axial_axis
    from engine.progress import CancelToken, Progress, ProgressCallback
    from engine.readers import load_mask, load_volume
    from engine.results import AnalysisSettings, AnomalyResult, Calibration, ModelInfo, flagged
    from engine.samplers import SAMPLERS, SamplerSpec
    from engine.slice_fill import fill_between_slices
    from engine.volumes import Volume, same_grid
    from engine.writers import save_like

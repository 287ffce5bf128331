"""A fast, deterministic stand-in for the engine's public API, for the viewer's GUI tests.

:func:`make_backend` returns an object with the names the viewer uses from ``engine`` (errors, progress, result
types, ``load_volume``, ``load_mask``, ``axial_axis``, ``load_ensemble``, ``default_model_path``, ``available_devices``,
``write_outputs``, ``output_paths``, ``modality_warning``, ``analysis_brain``, ``fill_between_slices``). Data types and
errors are the real ones from ``engine``; scan loading uses the real ``engine.load_volume`` when it exists, else a
small nibabel reader here.
:class:`FakeEnsemble` has the ``Ensemble`` interface and a cheap analysis: the anomaly map is the smoothed absolute
difference between each axial slice and its median-filtered self, scaled to about [0, 0.3]; the "restored" image is
the median-filtered slice; member spread is a tenth of the map. Like the real ensemble, a whole-volume analysis
restores every ``slice_stride``-th slice with brain (default :data:`FAKE_STRIDE`) and the last, which
``plan_slices`` names, and fills the slices between with the real ``engine.fill_between_slices``; the brain is the
brain mask, or the voxels above zero (``analysis_brain``). ``tests/app/test_engine_contract.py`` checks that the fake
and the real engine keep the same contract.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

import engine
from engine.config import MapScoring
from engine.errors import Cancelled, EngineError, ModelLoadError, OutputError, VolumeError
from engine.progress import CancelToken, Progress
from engine.results import AnalysisSettings, AnomalyResult, Calibration, ModelInfo

FAKE_STRIDE = 2
"""Slice stride of the fake's whole-volume analysis when the settings name none."""
CALIBRATION = Calibration(threshold=0.1, healthy_fpr=0.01, display_max=0.3,
                          healthy_percentiles={"50": 0.02, "99": 0.1}, slice_score_percentiles={"99": 0.05},
                          scans=10)


def fake_info(device: str = "cpu", path: str = "fake-model") -> ModelInfo:
    """A ModelInfo for a 3-member T1 model calibrated with threshold 0.1 and display_max 0.3."""
    return ModelInfo(name="fake-t1", version="0.1", model_id="fake-t1-v0.1", modality="t1", preset="small",
                     members=3, folds=(0, 1, 2), device=device, expects_skull_stripped=True,
                     ssim_convention="paper", calibration=CALIBRATION, default_sampler="ddim", default_steps=5,
                     path=path)


# ------------------------------------------------------------------------------------------------ volumes
@dataclass(frozen=True, eq=False)
class FakeVolume:
    """Same fields as ``engine.Volume``."""

    data: np.ndarray
    affine: np.ndarray
    header: Any
    path: Path | None = None
    source_format: str = "nifti"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, ...]:
        return tuple(float(z) for z in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def axcodes(self) -> tuple[str, ...]:
        return tuple(nib.aff2axcodes(self.affine))


def _nibabel_load(path: str | Path) -> FakeVolume:
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:
        raise VolumeError(f"{path}: cannot be read ({type(error).__name__})") from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 2:
        raise VolumeError(f"{path}: shape {data.shape}, expected a 3-D volume")
    return FakeVolume(np.ascontiguousarray(data), np.asarray(image.affine, dtype=np.float64), image.header, path)


def load_volume(path: str | Path) -> Any:
    """The real ``engine.load_volume`` when it exists, else a nibabel reader with the same errors."""
    try:
        real = engine.load_volume
    except (AttributeError, ImportError):
        return _nibabel_load(path)
    return real(path)


def analysis_brain(volume: Any, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """The fake's brain: the brain mask when given, else the voxels above zero."""
    data = np.asarray(volume.data)
    if brain_mask is None:
        return data > 0
    mask = np.asarray(brain_mask, dtype=bool)
    if mask.shape != data.shape:
        raise VolumeError(f"brain mask shape {mask.shape} differs from the scan's {data.shape}")
    return mask


# ------------------------------------------------------------------------------------------------ ensemble
class FakeEnsemble:
    """The ``Ensemble`` interface with a cheap deterministic analysis.

    Args:
        info: what ``.info`` returns.
        delay_s: sleep per slice (to test progress and cancel).
        fail_with: an exception to raise from ``analyse``.
    """

    scoring = MapScoring()

    def __init__(self, info: ModelInfo, *, delay_s: float = 0.0, fail_with: BaseException | None = None) -> None:
        self.info = info
        self.delay_s = delay_s
        self.fail_with = fail_with
        self.calls: list[list[int]] = []
        self.brain_masks: list[np.ndarray | None] = []

    def steps_for(self, settings: AnalysisSettings) -> int:
        return settings.steps or self.info.default_steps

    def plan_slices(self, volume: Any, brain_mask: np.ndarray | None = None,
                    settings: AnalysisSettings | None = None) -> tuple[int, ...]:
        """Every stride-th slice with brain and the last one, ascending."""
        settings = settings if settings is not None else AnalysisSettings()
        axis = engine.axial_axis(volume.affine)
        brain = analysis_brain(volume, brain_mask)
        with_brain = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        if with_brain.size <= 2:
            return tuple(int(s) for s in with_brain)
        stride = settings.slice_stride or FAKE_STRIDE
        return tuple(sorted({int(s) for s in with_brain[::stride]} | {int(with_brain[-1])}))

    def analyse(self, volume: Any, *, settings: AnalysisSettings | None = None,
                slices: Sequence[int] | None = None, brain_mask: np.ndarray | None = None,
                on_progress: Callable[[Progress], None] | None = None,
                cancel: CancelToken | None = None) -> AnomalyResult:
        settings = settings if settings is not None else AnalysisSettings()
        if self.fail_with is not None:
            raise self.fail_with
        data = np.asarray(volume.data, dtype=np.float32)
        axis = engine.axial_axis(volume.affine)
        n = data.shape[axis]
        todo = list(self.plan_slices(volume, brain_mask, settings)) if slices is None else [int(s) for s in slices]
        if any(not 0 <= s < n for s in todo):
            raise VolumeError(f"slice index out of range 0..{n - 1}")
        self.calls.append(todo)
        self.brain_masks.append(brain_mask)
        if brain_mask is not None and np.shape(brain_mask) != data.shape:
            raise VolumeError(f"brain mask shape {np.shape(brain_mask)} differs from the scan's {data.shape}")
        amap = np.zeros(data.shape, np.float32)
        restored = data.copy()
        scores = np.full(n, np.nan, np.float32)
        analysed = np.zeros(n, bool)
        positive = data[data > 0]
        scale = float(np.percentile(positive, 99)) if positive.size else 1.0
        start = time.monotonic()
        for done, s in enumerate(todo):
            if cancel is not None:
                cancel.raise_if_cancelled()
            cut = np.take(data, s, axis=axis)
            healthy = ndimage.median_filter(cut, size=5)
            brain = cut > 0 if brain_mask is None else np.take(np.asarray(brain_mask, bool), s, axis=axis)
            diff = ndimage.gaussian_filter(np.abs(cut - healthy) / scale, 1.0) * 2.0
            m = np.clip(diff, 0, 0.3).astype(np.float32) * brain
            index = [slice(None)] * 3
            index[axis] = s
            amap[tuple(index)] = m
            restored[tuple(index)] = healthy
            scores[s] = float(m.mean())
            analysed[s] = True
            if self.delay_s:
                time.sleep(self.delay_s)
            if on_progress is not None:
                on_progress(Progress(done + 1, len(todo), "fake", time.monotonic() - start))
        result = AnomalyResult(anomaly_map=amap, member_spread=(amap * 0.1).astype(np.float32), restored=restored,
                               slice_scores=scores, analysed=analysed, covered=analysed.copy(), slice_axis=axis,
                               seed=settings.seed, sampler=settings.sampler, steps=settings.steps or 5,
                               model_id=self.info.model_id, threshold=CALIBRATION.threshold)
        if slices is None:
            result = engine.fill_between_slices(result, analysis_brain(volume, brain_mask))
        return result


# ------------------------------------------------------------------------------------------------ outputs
def _stem(volume: Any) -> str:
    name = Path(volume.path).name if volume.path is not None else "scan"
    return re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.mha)$", "", name)


def output_paths(volume: Any, out_dir: str | Path, stem: str | None = None) -> dict[str, Path]:
    """The names :func:`write_outputs` uses."""
    stem = stem or _stem(volume)
    out = Path(out_dir)
    return {"mask": out / f"{stem}_desc-anomaly_mask.nii.gz", "map": out / f"{stem}_desc-anomalyscore_map.nii.gz",
            "restored": out / f"{stem}_desc-pseudohealthy_T1w.nii.gz",
            "spread": out / f"{stem}_desc-memberspread_map.nii.gz",
            "sidecar": out / f"{stem}_desc-anomaly_mask.json"}


def write_outputs(volume: Any, result: AnomalyResult, out_dir: str | Path, *, threshold: float,
                  stem: str | None = None,
                  include: Sequence[str] = ("mask", "map", "restored", "spread", "sidecar"),
                  extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Minimal writer: NIfTI files on the scan's grid with its affine, and a JSON sidecar."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{out}: cannot create folder ({error.strerror})") from error
    paths = output_paths(volume, out, stem)
    arrays = {"mask": (result.anomaly_map >= threshold).astype(np.uint8), "map": result.anomaly_map,
              "restored": result.restored, "spread": result.member_spread}
    written: dict[str, Path] = {}
    for name in include:
        path = paths[name]
        if volume.path is not None and path.resolve() == Path(volume.path).resolve():
            raise OutputError(f"{path}: would overwrite the scan")
        if name == "sidecar":
            path.write_text(json.dumps({"threshold": threshold, "model": result.model_id, **(extra or {})}))
        else:
            image = nib.Nifti1Image(arrays[name], volume.affine)
            if name == "mask":
                image.set_data_dtype(np.uint8)
            nib.save(image, str(path))
        written[name] = path
    return written


def modality_warning(volume: Any, expected_modality: str) -> str | None:
    """Warn when the file name names another contrast than the model's."""
    name = Path(volume.path).name.lower() if volume.path is not None else ""
    for other in ("flair", "t2", "pd", "dwi"):
        if re.search(rf"(^|[_\-.]){other}([_\-.]|$)", name) and other != expected_modality.lower():
            return f"file name says {other.upper()} but the model is {expected_modality.upper()}"
    return None


def make_backend(tmp_model_dir: Path, *, delay_s: float = 0.0, fail_with: BaseException | None = None,
                 model_error: str | None = None, devices: Sequence[str] = ("auto", "cpu")) -> SimpleNamespace:
    """An engine-API object whose ``load_ensemble`` returns a :class:`FakeEnsemble`.

    Args:
        tmp_model_dir: an existing folder that stands for the default model.
        delay_s / fail_with: passed to the ensemble.
        model_error: make ``load_ensemble`` raise ``ModelLoadError`` with this message.
        devices: what ``available_devices`` reports.
    """
    backend = SimpleNamespace(
        EngineError=EngineError, VolumeError=VolumeError, ModelLoadError=ModelLoadError, OutputError=OutputError,
        Cancelled=Cancelled, CancelToken=CancelToken, Progress=Progress, AnalysisSettings=AnalysisSettings,
        AnomalyResult=AnomalyResult, Calibration=Calibration, ModelInfo=ModelInfo,
        load_volume=load_volume, load_mask=engine.load_mask, axial_axis=engine.axial_axis,
        analysis_brain=analysis_brain,
        fill_between_slices=engine.fill_between_slices, find_findings=engine.find_findings,
        write_findings=engine.write_findings, findings_paths=engine.findings_paths,
        write_dicom_seg=engine.write_dicom_seg, write_report=engine.write_report, report_path=engine.report_path,
        default_model_path=lambda: Path(tmp_model_dir),
        available_devices=lambda: list(devices), write_outputs=write_outputs, output_paths=output_paths,
        modality_warning=modality_warning, SAMPLERS=engine.SAMPLERS, __version__="test",
        collect_inputs=engine.collect_inputs, read_cohort=engine.read_cohort, read_outputs=engine.read_outputs,
        infer_scan=engine.infer_scan,
    )
    backend.ensembles = []

    def load_ensemble(path: str | Path, *, device: str = "auto") -> FakeEnsemble:
        if model_error is not None:
            raise ModelLoadError(f"{path}: {model_error}")
        if not Path(path).is_dir():
            raise ModelLoadError(f"{path}: model folder not found")
        ensemble = FakeEnsemble(fake_info("cpu" if device == "auto" else device, str(path)), delay_s=delay_s,
                                fail_with=fail_with)
        backend.ensembles.append(ensemble)
        return ensemble

    backend.load_ensemble = load_ensemble
    return backend

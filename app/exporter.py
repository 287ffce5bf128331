"""The viewer's export layer: the shown result written to disk as files, a report or a DICOM SEG (no widgets).

:func:`export` plans the BIDS-like names, refuses to write over the scan, asks (through a callback) before replacing
existing files, writes, and reloads the mask to confirm it sits on the scan's grid. :class:`Exports` is what the
window calls: it takes the shown scan, result, findings, brain mask and study from the viewer's parts and reports each
outcome as one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from app import study, text
from app.findings_model import FindingsModel
from app.model_session import ModelSession
from app.reporting import Reporter
from app.scan_session import ScanSession
from app.state import ViewerState
from engine import flagged, same_grid


class ExportProblem(Exception):
    """Nothing (or something wrong) was written; the message is the one line to show."""


def export(backend: Any, volume: Any, result: Any, out_dir: Path, *, threshold: float, brain_mask_path: Path | None,
           confirm_overwrite: Callable[[int, Path], bool], findings: Any = None) -> dict[str, Path] | None:
    """Write mask, map, restored volume, spread, sidecar and findings to ``out_dir`` and verify the mask's grid.

    Args:
        backend: the engine API (``output_paths``, ``write_outputs``, ``findings_paths``, ``write_findings``,
            ``EngineError``).
        confirm_overwrite: called with the number of existing outputs and the folder; False cancels.
        findings: the ``engine.Findings`` at ``threshold``, written beside the mask (None: not written).

    Returns:
        The written paths, or None when the user declined to replace existing files.

    Raises:
        ExportProblem: the export was refused or failed.
    """
    try:
        planned = dict(backend.output_paths(volume, out_dir))
        if findings is not None:
            planned.update({f"findings_{k}": p for k, p in backend.findings_paths(volume, out_dir).items()})
        if volume.path is not None and any(Path(p).resolve() == Path(volume.path).resolve()
                                           for p in planned.values()):
            raise ExportProblem(text.ERR_OVERWRITE_SCAN.format(path=volume.path))
        existing = [p for p in planned.values() if Path(p).exists()]
        if existing and not confirm_overwrite(len(existing), out_dir):
            return None
        written = backend.write_outputs(volume, result, out_dir, threshold=threshold, extra={
            "BrainMask": str(brain_mask_path) if brain_mask_path is not None else None})
        if findings is not None:
            extra = {"Model": result.model_id, "Sampler": result.sampler, "SamplerSteps": result.steps,
                     "Seed": result.seed}
            for kind, path in backend.write_findings(findings, volume, out_dir, extra=extra).items():
                written[f"findings_{kind}"] = path
    except backend.EngineError as error:
        raise ExportProblem(str(error)) from error
    except OSError as error:
        raise ExportProblem(text.ERR_WRITE.format(path=out_dir, message=error.strerror or error)) from error
    problem = verify_on_grid(written.get("mask"), volume)
    if problem is not None:
        raise ExportProblem(problem)
    return written


def verify_on_grid(mask_path: str | Path | None, volume: Any) -> str | None:
    """Reload an exported mask with nibabel and compare its grid with the scan's.

    Returns:
        None if shape and affine match (and the mask is uint8), else a one-line description of the problem.
    """
    if mask_path is None:
        return None
    mask_path = Path(mask_path)
    try:
        image = nib.load(str(mask_path))
        shape = tuple(image.shape)
        affine = np.asarray(image.affine)
        dtype = image.get_data_dtype()
    except Exception as error:  # any failure to read back is a failed export
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_UNREADABLE.format(error=error))
    expected = tuple(np.shape(volume.data))
    if shape != expected:
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_SHAPE.format(shape=shape, expected=expected))
    if not same_grid(shape, affine, expected, volume.affine):
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_AFFINE)
    if dtype != np.uint8:
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_DTYPE.format(dtype=dtype))
    return None


def partial_note(result: Any) -> str:
    """An extra status sentence when only some slices were analysed (the rest export as zero), else ''."""
    analysed = np.asarray(result.analysed, dtype=bool)
    if analysed.all():
        return ""
    return "  " + text.PARTIAL_EXPORT.format(done=int(analysed.sum()), total=analysed.size)


class Exports:
    """Export, report and DICOM SEG of the shown result, each ending in a status line or one reported error.

    Args:
        backend: the engine's public API (its writers).
        state: what is shown (scan, result, threshold, study sequences, reference).
        reporter: where errors and status lines go.
        scan: the brain mask the result was analysed with (named in the outputs).
        models: the model the report names.
        findings: the findings at the shown threshold.
    """

    def __init__(self, backend: Any, state: ViewerState, reporter: Reporter, scan: ScanSession, models: ModelSession,
                 findings: FindingsModel) -> None:
        self.backend, self.state, self.reporter = backend, state, reporter
        self.scan, self.models, self.findings = scan, models, findings
        self._reference_scores: tuple[Any, Any] | None = None  # (result, reference, threshold) -> volume scores

    def _shown(self, title: str) -> tuple[Any, Any] | None:
        """The shown scan and result, or None after reporting which is missing."""
        volume, result = self.state.volume, self.state.result
        if volume is None or result is None:
            self.reporter.report_error(title, text.ERR_NO_RESULT if volume is not None else text.ERR_NO_SCAN)
            return None
        return volume, result

    def export(self, folder: str | Path | None,
               confirm_overwrite: Callable[[int, Path], bool]) -> dict[str, Path] | None:
        """Write the shown result (beside the scan when ``folder`` is None); None after reporting why not."""
        shown = self._shown(text.ERR_EXPORT)
        if shown is None:
            return None
        volume, result = shown
        out_dir = Path(folder) if folder is not None else (Path(volume.path).parent if volume.path else Path.cwd())
        try:
            written = export(self.backend, volume, result, out_dir, threshold=self.state.threshold,
                             brain_mask_path=self.scan.brain_mask_path, confirm_overwrite=confirm_overwrite,
                             findings=self.findings.findings)
        except ExportProblem as problem:
            self.reporter.report_error(text.ERR_EXPORT, str(problem))
            return None
        if written is not None:
            self.reporter.status.emit(text.STATUS_EXPORTED.format(count=len(written), folder=out_dir)
                                      + partial_note(result))
        return written

    def reference_volume_scores(self) -> Any:
        """The shown mask against the reference segmentation over the whole volume (``app.study.ReferenceScores``),
        or None without both; computed once per result, reference and threshold, not per slice."""
        reference, result = self.state.reference, self.state.result
        if reference is None or result is None:
            return None
        key = (id(result), id(reference), self.state.threshold)
        if self._reference_scores is None or self._reference_scores[0] != key:
            mask = flagged(result.anomaly_map, self.state.threshold) & (result.anomaly_map > 0)
            self._reference_scores = (key, study.reference_scores(mask, reference.data))
        return self._reference_scores[1]

    def _report_study(self) -> dict[str, Any]:
        """The study's parts of the report: the sequence under the map, the reference and its agreement."""
        options: dict[str, Any] = {}
        shown = self.state.sequences.get(self.state.sequence)
        if shown is not None:  # the report draws what the user reads under the map
            options["underlay"] = (text.REPORT_SEQUENCE.format(name=shown.name, file=shown.path.name), shown.data)
        reference, scores = self.state.reference, self.reference_volume_scores()
        if reference is not None and scores is not None:
            options["reference"] = (reference.path.name, reference.data)
            options["notes"] = [(text.REPORT_REFERENCE_LABEL, text.REPORT_REFERENCE.format(
                file=reference.path.name, threshold=self.state.threshold, dice=text.share(scores.dice),
                sensitivity=text.share(scores.sensitivity), precision=text.share(scores.precision)))]
        return options

    def save_report(self, folder: str | Path | None) -> Path | None:
        """Write the one-page PDF report of the shown result (beside the scan when ``folder`` is None); None after
        reporting why not."""
        shown = self._shown(text.ERR_REPORT)
        if shown is None:
            return None
        volume, result = shown
        model, mask_path = self.models.model, self.scan.brain_mask_path
        try:
            path = self.backend.write_report(
                volume, result, self.findings.findings, self.backend.report_path(volume, folder),
                model=model.info if model is not None else None, display_max=self.state.display_max,
                brain_mask=mask_path.name if mask_path is not None else None, **self._report_study())
        except self.backend.EngineError as error:
            self.reporter.report_error(text.ERR_REPORT, str(error))
            return None
        self.reporter.status.emit(text.STATUS_REPORT.format(path=path))
        return Path(path)

    def export_dicom_seg(self, folder: str | Path | None) -> Path | None:
        """Write the findings as a DICOM SEG referencing the source series (beside the series folder when ``folder``
        is None); None after reporting why not (e.g. the scan was not read from a DICOM series)."""
        shown = self._shown(text.ERR_EXPORT)
        if shown is None:
            return None
        volume, result = shown
        if getattr(volume, "source_format", "") != "dicom":
            self.reporter.report_error(text.ERR_EXPORT, text.ERR_NOT_DICOM.format(name=Path(volume.path or "").name,
                                                                                 kind=volume.source_format))
            return None
        try:
            path = self.backend.write_dicom_seg(volume, self.findings.findings, folder, model_id=result.model_id)
        except self.backend.EngineError as error:
            self.reporter.report_error(text.ERR_EXPORT, str(error))
            return None
        self.reporter.status.emit(text.STATUS_DICOM_SEG.format(path=path, count=len(self.findings.findings.items)))
        return Path(path)

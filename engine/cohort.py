"""``infer`` on one scan or on a whole cohort: analyse, write every output on the scan's own grid, and keep a table.

:func:`infer_scan` is one scan's job (the analysis, the maps, mask and sidecar, the findings, and on request the
report and a DICOM SEG). :func:`run_cohort` runs it over many scans with three promises:

* **resumable and idempotent**: a scan whose outputs are all there and whose sidecar names the same model, members,
  sampler, steps, seed, stride, comparison, threshold, source and brain mask is not analysed again (``force`` redoes
  it). A scan counts as done only when its findings JSON exists, which is written after everything but the report
  and SEG (and those too are checked when asked for); every file is written atomically, so a run killed at any point
  leaves whole files only and its rerun finishes what is missing.
* **one bad scan does not stop the cohort**: its failure becomes a row of ``failures.tsv`` (id, path, the one-line
  reason) and the rest go on.
* **a table to work from**: ``cohort.tsv`` and ``cohort.json``, one row per scan, sorted by anomaly load (flagged
  volume, then maximum score), rewritten after every scan.

Under ``torchrun`` the CLI shards the scans over the ranks (rank r takes every world-size-th scan from r), each rank
a GPU or a CPU process with its own copy of the ensemble; a scan's result depends on its seed and slices only, never
on the rank. Rank 0 then gathers every rank's summaries and writes the tables.

Inputs (:func:`collect_inputs`): scan files, DICOM series folders, folders of scan files, CSV manifests with an
``image`` column and optional ``brain_mask`` and ``id`` columns (relative paths are taken from the manifest's folder),
or one BIDS dataset (:mod:`engine.bids`). Outputs are flat, ``<id>_desc-...``, in one folder; a BIDS dataset's go to
each scan's own ``sub-*/[ses-*/]anat/`` folder of a derivatives dataset.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DEFAULT_MIN_VOLUME_ML
from engine.errors import DataError, EngineError, OutputError, one_line
from engine.outputs import file_stem, output_paths, scan_stem, write_outputs
from engine.readers import load_mask, load_volume
from engine.results import AnalysisSettings, flagged
from engine.volumes import SCAN_SUFFIXES
from engine.writers import atomic_write_bytes, atomic_write_json

logger = logging.getLogger("engine.cohort")

__all__ = ["CohortItem", "CohortResult", "ScanSummary", "collect_inputs", "infer_scan", "open_scan", "read_cohort",
           "read_cohort_settings", "run_cohort"]

COHORT_FILES = ("cohort.tsv", "cohort.json", "failures.tsv")
"""The cohort's own files in the output folder."""
_NOT_SCANS = ("mask", "seg", "lesion", "label", "desc-")
"""File names holding one of these are masks, labels or outputs, not scans to analyse, when a folder is listed."""
_TABLE_COLUMNS = ("id", "status", "brain_ml", "flagged_ml", "findings", "largest_finding_ml", "max_score",
                  "highest_slice_score", "seconds", "image")


@dataclass(frozen=True)
class CohortItem:
    """One scan of a cohort: its id (the stem of its outputs), image, optional brain mask, and the folder under the
    output folder its outputs go to (empty: the output folder itself; ``sub-01/anat`` for a BIDS scan)."""

    id: str
    image: Path
    brain_mask: Path | None = None
    out_subdir: str = ""


@dataclass(frozen=True)
class ScanSummary:
    """What ``infer`` found on one scan (a row of ``cohort.tsv``).

    Attributes:
        id: the scan's id.
        status: ``"done"`` (analysed now), ``"up to date"`` (outputs kept from an earlier run) or ``"failed"``.
        image: the scan's path.
        brain_ml: volume of the brain the analysis used.
        flagged_ml: volume at or above the threshold.
        findings: findings listed (at least the minimum volume).
        largest_finding_ml: the largest finding's volume (0 when none).
        max_score: the map's maximum.
        highest_slice_score: the highest slice score of the analysed slices.
        seconds: time spent on the scan now (0 for an up-to-date scan).
        reason: why it failed (one line), else empty.
        files: the written files by kind.
    """

    id: str
    status: str
    image: str
    brain_ml: float = 0.0
    flagged_ml: float = 0.0
    findings: int = 0
    largest_finding_ml: float = 0.0
    max_score: float = 0.0
    highest_slice_score: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The table row (no file list)."""
        return {k: v for k, v in asdict(self).items() if k in _TABLE_COLUMNS}


@dataclass(frozen=True)
class CohortResult:
    """Every scan's summary, in the table's order (anomaly load first, failures last), and the settings the cohort
    ran with (model, members, sampler, steps, seed, threshold; as in ``cohort.json``)."""

    scans: tuple[ScanSummary, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[ScanSummary, ...]:
        return tuple(s for s in self.scans if s.status == "failed")


# ------------------------------------------------------------------------------------------------------- inputs
def _is_scan_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(SCAN_SUFFIXES) and not any(tag in name for tag in _NOT_SCANS)


def _manifest(path: Path) -> list[CohortItem]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a CSV manifest ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "image" not in reader.fieldnames:
        raise DataError(f"{path}: a manifest needs an 'image' column (optional: brain_mask, id)")
    items = []
    for line, row in enumerate(reader, start=2):
        image = (row.get("image") or "").strip()
        if not image:
            raise DataError(f"{path}: line {line} has no image")
        image_path = (path.parent / image) if not Path(image).is_absolute() else Path(image)
        mask = (row.get("brain_mask") or "").strip()
        mask_path = ((path.parent / mask) if not Path(mask).is_absolute() else Path(mask)) if mask else None
        items.append(CohortItem((row.get("id") or "").strip() or file_stem(image_path), image_path, mask_path))
    return items


def collect_inputs(paths: Sequence[str | Path], *, bids_suffix: str = "T1w",
                   bids_masks: str | Path | None = None) -> list[CohortItem]:
    """The scans named by ``paths``: scan files, DICOM series folders, folders of scan files (masks, labels and
    condiff outputs left out) and CSV manifests (``image``, optional ``brain_mask`` and ``id``), in that order; or,
    when the only path is a BIDS dataset, its ``bids_suffix`` scans with brain masks from the derivatives folder
    ``bids_masks`` (see :func:`engine.bids.find_scans`).

    Raises:
        DataError: a path does not exist, a manifest is malformed, two scans would share an id (and so outputs), a
            BIDS dataset comes with other inputs, or ``bids_masks`` is given without a BIDS dataset.
    """
    from engine import bids  # noqa: PLC0415

    dataset = bids.single_dataset(paths)
    if dataset is not None:
        return bids.find_scans(dataset, suffix=bids_suffix, masks=bids_masks)
    if bids_masks is not None:
        raise DataError(f"{bids_masks}: brain masks from a derivatives folder need a BIDS dataset as the input")
    items: list[CohortItem] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix.lower() == ".csv":
            items += _manifest(path)
        elif path.is_dir():
            scans = sorted(p for p in path.iterdir() if _is_scan_file(p))
            # A folder without scan files is taken as one DICOM series (the reader says if it is not).
            items += [CohortItem(file_stem(p), p) for p in scans] if scans else [CohortItem(path.name, path)]
        else:
            items.append(CohortItem(file_stem(path), path))
    seen: dict[str, Path] = {}
    for item in items:
        if item.id in seen:
            raise DataError(f"{item.image}: has the id {item.id!r} of {seen[item.id]}; their outputs would collide "
                            "(give ids in a manifest)")
        seen[item.id] = item.image
    return items


# ---------------------------------------------------------------------------------------------------- one scan
def _recorded_settings(ensemble: Any, settings: AnalysisSettings, threshold: float, image: Path,
                       brain_mask: Path | None) -> dict[str, Any]:
    """What a kept output must have been made with to count as up to date (stored in the sidecar)."""
    scoring = settings.scoring or ensemble.scoring
    return {"Model": ensemble.info.model_id, "Members": [int(f) for f in ensemble.info.folds],
            "Sampler": settings.sampler, "SamplerSteps": int(ensemble.steps_for(settings)), "Seed": int(settings.seed),
            "SliceStride": settings.slice_stride, "Scoring": asdict(scoring), "Threshold": float(threshold),
            "Sources": [str(image)], "BrainMask": str(brain_mask) if brain_mask else None}


def _paths(image_stem_volume: Any, out_dir: Path, stem: str, report: bool, dicom_seg: bool) -> dict[str, Path]:
    from engine.findings import findings_paths  # noqa: PLC0415

    paths = output_paths(image_stem_volume, out_dir, stem)
    paths.update({f"findings_{k}": v for k, v in findings_paths(image_stem_volume, out_dir, stem).items()})
    if report:
        from engine.pdf_report import report_path  # noqa: PLC0415

        paths["report"] = report_path(image_stem_volume, out_dir, stem)
    if dicom_seg:
        from engine.dicom_seg import dicom_seg_path  # noqa: PLC0415

        paths["dicom_seg"] = dicom_seg_path(image_stem_volume, out_dir, stem)
    return paths


def open_scan(image: str | Path, brain_mask: str | Path | None = None, *,
              dicom_seg: bool = False) -> tuple[Any, np.ndarray | None]:
    """Read a scan and its brain mask, checking what the outputs asked for need (a DICOM SEG needs DICOM input).

    Raises:
        EngineError: the scan or the mask cannot be read, or does not fit (one line naming the file).
    """
    volume = load_volume(image)
    if dicom_seg and volume.source_format != "dicom":
        raise OutputError(f"{image}: --dicom-seg needs a DICOM series folder as input; this scan is a "
                          f"{volume.source_format} file")
    return volume, (load_mask(brain_mask, volume) if brain_mask is not None else None)


def _up_to_date(paths: dict[str, Path], recorded: dict[str, Any]) -> ScanSummary | None:
    """The kept summary when every output is there and the sidecar was made with ``recorded``, else None."""
    if not all(p.exists() for p in paths.values()):
        return None
    try:
        import json  # noqa: PLC0415

        side = json.loads(paths["sidecar"].read_text())
    except (OSError, ValueError):
        return None
    if any(side.get(k) != v for k, v in recorded.items()) or not isinstance(side.get("Summary"), dict):
        return None
    kept = {k: v for k, v in side["Summary"].items() if k in ScanSummary.__dataclass_fields__}
    return ScanSummary(**{**kept, "status": "up to date", "seconds": 0.0,
                          "files": {k: str(p) for k, p in paths.items()}})


def infer_scan(
    ensemble: Any,
    image: str | Path,
    out_dir: str | Path,
    settings: AnalysisSettings,
    *,
    threshold: float,
    threshold_source: str = "model calibration",
    brain_mask: str | Path | None = None,
    stem: str | None = None,
    min_finding_ml: float = DEFAULT_MIN_VOLUME_ML,
    report: bool = False,
    dicom_seg: bool = False,
    force: bool = True,
    on_progress: Callable[[Any], None] | None = None,
    cancel: Any = None,
    opened: tuple[Any, np.ndarray | None] | None = None,
) -> tuple[ScanSummary, Any]:
    """Analyse one scan and write its outputs (mask, maps, restoration, sidecar, findings; report and DICOM SEG on
    request) on the scan's own grid into ``out_dir``, named ``<stem>_desc-...`` (default stem: the scan's).

    ``opened`` is the scan and mask as :func:`open_scan` gave them, when the caller read them already (to fail on a
    bad file before loading a model). With ``force`` False, a scan whose outputs are all there and were made with
    the same model and settings is left as it is and its kept summary returned. ``cancel`` (an
    :class:`engine.CancelToken`) stops the analysis at its next step with :class:`engine.Cancelled`; nothing of the
    scan is written then.

    Returns:
        The scan's summary and its :class:`engine.Findings` (None when the kept outputs were used).

    Raises:
        EngineError: the scan, the mask or the outputs cannot be read or written (one line naming the file).
    """
    from engine.findings import find_findings, write_findings  # noqa: PLC0415
    from engine.outputs import modality_warning  # noqa: PLC0415

    image, out_dir = Path(image), Path(out_dir)
    mask_path = Path(brain_mask) if brain_mask is not None else None
    recorded = _recorded_settings(ensemble, settings, threshold, image, mask_path)
    if not force:
        import nibabel as nib  # noqa: PLC0415

        from engine.volumes import Volume  # noqa: PLC0415

        # The output names come from the stem alone; a stand-in volume names them without reading the scan.
        stand_in = Volume(data=np.zeros((1, 1, 1), np.float32), affine=np.eye(4), header=nib.Nifti1Header(),
                          path=image)
        kept = _up_to_date(_paths(stand_in, out_dir, stem or file_stem(image), report, dicom_seg), recorded)
        if kept is not None:
            return kept, None
    start = time.monotonic()
    volume, mask = opened if opened is not None else open_scan(image, mask_path, dicom_seg=dicom_seg)
    warning = modality_warning(volume, ensemble.info.modality)
    if warning:
        logger.warning(warning)
    result = ensemble.analyse(volume, settings=settings, brain_mask=mask, on_progress=on_progress, cancel=cancel)
    for line in result.warnings:
        if line not in volume.warnings:  # the reader logged its own already
            logger.warning(line)
    calibration = ensemble.info.calibration
    units = calibration.units if calibration else "1 - SSIM (ensemble mean)"
    findings = find_findings(result, volume.affine, threshold=threshold, min_volume_ml=min_finding_ml)
    from engine.brain import analysis_brain  # noqa: PLC0415

    voxel_ml = float(np.prod(volume.zooms)) / 1000.0
    scores = result.slice_scores[np.isfinite(result.slice_scores)]
    summary = ScanSummary(
        id=stem or scan_stem(volume), status="done", image=str(image.resolve()),
        brain_ml=round(float(analysis_brain(volume, mask).sum()) * voxel_ml, 2),
        flagged_ml=round(float(flagged(result.anomaly_map, threshold).sum()) * voxel_ml, 3),
        findings=len(findings.items),
        largest_finding_ml=round(max((f.volume_ml for f in findings.items), default=0.0), 3),
        max_score=round(float(result.anomaly_map.max()), 4),
        highest_slice_score=round(float(scores.max()) if scores.size else 0.0, 4))
    paths = write_outputs(volume, result, out_dir, threshold=threshold, units=units, stem=stem, extra={
        **recorded, "ThresholdSource": threshold_source, "Device": ensemble.info.device,
        "Runtime": ensemble.info.runtime,
        "Seconds": round(time.monotonic() - start, 2), "InputWarnings": list(volume.warnings),
        "Summary": summary.row()})
    for kind, path in write_findings(findings, volume, out_dir, stem=stem, extra={
            "Model": result.model_id, "Sampler": result.sampler, "SamplerSteps": result.steps, "Seed": result.seed,
            "ThresholdUnits": units}).items():
        paths[f"findings_{kind}"] = path
    if dicom_seg:
        from engine.dicom_seg import write_dicom_seg  # noqa: PLC0415

        paths["dicom_seg"] = write_dicom_seg(volume, findings, out_dir, model_id=result.model_id, stem=stem)
    if report:
        from engine.pdf_report import report_path, write_report  # noqa: PLC0415

        paths["report"] = write_report(volume, result, findings, report_path(volume, out_dir, stem),
                                       model=ensemble.info, brain_mask=mask_path.name if mask_path else None)
    seconds = round(time.monotonic() - start, 2)
    return ScanSummary(**{**asdict(summary), "seconds": seconds, "files": {k: str(p) for k, p in paths.items()}}), \
        findings


# ------------------------------------------------------------------------------------------------------ cohort
def _order(rows: Sequence[ScanSummary]) -> list[ScanSummary]:
    """Anomaly load first (flagged volume, then maximum score), failures last, ties by id."""
    return sorted(rows, key=lambda s: (s.status == "failed", -s.flagged_ml, -s.max_score, s.id))


def _tsv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), delimiter="\t", lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _write_tables(out_dir: Path, summaries: Sequence[ScanSummary], settings: dict[str, Any]) -> None:
    ordered = _order(summaries)
    atomic_write_bytes(out_dir / "cohort.tsv", _tsv([s.row() for s in ordered], _TABLE_COLUMNS))
    # File names relative to the folder, so the folder can move (the viewer opens results from it).
    rows = [{**asdict(s), "files": {k: Path(os.path.relpath(v, out_dir)).as_posix() for k, v in s.files.items()}}
            for s in ordered]
    atomic_write_json(out_dir / "cohort.json", {"settings": settings, "scans": rows})
    failures = [{"id": s.id, "path": s.image, "reason": s.reason} for s in ordered if s.status == "failed"]
    atomic_write_bytes(out_dir / "failures.tsv", _tsv(failures, ("id", "path", "reason")))


def run_cohort(
    ensemble: Any,
    items: Sequence[CohortItem],
    out_dir: str | Path,
    settings: AnalysisSettings,
    *,
    threshold: float,
    threshold_source: str = "model calibration",
    min_finding_ml: float = DEFAULT_MIN_VOLUME_ML,
    report: bool = False,
    dicom_seg: bool = False,
    force: bool = False,
    tables: bool = True,
    known: Mapping[str, ScanSummary] | None = None,
    on_scan: Callable[[int, int, ScanSummary], None] | None = None,
) -> CohortResult:
    """Run :func:`infer_scan` on every item, skipping those already up to date (unless ``force``), recording
    failures instead of stopping, and rewriting ``cohort.tsv`` / ``cohort.json`` / ``failures.tsv`` after each scan.

    Args:
        tables: write the cohort's tables (a rank of a sharded run leaves them to the rank that gathers).
        known: summaries of scans another process of this run handled (by id): taken as they are.
        on_scan: called after each scan with (index, count, summary).
    """
    out_dir = Path(out_dir)
    table_settings = {"model": ensemble.info.model_id, "members": [int(f) for f in ensemble.info.folds],
                      "sampler": settings.sampler, "steps": int(ensemble.steps_for(settings)), "seed": settings.seed,
                      "threshold": float(threshold), "threshold_source": threshold_source,
                      "min_finding_ml": min_finding_ml}
    summaries: list[ScanSummary] = []
    for index, item in enumerate(items):
        if known is not None and item.id in known:
            summaries.append(known[item.id])
            if tables:
                _write_tables(out_dir, summaries, table_settings)
            continue
        try:
            summary, _ = infer_scan(ensemble, item.image, out_dir / item.out_subdir, settings, threshold=threshold,
                                    threshold_source=threshold_source, brain_mask=item.brain_mask, stem=item.id,
                                    min_finding_ml=min_finding_ml, report=report, dicom_seg=dicom_seg, force=force)
        except EngineError as exc:
            reason = one_line(exc)
            logger.warning("%s: failed: %s", item.id, reason)
            summary = ScanSummary(id=item.id, status="failed", image=str(item.image.resolve()), reason=reason)
        summaries.append(summary)
        if tables:
            _write_tables(out_dir, summaries, table_settings)
        if on_scan is not None:
            on_scan(index, len(items), summary)
    return CohortResult(tuple(_order(summaries)), table_settings)


def _cohort_json(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    import json  # noqa: PLC0415

    path = Path(folder) / "cohort.json"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not an object")
        return path, data
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a condiff cohort table ({type(exc).__name__}: {exc})") from exc


def read_cohort_settings(folder: str | Path) -> dict[str, Any]:
    """The settings a cohort output folder was made with (model, members, sampler, steps, seed, threshold).

    Raises:
        DataError: the folder holds no readable cohort.json with its settings.
    """
    path, data = _cohort_json(folder)
    settings = data.get("settings")
    wanted = ("model", "members", "sampler", "steps", "seed", "threshold")
    if not isinstance(settings, dict) or any(k not in settings for k in wanted):
        raise DataError(f"{path}: not a condiff cohort table (its settings lack {', '.join(wanted)})")
    return settings


def read_cohort(folder: str | Path) -> list[ScanSummary]:
    """The scans of a cohort output folder (its ``cohort.json``), in the table's order.

    Raises:
        DataError: the folder holds no readable cohort.json.
    """
    path, data = _cohort_json(folder)
    try:
        rows = data["scans"]
        return [ScanSummary(**{k: v for k, v in row.items() if k in ScanSummary.__dataclass_fields__})
                for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a condiff cohort table ({type(exc).__name__}: {exc})") from exc

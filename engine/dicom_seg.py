"""DICOM Segmentation export of findings, for a scan that was read from a DICOM series.

A hospital's PACS and viewers (OHIF, 3D Slicer, Horos) take DICOM SEG, not NIfTI. :func:`write_dicom_seg` writes the
findings of an analysis (one segment per finding, numbered in rank order; see :mod:`engine.findings`) as a binary
DICOM Segmentation object with highdicom: it references the source series (study, patient, frame of reference and,
per frame, the source image it segments), and its frames lie on the source images' own planes. After writing, the
file is read back and every segment voxel is checked to sit at the patient position of the scan voxel it came from
(:func:`verify_dicom_seg`); a file that fails is removed.

The source images are found again in the scan's folder with pydicom (the series whose images lie on the volume's
slices); highdicom and pydicom are imported only when a SEG is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import OutputError
from engine.findings import Findings
from engine.outputs import output_paths
from engine.volumes import LPS_TO_RAS, Volume

logger = logging.getLogger(__name__)

INDEX_TOLERANCE = 0.05
"""How far (in voxels) a source image's pixel may sit from a voxel centre of the scan and still be that voxel."""
POSITION_TOLERANCE_MM = 1e-3
"""How far a read-back segment frame may sit from its source image's position (mm)."""
SEG_SERIES_NUMBER = 901


@dataclass(frozen=True)
class _Frame:
    """One source image and where its pixels fall in the scan's voxel grid."""

    dataset: Any  # pydicom Dataset (pixel data not loaded)
    origin: np.ndarray  # int (3,): voxel index of pixel (row 0, column 0)
    column_step: np.ndarray  # int (3,): voxel index change for one column to the right
    row_step: np.ndarray  # int (3,): voxel index change for one row down


def dicom_seg_path(volume: Volume, out_dir: str | Path | None = None, stem: str | None = None) -> Path:
    """Where :func:`write_dicom_seg` writes: ``<stem>_desc-anomaly_seg.dcm`` beside the mask."""
    mask = output_paths(volume, out_dir, stem)["mask"]
    return mask.with_name(mask.name[: -len("_mask.nii.gz")] + "_seg.dcm")


def write_dicom_seg(volume: Volume, findings: Findings, out_dir: str | Path | None = None, *, model_id: str,
                    stem: str | None = None) -> Path:
    """Write the findings as a DICOM SEG that references the scan's source series, and verify it.

    Args:
        volume: the scan, read from a DICOM series folder (``volume.source_format == "dicom"``).
        findings: what :func:`engine.find_findings` returned for this scan (its ``labels`` are on the scan's grid).
        out_dir: output folder; None writes beside the series folder.
        model_id: the model that made the findings (named in the SEG's algorithm identification).
        stem: base name instead of the series folder's.

    Returns:
        The written file.

    Raises:
        OutputError: the scan is not from a DICOM series, its source images cannot be found again, the folder cannot
            be written, or the file read back does not put every segment voxel where the scan has it.
    """
    if volume.source_format != "dicom" or volume.path is None:
        raise OutputError(f"{volume.name}: a DICOM SEG needs a scan read from a DICOM series folder; this one was "
                          f"read from a {volume.source_format} file")
    labels = np.asarray(findings.labels)
    if labels.shape != volume.shape:
        raise OutputError(f"{volume.name}: the findings do not belong to this scan (shape {labels.shape} vs "
                          f"{volume.shape})")
    import highdicom as hd  # noqa: PLC0415 - only needed here
    from pydicom.sr.codedict import codes  # noqa: PLC0415

    from engine import __version__  # noqa: PLC0415

    frames = _source_frames(volume)
    pixels = np.stack([_frame_values(labels, f, volume) for f in frames]).astype(np.uint16)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="condiff", version=__version__, family=codes.cid7162.ArtificialIntelligence,
        parameters={"model": model_id, "threshold": f"{findings.threshold:.6g}",
                    "min_volume_ml": f"{findings.min_volume_ml:g}"})
    numbers = [f.id for f in findings.items] or [1]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Finding {number}" if findings.items else "No finding above threshold",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number in numbers
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=[f.dataset for f in frames], pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="condiff", manufacturer_model_name=model_id,
            software_versions=__version__, device_serial_number="none",
            series_description="condiff anomaly findings (research use only)",
            content_description="Anomaly findings, research software, not a medical device",
            content_label="FINDINGS", omit_empty_frames=bool(findings.items),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(f"{volume.name}: cannot build a DICOM SEG from this series ({exc})") from exc
    path = dicom_seg_path(volume, out_dir, stem)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        seg.save_as(partial)
        partial.replace(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        verify_dicom_seg(path, volume, labels)
    except OutputError:
        path.unlink(missing_ok=True)
        raise
    return path


def verify_dicom_seg(path: str | Path, volume: Volume, labels: np.ndarray) -> None:
    """Read a SEG back and check it against the scan and the label array it was made from.

    Every frame must lie at its referenced source image's position and orientation, and every segment pixel must map
    (through the frame's position, orientation and pixel spacing, and the scan's affine) onto a voxel centre of the
    scan whose label is that segment's number; each segment must hold exactly as many voxels as its label.

    Raises:
        OutputError: the file cannot be read or a check fails (the message names the first problem).
    """
    import pydicom  # noqa: PLC0415

    path = Path(path)
    try:
        seg = pydicom.dcmread(path)
        masks = np.asarray(seg.pixel_array).reshape(-1, int(seg.Rows), int(seg.Columns)).astype(bool)
    except Exception as exc:  # pydicom raises many kinds for a bad file
        raise OutputError(f"{path}: cannot read the DICOM SEG back ({exc})") from exc
    sources = {str(f.dataset.SOPInstanceUID): f.dataset for f in _source_frames(volume)}
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    spacing = np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=np.float64)
    to_voxel = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64)) @ LPS_TO_RAS
    labels = np.asarray(labels)
    counts: dict[int, int] = {}
    for frame, groups in zip(masks, seg.PerFrameFunctionalGroupsSequence, strict=True):
        rows, columns = np.nonzero(frame)
        if rows.size == 0:  # an empty frame (a SEG without findings) maps no voxel
            continue
        identification = groups if "SegmentIdentificationSequence" in groups else shared  # shared by one segment
        segment = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = np.asarray(groups.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        source_uid = str(groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = sources.get(source_uid)
        if source is None:
            raise OutputError(f"{path}: a frame references image {source_uid}, which is not in the source series")
        if (np.abs(np.asarray(source.ImagePositionPatient, np.float64) - position).max() > POSITION_TOLERANCE_MM
                or np.abs(np.asarray(source.ImageOrientationPatient, np.float64) - orientation).max() > 1e-4):
            raise OutputError(f"{path}: a frame does not lie on its source image's plane")
        lps = (position[:, None] + orientation[:3, None] * (columns * spacing[1])
               + orientation[3:, None] * (rows * spacing[0]))
        index = (to_voxel @ np.vstack([lps, np.ones(rows.size)]))[:3]
        nearest = np.rint(index)
        if np.abs(index - nearest).max() > INDEX_TOLERANCE:
            raise OutputError(f"{path}: segment {segment} has pixels between the scan's voxel centres")
        voxel = nearest.astype(int)
        inside = ((voxel >= 0) & (voxel < np.asarray(labels.shape)[:, None])).all(axis=0)
        if not inside.all() or not (labels[tuple(voxel)] == segment).all():
            raise OutputError(f"{path}: segment {segment} covers scan voxels outside its finding")
        counts[segment] = counts.get(segment, 0) + rows.size
    expected = {int(v): int(n) for v, n in zip(*np.unique(labels[labels > 0], return_counts=True), strict=True)}
    if counts != expected:
        raise OutputError(f"{path}: segment voxel counts {counts} differ from the findings' {expected}")


def _source_frames(volume: Volume) -> list[_Frame]:
    """The source images of ``volume`` (read again from its folder), in slice order, with their voxel mapping."""
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    folder = Path(str(volume.path))
    series: dict[str, list[Any]] = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "PixelSpacing" in ds:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    to_voxel = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64)) @ LPS_TO_RAS
    problems = []
    for uid, datasets in sorted(series.items(), key=lambda item: -len(item[1])):
        try:
            frames = [_map_frame(ds, to_voxel, volume.shape) for ds in datasets]
        except ValueError as exc:
            problems.append(str(exc))
            continue
        slice_axis = _fixed_axis(frames[0])
        frames.sort(key=lambda f: int(f.origin[slice_axis]))
        covered = sorted(int(f.origin[slice_axis]) for f in frames)
        if covered == list(range(volume.shape[slice_axis])):
            return frames
        problems.append(f"series {uid} covers {len(covered)} of the scan's {volume.shape[slice_axis]} slices")
    detail = f" ({problems[0]})" if problems else ""
    raise OutputError(f"{folder}: cannot find the source images of the scan again{detail}")


def _map_frame(ds: Any, to_voxel: np.ndarray, shape: tuple[int, int, int]) -> _Frame:
    """Where one source image's pixels fall in the scan's voxel grid (whole voxels, or ValueError)."""
    position = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    corners = np.array([position, position + orientation[:3] * column_spacing,
                        position + orientation[3:] * row_spacing])
    index = (to_voxel @ np.vstack([corners.T, np.ones(3)]))[:3].T
    exact = (index[0], index[1] - index[0], index[2] - index[0])  # origin, column step, row step
    rounded = [np.rint(v) for v in exact]
    if max(np.abs(v - r).max() for v, r in zip(exact, rounded, strict=True)) > INDEX_TOLERANCE:
        raise ValueError("its images do not lie on the scan's voxel grid")
    steps = [np.abs(r) for r in rounded[1:]]
    if any(s.sum() != 1 for s in steps) or np.argmax(steps[0]) == np.argmax(steps[1]):
        raise ValueError("its image axes do not follow the scan's array axes")
    frame = _Frame(ds, rounded[0].astype(int), rounded[1].astype(int), rounded[2].astype(int))
    last = frame.origin + frame.column_step * (int(ds.Columns) - 1) + frame.row_step * (int(ds.Rows) - 1)
    if (np.minimum(frame.origin, last) < 0).any() or (np.maximum(frame.origin, last) >= np.asarray(shape)).any():
        raise ValueError("its images reach outside the scan")
    return frame


def _fixed_axis(frame: _Frame) -> int:
    """The scan axis a source image does not move along (its slice axis)."""
    moving = np.abs(frame.column_step) + np.abs(frame.row_step)
    return int(np.flatnonzero(moving == 0)[0])


def _frame_values(labels: np.ndarray, frame: _Frame, volume: Volume) -> np.ndarray:
    """The label values under one source image's pixels, as a (rows, columns) array."""
    rows, columns = int(frame.dataset.Rows), int(frame.dataset.Columns)
    a = np.arange(rows)[:, None, None]
    b = np.arange(columns)[None, :, None]
    index = frame.origin + b * frame.column_step + a * frame.row_step  # (rows, columns, 3)
    return labels[index[..., 0], index[..., 1], index[..., 2]]

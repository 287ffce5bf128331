"""DICOM SEG export (engine.dicom_seg) on real DICOM series made from the bundled MS sample.

The series are written with pydicom from a block of ``resources/samples/patient07_T1.nii.gz`` (an axial one and an
oblique one, tilted 20 degrees), read back through the engine's DICOM reader, and given findings placed in the NIfTI's
own voxels; the SEG's segment pixels must then sit at exactly those voxels' patient positions.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import engine
from engine.dicom_seg import dicom_seg_path, verify_dicom_seg, write_dicom_seg
from tests.conftest import REPO_ROOT
from tests.dicom_factory import write_series

SAMPLE = REPO_ROOT / "resources" / "samples" / "patient07_T1.nii.gz"
BLOCK = (slice(50, 130), slice(60, 170), slice(70, 100))  # 80 x 110 x 30 voxels around the lesions
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _tilt(affine: np.ndarray, degrees: float) -> np.ndarray:
    """``affine`` rotated about the anterior (y) axis through its origin."""
    t = np.radians(degrees)
    rotation = np.eye(4)
    rotation[[0, 0, 2, 2], [0, 2, 0, 2]] = np.cos(t), np.sin(t), -np.sin(t), np.cos(t)
    return rotation @ affine


@pytest.fixture(scope="module", params=["axial", "oblique"])
def series(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A DICOM series folder, the NIfTI block it was made from (data, affine) and the volume the engine reads."""
    image = nib.load(SAMPLE)
    data = np.asarray(image.dataobj, dtype=np.float32)[BLOCK]
    affine = image.affine.copy()
    affine[:3, 3] = (image.affine @ [BLOCK[0].start, BLOCK[1].start, BLOCK[2].start, 1.0])[:3]
    if request.param == "oblique":
        affine = _tilt(affine, 20.0)
    folder = tmp_path_factory.mktemp(request.param) / f"series-{request.param}"
    write_series(data, affine, folder)
    return {"folder": folder, "data": data, "affine": affine, "volume": engine.load_volume(folder)}


def _blobs(shape: tuple[int, ...]) -> np.ndarray:
    """Two boxes on the NIfTI block's grid: the first scoring 0.6, the second 0.9."""
    amap = np.zeros(shape, np.float32)
    amap[20:30, 40:52, 8:14] = 0.6
    amap[60:64, 90:100, 20:23] = 0.9
    return amap


def _on_volume_grid(amap_block: np.ndarray, block_affine: np.ndarray, volume: engine.Volume) -> np.ndarray:
    """Move a map from the NIfTI block's voxels to the DICOM volume's voxels through world coordinates."""
    out = np.zeros(volume.shape, np.float32)
    idx = np.argwhere(amap_block > 0)
    ras = block_affine @ np.c_[idx, np.ones(len(idx))].T
    target = np.rint(np.linalg.inv(volume.affine) @ ras)[:3].astype(int)
    out[tuple(target)] = amap_block[tuple(idx.T)]
    return out


def _result(amap: np.ndarray) -> engine.AnomalyResult:
    n = amap.shape[2]
    return engine.AnomalyResult(anomaly_map=amap, member_spread=amap * 0.1, restored=np.zeros_like(amap),
                                slice_scores=np.zeros(n, np.float32), analysed=np.ones(n, bool),
                                covered=np.ones(n, bool), slice_axis=2, seed=0, sampler="ddim", steps=5,
                                model_id="test-v1")


def _segment_positions(path: Path) -> dict[int, set[tuple[float, float, float]]]:
    """RAS positions (mm, rounded to 0.01) of every segment pixel, read with pydicom only."""
    seg = pydicom.dcmread(path)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = np.asarray(seg.pixel_array).reshape(-1, int(seg.Rows), int(seg.Columns))
    positions: dict[int, set[tuple[float, float, float]]] = {}
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        where = groups if "SegmentIdentificationSequence" in groups else shared  # one segment: shared
        number = int(where.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        origin = np.asarray(groups.PlanePositionSequence[0].ImagePositionPatient, float)
        for row, column in np.argwhere(frame > 0):
            lps = origin + orientation[:3] * column * column_spacing + orientation[3:] * row * row_spacing
            ras = _LPS_TO_RAS[:3, :3] @ lps
            positions.setdefault(number, set()).add(tuple(np.round(ras, 2)))
    return positions


def test_the_engine_reads_the_series_where_the_nifti_lies(series: dict) -> None:
    volume, data, affine = series["volume"], series["data"], series["affine"]
    assert volume.source_format == "dicom"
    assert sorted(volume.shape) == sorted(data.shape)
    corner = np.linalg.inv(volume.affine) @ affine @ [0.0, 0.0, 0.0, 1.0]  # the block's first voxel
    assert np.abs(corner[:3] - np.rint(corner[:3])).max() < 1e-3


def test_seg_segments_sit_at_the_findings_patient_positions(series: dict, tmp_path: Path) -> None:
    volume, affine = series["volume"], series["affine"]
    block_map = _blobs(series["data"].shape)
    findings = engine.find_findings(_result(_on_volume_grid(block_map, affine, volume)), volume.affine,
                                    threshold=0.5, min_volume_ml=0.0)
    assert [f.voxels for f in findings.items] == [720, 120]
    path = write_dicom_seg(volume, findings, tmp_path, model_id="test-v1")
    assert path == dicom_seg_path(volume, tmp_path)
    assert path.name == f"{series['folder'].name}_desc-anomaly_seg.dcm"
    # independent of the engine's reading: SEG pixel positions against the NIfTI block's own voxels
    expected = {}
    for number, value in ((1, 0.6), (2, 0.9)):
        idx = np.argwhere(block_map == value)
        ras = (affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T
        expected[number] = {tuple(p) for p in np.round(ras, 2)}
    assert _segment_positions(path) == expected
    # it references the source series, study, patient and frame of reference
    seg = pydicom.dcmread(path)
    source = pydicom.dcmread(next(series["folder"].iterdir()), stop_before_pixels=True)
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Finding 1", "Finding 2"]
    assert "research" in seg.SeriesDescription


def test_a_seg_that_does_not_match_the_findings_is_refused(series: dict, tmp_path: Path) -> None:
    volume = series["volume"]
    findings = engine.find_findings(_result(_on_volume_grid(_blobs(series["data"].shape), series["affine"], volume)),
                                    volume.affine, threshold=0.5, min_volume_ml=0.0)
    path = write_dicom_seg(volume, findings, tmp_path, model_id="test-v1")
    moved = np.roll(findings.labels, 1, axis=0)
    with pytest.raises(engine.OutputError, match="segment 1 covers scan voxels outside its finding"):
        verify_dicom_seg(path, volume, moved)
    smaller = findings.labels.copy()
    smaller[smaller == 2] = 0
    with pytest.raises(engine.OutputError, match="segment 2"):
        verify_dicom_seg(path, volume, smaller)


def test_a_single_finding_round_trips(series: dict, tmp_path: Path) -> None:
    volume = series["volume"]
    block_map = _blobs(series["data"].shape)
    block_map[block_map < 0.9] = 0
    findings = engine.find_findings(_result(_on_volume_grid(block_map, series["affine"], volume)), volume.affine,
                                    threshold=0.5, min_volume_ml=0.0)
    assert len(findings.items) == 1
    path = write_dicom_seg(volume, findings, tmp_path, model_id="test-v1")
    assert len(_segment_positions(path)[1]) == 120


def test_no_findings_give_one_empty_segment(series: dict, tmp_path: Path) -> None:
    volume = series["volume"]
    findings = engine.find_findings(_result(np.zeros(volume.shape, np.float32)), volume.affine, threshold=0.5)
    path = write_dicom_seg(volume, findings, tmp_path, model_id="test-v1")
    seg = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["No finding above threshold"]
    assert not np.asarray(seg.pixel_array).any()


def test_a_scan_not_from_dicom_gets_one_line(tmp_path: Path) -> None:
    volume = engine.load_volume(SAMPLE)
    findings = engine.find_findings(_result(np.zeros(volume.shape, np.float32)), volume.affine, threshold=0.5)
    with pytest.raises(engine.OutputError, match="needs a scan read from a DICOM series folder") as error:
        write_dicom_seg(volume, findings, tmp_path, model_id="test-v1")
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())

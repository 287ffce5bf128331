"""Make a real DICOM MR series from a NIfTI volume, for tests of reading DICOM and writing DICOM SEG.

Each slice along the array's third axis becomes one MR Image Storage file: its columns run along the first array
axis, its rows along the second, and Image Position / Orientation (Patient) and Pixel Spacing come from the NIfTI
affine (RAS+ turned into DICOM's LPS+), so the series lies exactly where the NIfTI does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def write_series(data: np.ndarray, affine: np.ndarray, folder: Path, *, patient_id: str = "CONDIFF-TEST",
                 series_description: str = "T1 test series") -> list[Path]:
    """Write ``data`` (i, j, k) with its RAS+ ``affine`` as one DICOM file per k-slice into ``folder``.

    Intensities are stored as int16 after rounding (the data should be in that range).

    Returns:
        The written files, in k order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(affine, dtype=np.float64)
    column_step = _RAS_TO_LPS @ affine[:3, 0]  # moving one column = one step along array axis i
    row_step = _RAS_TO_LPS @ affine[:3, 1]  # moving one row = one step along array axis j
    col_spacing, row_spacing = float(np.linalg.norm(column_step)), float(np.linalg.norm(row_step))
    orientation = [*(column_step / col_spacing), *(row_step / row_spacing)]
    thickness = float(np.linalg.norm(affine[:3, 2]))
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = np.rint(np.asarray(data, dtype=np.float64)).astype(np.int16)
    paths = []
    for k in range(pixels.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "MR"
        ds.PatientName = "Test^Condiff"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate, ds.StudyTime = "20240101", "120000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.SeriesDescription = series_description
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "condiff tests"
        ds.ImagePositionPatient = [f"{v:.6f}" for v in _RAS_TO_LPS @ (affine @ [0.0, 0.0, k, 1.0])[:3]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.PixelSpacing = [f"{row_spacing:.6f}", f"{col_spacing:.6f}"]
        ds.SliceThickness = f"{thickness:.6f}"
        ds.PositionReferenceIndicator = ""
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.EchoTrainLength = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()  # rows along j, columns along i
        path = folder / f"slice{k:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths

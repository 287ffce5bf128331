"""Reading scans and masks, and writing results on a scan's own grid.

A :class:`Volume` keeps the voxels in the file's own order together with the voxel-to-world affine (RAS+
mm, the nibabel convention) and the NIfTI header it came with. Nothing here reorients or resamples:
anything written with :func:`save_like` lies on exactly the reference scan's grid, with its affine and a
copy of its header, so it overlays the scan in any viewer.

Formats: NIfTI (``.nii``, ``.nii.gz``) through nibabel; NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``,
``.mhd``) through SimpleITK; a folder is read as a DICOM series (SimpleITK/GDCM). SimpleITK works in LPS+ with
arrays in (z, y, x) order; both are converted to nibabel's conventions (RAS+, index (i, j, k)) on reading.

Every problem with an input raises :class:`~engine.errors.VolumeError`, and every problem with an output
raises :class:`~engine.errors.OutputError`, with a one-line message that starts with the file's path.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike

from engine.errors import OutputError, VolumeError

__all__ = [
    "Volume",
    "atomic_write_bytes",
    "atomic_write_json",
    "load_mask",
    "load_volume",
    "save_like",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
GRID_TOLERANCE_MM = 1e-3
"""Two grids are the same when the world positions of their corner voxels differ by at most this much."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scan in its file's own voxel order.

    Attributes:
        data: float32 voxels, indexed (i, j, k) as nibabel does.
        affine: float64 4x4 map from voxel index to RAS+ world coordinates in mm.
        header: the file's NIfTI header; for other formats, a NIfTI header built from ``affine``.
        path: where the volume was read from (None for a volume built in memory).
        source_format: ``"nifti"``, ``"dicom"``, ``"nrrd"`` or ``"mha"``.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path | None = None
    source_format: str = "nifti"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of voxels along each array axis."""
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (lengths of the affine's columns)."""
        return tuple(float(z) for z in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each array axis increases towards, e.g. ``("L", "P", "S")``."""
        return nib.aff2axcodes(self.affine)

    @property
    def name(self) -> str:
        """The path as a string for messages, or ``"<in-memory volume>"``."""
        return str(self.path) if self.path is not None else "<in-memory volume>"


# ---------------------------------------------------------------------------------------------------- read


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` on one line; ITK's source-location preamble is dropped and long text is shortened."""
    text = " ".join(str(exc).split())
    if "itk::ERROR" in text:
        text = text.split("itk::ERROR", 1)[1].lstrip(": ")
        text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _is_itk(path: Path) -> bool:
    return path.name.lower().endswith(ITK_SUFFIXES)


def _header_from_affine(affine: np.ndarray, shape: tuple[int, ...]) -> nib.Nifti1Header:
    """A fresh NIfTI header whose sform and qform (both "scanner") describe ``affine``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(affine, code="scanner")
    header.set_qform(affine, code="scanner")
    header.set_xyzt_units("mm", "sec")
    return header


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise VolumeError(f"{path}: not a single-file NIfTI image ({type(img).__name__})")
    header = img.header
    if not isinstance(header, nib.Nifti1Header) or isinstance(header, nib.Nifti2Header):
        header = nib.Nifti1Header.from_header(header)
    else:
        header = header.copy()
    data = np.asanyarray(img.dataobj)
    return data, np.asarray(img.affine, dtype=np.float64), header


def _itk_affine(image: Any) -> np.ndarray:
    """RAS+ affine of a SimpleITK image for an array transposed to (x, y, z) order."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def _from_itk(image: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        n = image.GetNumberOfComponentsPerPixel()
        raise VolumeError(f"{path}: has {n} components per voxel, expected 1")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, 0])
        dim = 3
    if dim != 3:
        raise VolumeError(f"{path}: is {dim}-D with size {tuple(image.GetSize())}, expected a 3-D volume")
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    return data, _itk_affine(image)


def _read_itk_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    return _from_itk(sitk.ReadImage(str(path)), path)


def _read_dicom_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(path))
    if not series_ids:
        raise VolumeError(f"{path}: folder holds no DICOM series")
    files = {sid: reader.GetGDCMSeriesFileNames(str(path), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files[sid]))
    if len(series_ids) > 1:
        logger.warning("%s: %d DICOM series found; reading %s (%d files), the largest",
                       path, len(series_ids), chosen, len(files[chosen]))
    reader.SetFileNames(files[chosen])
    return _from_itk(reader.Execute(), path)


def _read_raw(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header, str]:
    """Read voxels (file dtype), RAS affine, NIfTI header and format name, without checking the content."""
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            data, affine = _read_dicom_folder(path)
            fmt = "dicom"
            header = None
        elif _is_nifti(path):
            data, affine, header = _read_nifti(path)
            fmt = "nifti"
        elif _is_itk(path):
            data, affine = _read_itk_file(path)
            fmt = "mha" if path.suffix.lower() in (".mha", ".mhd") else "nrrd"
            header = None
        else:
            raise VolumeError(f"{path}: unsupported file type (use .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd "
                              "or a DICOM folder)")
    except VolumeError:
        raise
    except MemoryError:
        raise VolumeError(f"{path}: too large to load into memory") from None
    except Exception as exc:  # nibabel, gzip, zlib and ITK raise many unrelated types for a bad file
        raise VolumeError(f"{path}: cannot be read ({_one_line(exc)})") from exc
    # A trailing singleton dimension (x, y, z, 1[, 1 ...]) is a 3-D volume stored as 4-D.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if header is None:
        header = _header_from_affine(affine, data.shape)
    return data, affine, header, fmt


def _check_shape(data: np.ndarray, path: Path) -> None:
    if data.ndim != 3:
        raise VolumeError(f"{path}: is {data.ndim}-D with shape {tuple(data.shape)}, expected a 3-D volume")
    if min(data.shape) == 0:
        raise VolumeError(f"{path}: holds no voxels (shape {tuple(data.shape)})")
    if min(data.shape) == 1:
        raise VolumeError(f"{path}: is a single 2-D slice (shape {tuple(data.shape)}), expected a 3-D volume")


def load_volume(path: str | Path) -> Volume:
    """Read a scan as a float32 :class:`Volume` in its file's own voxel order.

    Args:
        path: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr`` or ``.mha``/``.mhd`` file, or a folder holding a
            DICOM series (when it holds several, the one with the most files is read and a warning is logged).

    Returns:
        The volume. A 4-D file whose extra dimensions are all 1 is read as 3-D. Non-finite voxels (some but
        not all NaN or infinite) are set to 0, with a warning logged.

    Raises:
        VolumeError: the path is missing, unreadable or truncated, the image is not 3-D, it holds only NaN, or
            all its voxels are equal (an empty scan).
    """
    path = Path(path)
    raw, affine, header, fmt = _read_raw(path)
    _check_shape(raw, path)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{path}: has a degenerate voxel-to-world affine")
    try:
        data = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{path}: voxel type {raw.dtype} cannot be read as numbers") from exc
    finite = np.isfinite(data)
    if not finite.any():
        raise VolumeError(f"{path}: holds only NaN or infinite values")
    if not finite.all():
        logger.warning("%s: %d non-finite voxels set to 0", path, int(data.size - finite.sum()))
        data = np.where(finite, data, np.float32(0.0))
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise VolumeError(f"{path}: is empty (every voxel equals {lo:g})")
    return Volume(data=np.ascontiguousarray(data), affine=affine.copy(), header=header, path=path,
                  source_format=fmt)


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous voxel coordinates of the 8 corner voxels of a 3-D grid, as a 4x8 array."""
    ranges = [(0, n - 1) for n in shape[:3]]
    pts = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(3, -1)
    return np.vstack([pts, np.ones((1, pts.shape[1]))])


def same_grid(shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...], affine_b: np.ndarray,
              tol_mm: float = GRID_TOLERANCE_MM) -> bool:
    """True when two grids have the same shape and their corner voxels lie within ``tol_mm`` of each other."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    corners = _corners(tuple(shape_a))
    diff = (np.asarray(affine_a) @ corners)[:3] - (np.asarray(affine_b) @ corners)[:3]
    return bool(np.linalg.norm(diff, axis=0).max() <= tol_mm)


def load_mask(path: str | Path, reference: Volume) -> np.ndarray:
    """Read a mask that lies on ``reference``'s grid as a boolean array in the reference's voxel order.

    Voxels are "in" the mask when their value is above 0 (label images such as BraTS segmentations count every
    non-zero label); a mask with values strictly between 0 and 1 (a probability map) is thresholded at 0.5
    instead. An all-zero mask is valid and returned as such.

    Raises:
        VolumeError: the file cannot be read, or its shape or affine differ from the reference's (corner
            voxels more than 1e-3 mm apart).
    """
    path = Path(path)
    raw, affine, _header, _fmt = _read_raw(path)
    if raw.ndim != 3:
        raise VolumeError(f"{path}: is {raw.ndim}-D with shape {tuple(raw.shape)}, expected a 3-D mask")
    if tuple(raw.shape) != reference.shape:
        raise VolumeError(f"{path}: mask shape {tuple(raw.shape)} differs from the scan's {reference.shape} "
                          f"({reference.name})")
    if not same_grid(raw.shape, affine, reference.shape, reference.affine):
        raise VolumeError(f"{path}: mask affine differs from the scan's by more than {GRID_TOLERANCE_MM} mm "
                          f"({reference.name})")
    if raw.dtype == np.bool_:
        return np.array(raw, dtype=bool)
    if not np.issubdtype(raw.dtype, np.number):
        raise VolumeError(f"{path}: mask voxel type {raw.dtype} is not numeric")
    values = np.nan_to_num(np.asarray(raw), nan=0.0)
    if np.issubdtype(values.dtype, np.floating) and ((values > 0) & (values < 1)).any():
        return values >= 0.5
    return values > 0


# --------------------------------------------------------------------------------------------------- write


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then :func:`os.replace`.

    Either the whole new file is in place or the folder is as it was (no partial file). Missing parent folders
    are created.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder ({_one_line(exc)})") from exc
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp_name).chmod(0o644)
        os.replace(tmp_name, path)  # noqa: PTH105 - the atomic rename, named so tests can find it
        tmp_name = None
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({_one_line(exc)})") from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically (see :func:`atomic_write_bytes`)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"  # NaN/Infinity written as Python's json does
    return atomic_write_bytes(path, text.encode("utf-8"))


def _is_same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype``; integers are rounded and clipped to the type's range, NaN becomes 0."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.nan_to_num(np.asarray(array, dtype=np.float64), nan=0.0)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(array).astype(dtype)


def save_like(array: np.ndarray, reference: Volume, path: str | Path, *, dtype: DTypeLike | None = None,
              is_mask: bool = False) -> Path:
    """Write ``array`` as a NIfTI file on ``reference``'s own grid.

    The file gets the reference's shape and affine and a copy of its header (sform and qform codes
    kept), with the data type set to ``dtype``, no intensity scaling (slope 1, intercept 0),
    ``cal_min``/``cal_max`` set to the data range, and for masks the NIfTI "label" intent. References
    read from other formats are written as NIfTI with their RAS affine. The write is atomic (temporary
    file in the same folder, then rename).

    Args:
        array: values in the reference's voxel order, shape ``reference.shape``.
        reference: the scan the output belongs to.
        path: output file, ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).
        dtype: on-disk data type; float32 by default, uint8 by default for masks. Floats cast to an
            integer type are rounded and clipped to its range.
        is_mask: write ``array > 0`` as a label image.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        VolumeError: ``array`` does not have the reference's shape.
        OutputError: ``path`` is not a NIfTI name, is the reference's own file, or cannot be written.
    """
    path = Path(path)
    array = np.asarray(array)
    if tuple(array.shape) != reference.shape:
        raise VolumeError(f"{path}: array shape {tuple(array.shape)} differs from the scan's "
                          f"{reference.shape} ({reference.name})")
    if not _is_nifti(path):
        raise OutputError(f"{path}: output name must end in .nii or .nii.gz")
    if reference.path is not None and _is_same_file(path, reference.path):
        raise OutputError(f"{path}: refusing to overwrite the input scan")
    out_dtype = np.dtype(dtype if dtype is not None else (np.uint8 if is_mask else np.float32))
    values = _cast(array > 0 if is_mask else array, out_dtype)

    header = reference.header.copy()
    header.set_data_shape(values.shape)
    header.set_data_dtype(out_dtype)
    header.set_slope_inter(1.0, 0.0)
    finite = values[np.isfinite(values)] if np.issubdtype(out_dtype, np.floating) else values
    header["cal_min"] = float(finite.min()) if finite.size else 0.0
    header["cal_max"] = float(finite.max()) if finite.size else 0.0
    header.set_intent("label" if is_mask else "none", allow_unknown=False)
    header["descrip"] = b"condiff"
    header["aux_file"] = b""

    affine = np.asarray(reference.affine, dtype=np.float64)
    if not np.allclose(header.get_best_affine(), affine, atol=1e-4):
        # A volume whose header does not describe its affine (built in memory): the affine wins.
        header.set_sform(affine, code=int(header["sform_code"]) or "scanner")
        header.set_qform(affine, code=int(header["qform_code"]) or "scanner")
    # With a header that already describes the affine, nibabel keeps sform, qform and their codes untouched.
    raw = nib.Nifti1Image(values, affine, header=header).to_bytes()
    # nibabel marks "no scaling" as NaN on write; store the explicit identity scaling instead.
    written = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    written.set_slope_inter(1.0, 0.0)
    block = written.binaryblock
    raw = block + raw[len(block):]
    if path.name.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    return atomic_write_bytes(path, raw)

"""Reading a scan or a mask from disk, and checking it before and after its voxels are read.

:func:`load_volume` reads a scan as a float32 :class:`~engine.volumes.Volume` in its file's own voxel order;
:func:`load_mask` reads a mask that lies on a scan's grid. Nothing here reorients or resamples.

Formats: NIfTI (``.nii``, ``.nii.gz``) through nibabel; NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``,
``.mhd``) through SimpleITK; a folder is read as a DICOM series (SimpleITK/GDCM). SimpleITK works in LPS+ with
arrays in (z, y, x) order; both are converted to nibabel's conventions (RAS+, index (i, j, k)) on reading.

A NIfTI header is checked against the file before nibabel allocates anything (dimensions, data type, voxel offset,
extensions, size against :data:`MAX_VOXELS` and, gzip-compressed, :data:`DEFLATE_MAX_RATIO`); every format's affine
must be finite and non-singular; the voxels must be 3-D, real, finite somewhere, within :data:`MAX_ABS_VALUE` and not
all equal. Every problem with an input raises :class:`~engine.errors.VolumeError` with a one-line message that starts
with the file's path; what is odd but usable becomes a one-line warning on the volume.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from engine.errors import VolumeError, exception_line, one_line
from engine.volumes import GRID_TOLERANCE_MM, ITK_SUFFIXES, LPS_TO_RAS, Volume, _corners, _is_nifti, same_grid

__all__ = ["load_mask", "load_volume"]

logger = logging.getLogger(__name__)

MAX_VOXELS = 2**30
"""The most voxels a scan may hold (a 1024^3 grid, 4 GiB as float32). A header that declares more is refused before
anything is read or allocated."""
MAX_ABS_VALUE = 1e14
"""The largest voxel magnitude accepted: with it, a sum of squares over :data:`MAX_VOXELS` voxels stays finite in
float32 (1e28 * 2^30 < 3.4e38), so no statistic of the scan overflows."""
DEFLATE_MAX_RATIO = 1032
"""gzip (deflate) expands data at most about 1032-fold: a ``.nii.gz`` file cannot hold more voxel bytes than this times
its own size, which bounds what a header may claim before anything is decompressed."""
FORMS_TOLERANCE_MM = 0.1
"""A NIfTI file's sform and qform disagree when they place a corner voxel further apart than this."""
LABEL_MAX_VALUES = 64
"""A scan whose voxels are whole numbers taking at most this many distinct values looks like a label image."""
SLICE_SPACING_TOLERANCE = 0.05
"""DICOM slices are evenly spaced when every gap is within this fraction of the median gap (plus 1e-3 mm)."""

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_INTENT_LABEL = 1002


def _is_itk(path: Path) -> bool:
    return path.name.lower().endswith(ITK_SUFFIXES)


def _size_text(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


def _dtype_text(dtype: np.dtype) -> str:
    if dtype.fields:
        return "RGBA" if len(dtype.fields) == 4 else "RGB"
    return dtype.name


def _header_from_affine(affine: np.ndarray, shape: tuple[int, ...]) -> nib.Nifti1Header:
    """A fresh NIfTI header whose sform and qform (both "scanner") describe ``affine``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(affine, code="scanner")
    header.set_qform(affine, code="scanner")
    header.set_xyzt_units("mm", "sec")
    return header


# ------------------------------------------------------------------------------- NIfTI: the header before the voxels
def _looks_like(start: bytes) -> str:
    """What a file that is not NIfTI seems to be, from its first bytes."""
    signatures = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                  (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (_GZIP_MAGIC, "gzip data"),
                  (b"NRRD", "an NRRD file"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"))
    for magic, what in signatures:
        if start.startswith(magic):
            return f"it looks like {what}"
    if start[128:132] == b"DICM":
        return "it looks like a DICOM file"
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError:
        return "its content is not recognised"
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        return "it looks like text"
    return "its content is not recognised"


def _file_start(path: Path, size: int = 544) -> tuple[bytes, bool]:
    """The first ``size`` bytes of a file's content (decompressed when it is gzip), and whether it was gzip."""
    with path.open("rb") as fh:
        start = fh.read(size)
    if not start.startswith(_GZIP_MAGIC):
        return start, False
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(size), True
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(f"{path}: is a damaged gzip file ({exception_line(exc)})") from exc


def _parse_nifti_header(start: bytes) -> nib.Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header at the start of a single-file image, unchecked; None without a valid magic."""
    layouts = ((nib.Nifti1Header, 348, 344, b"n+1\x00"), (nib.Nifti2Header, 540, 4, b"n+2\x00"))
    for klass, size, magic_at, magic in layouts:
        if len(start) < size or start[magic_at: magic_at + 4] != magic:
            continue
        for order in ("<", ">"):
            if struct.unpack(f"{order}i", start[:4])[0] == size:
                return klass(binaryblock=start[:size], endianness=order, check=False)
    return None


def _xform_name(code: int) -> str:
    try:
        return str(nib.nifti1.xform_codes.label[code])
    except KeyError:
        return f"code {code}"


def _forms_warning(path: Path, header: nib.Nifti1Header, shape: tuple[int, ...]) -> str | None:
    """A warning when both sform and qform are set and place the voxels differently (the sform is used)."""
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if not (sform_code and qform_code) or len(shape) < 3:
        return None
    try:
        sform, qform = header.get_sform(), header.get_qform()
    except Exception:  # noqa: BLE001 - an unreadable qform is simply not compared
        return None
    if not (np.isfinite(sform).all() and np.isfinite(qform).all()):
        return None
    corners = _corners(shape[:3])
    gap = float(np.linalg.norm((sform @ corners)[:3] - (qform @ corners)[:3], axis=0).max())
    if gap <= FORMS_TOLERANCE_MM:
        return None
    return (f"{path}: its sform ({_xform_name(sform_code)}) and qform ({_xform_name(qform_code)}) place the voxels up "
            f"to {gap:.1f} mm apart; using the sform, as nibabel and FSL do")


def _nifti_header_of(path: Path) -> tuple[nib.Nifti1Header, bool]:
    """The unchecked header of a single-file NIfTI, and whether the file is gzip-compressed.

    Raises:
        VolumeError: the file is empty, compressed other than its name says, or not NIfTI (the message says what it
            looks like).
    """
    start, compressed = _file_start(path)
    if not start:
        raise VolumeError(f"{path}: is a gzip file with nothing inside" if compressed else f"{path}: is an empty file")
    named_gz = path.name.lower().endswith(".gz")
    if compressed and not named_gz:
        raise VolumeError(f"{path}: is gzip-compressed but its name ends in .nii; rename it to .nii.gz")
    header = _parse_nifti_header(start)
    if header is None:
        if named_gz and not compressed:
            raise VolumeError(f"{path}: is not gzip-compressed though its name ends in .gz ({_looks_like(start)})")
        raise VolumeError(f"{path}: is not a NIfTI file ({_looks_like(start)})")
    if named_gz and not compressed:
        raise VolumeError(f"{path}: is an uncompressed NIfTI file named .gz; rename it to .nii")
    return header, compressed


def _check_nifti_size(path: Path, header: nib.Nifti1Header, compressed: bool) -> tuple[int, ...]:
    """Check the header's dimensions, data type and voxel offset against the file; returns the shape.

    Raises:
        VolumeError: an impossible header, more voxels than :data:`MAX_VOXELS`, or more voxel bytes than the file
            holds (or, gzip-compressed, could hold).
    """
    dim = [int(v) for v in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise VolumeError(f"{path}: its header gives {ndim} dimensions (dim[0]); a NIfTI image has 1 to 7")
    shape = tuple(dim[1: ndim + 1])
    if any(n < 0 for n in shape):
        raise VolumeError(f"{path}: its header has a negative dimension (shape {shape})")
    if any(n == 0 for n in shape):
        raise VolumeError(f"{path}: holds no voxels (header shape {shape})")
    voxels = math.prod(shape)
    if voxels > MAX_VOXELS:
        raise VolumeError(f"{path}: its header declares {voxels:.3g} voxels (shape {shape}), more than condiff reads "
                          f"({MAX_VOXELS:.3g}); the header is damaged or the image is not a scan")
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:  # noqa: BLE001 - nibabel raises KeyError or HeaderDataError for unknown codes
        raise VolumeError(f"{path}: its header names an unknown data type (code {int(header['datatype'])})") from exc
    if dtype.itemsize == 0:
        raise VolumeError(f"{path}: its header names no data type (code {int(header['datatype'])})")
    offset = float(header["vox_offset"])
    minimum = int(header.single_vox_offset)
    if offset == 0:
        offset = minimum  # some writers leave it unset; nibabel then reads from just after the header
    elif not math.isfinite(offset) or offset < minimum:
        raise VolumeError(f"{path}: its header's vox_offset {offset:g} lies inside the header (voxels start at byte "
                          f"{minimum} or later)")
    needed = int(offset) + voxels * dtype.itemsize
    size = path.stat().st_size
    if compressed and needed > DEFLATE_MAX_RATIO * size + 4096:
        raise VolumeError(f"{path}: its header declares {_size_text(needed)} of {_dtype_text(dtype)} voxels (shape "
                          f"{shape}), more than a {_size_text(size)} gzip file can hold; the header is damaged")
    if not compressed and size < needed:
        raise VolumeError(f"{path}: is truncated: its {shape} {_dtype_text(dtype)} voxels from byte {int(offset)} "
                          f"need {needed} bytes, the file has {size}")
    return shape


def _check_extensions(path: Path, header: nib.Nifti1Header, compressed: bool) -> None:
    """Walk the header extensions the way nibabel will read them, in small reads, and refuse a chain that is not
    whole: nibabel allocates the size an extension claims before reading it, so a damaged size could cost gigabytes.

    Raises:
        VolumeError: an extension size that is not a positive multiple of 16, or runs past the voxel offset or the end
            of the file.
    """
    start = int(header.single_vox_offset)  # the extensions start here, after the 4-byte flag before it
    offset = float(header["vox_offset"])
    end = int(offset) if offset > 0 else None  # unset: nibabel reads extensions up to the end of the file
    order = "<" if header.endianness == "<" else ">"
    with (gzip.open(path, "rb") if compressed else path.open("rb")) as fh:
        fh.seek(start - 4)
        flag = fh.read(4)
        if len(flag) < 4 or flag[0] == 0:
            return
        position = start
        while end is None or end - position >= 16:
            head = fh.read(8)
            if not head and end is None:
                return
            if len(head) < 8:
                raise VolumeError(f"{path}: its header extensions end early (a damaged header)")
            size = struct.unpack(f"{order}i", head[:4])[0]
            if size < 16 or size % 16:
                raise VolumeError(f"{path}: a header extension claims {size} bytes, not a positive multiple of 16 "
                                  "(a damaged header)")
            if end is not None and position + size > end:
                raise VolumeError(f"{path}: a header extension of {size} bytes runs past the voxel offset {end} "
                                  "(a damaged header)")
            remaining = size - 8
            while remaining > 0:
                got = len(fh.read(min(remaining, 1 << 20)))
                if not got:
                    raise VolumeError(f"{path}: a header extension claims {size} bytes, past the end of the file")
                remaining -= got
            position += size


def _nifti_placement_and_scaling(path: Path, header: nib.Nifti1Header, shape: tuple[int, ...]) -> list[str]:
    """Check what places the voxels and scales their values; returns warnings.

    Raises:
        VolumeError: the voxel sizes that place the voxels (no sform) are zero or non-finite, or the intercept is
            not finite while the slope is.
    """
    notes: list[str] = []
    if int(header["sform_code"]) == 0:
        zooms = np.asarray(header["pixdim"][1: min(len(shape), 3) + 1], dtype=np.float64)
        if not (np.isfinite(zooms).all() and (zooms != 0).all()):
            source = "qform" if int(header["qform_code"]) else "header, which has no sform or qform,"
            raise VolumeError(f"{path}: its voxel size (pixdim {tuple(float(z) for z in zooms)}) has a zero or "
                              f"non-finite value, and the {source} needs it to place the voxels")
    # A slope of 0 or NaN means "no scaling" (the NIfTI standard; nibabel writes NaN for unscaled data): the stored
    # values are used, silently, as every reader does. Only an intercept that is then dropped is worth a word.
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    unscaled = slope == 0 or not math.isfinite(slope)
    if unscaled and math.isfinite(inter) and inter != 0:
        notes.append(f"{path}: scl_slope is {slope:g}, so NIfTI applies no scaling and the intercept "
                     f"{inter:g} is ignored too: the stored values are used")
    elif not unscaled and not math.isfinite(inter):
        raise VolumeError(f"{path}: its scl_inter is {inter:g} with scl_slope {slope:g}: the intensities are undefined")
    forms = _forms_warning(path, header, shape)
    if forms:
        notes.append(forms)
    if not int(header["sform_code"]) and not int(header["qform_code"]):
        notes.append(f"{path}: has no sform or qform, so its orientation is assumed (LAS, the NIfTI fallback): "
                     "left and right may be swapped")
    return notes


def _check_nifti_file(path: Path) -> list[str]:
    """Check a NIfTI file's header against the file before nibabel reads any voxels; returns warnings.

    This keeps a damaged or mislabelled file from allocating memory for voxels that are not there, from being read
    from the wrong offset, and from reaching nibabel's own messages.
    """
    header, compressed = _nifti_header_of(path)
    shape = _check_nifti_size(path, header, compressed)
    _check_extensions(path, header, compressed)
    return _nifti_placement_and_scaling(path, header, shape)


@contextlib.contextmanager
def _nibabel_notes(path: Path, out: list[str]) -> Iterator[None]:
    """Collect what nibabel logs about a header it repairs while reading into ``out`` (instead of printing it)."""
    nib_logger = logging.getLogger("nibabel.global")

    def keep(record: logging.LogRecord) -> bool:
        out.append(f"{path}: nibabel repaired its header: {' '.join(record.getMessage().split())}")
        return False

    nib_logger.addFilter(keep)
    try:
        yield
    finally:
        nib_logger.removeFilter(keep)


def _affine_source(header: nib.Nifti1Header) -> str:
    """Where nibabel takes the affine from: the sform if its code is set, else the qform, else pixdim."""
    if int(header["sform_code"]):
        return "sform"
    if int(header["qform_code"]):
        return "qform"
    return "voxel sizes (no sform or qform)"


def _read_nifti(path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    notes += _check_nifti_file(path)
    with _nibabel_notes(path, notes), np.errstate(all="ignore"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeError(f"{path}: not a single-file NIfTI image ({type(img).__name__})")
        header = img.header
        if not isinstance(header, nib.Nifti1Header) or isinstance(header, nib.Nifti2Header):
            header = nib.Nifti1Header.from_header(header)
        else:
            header = header.copy()
        data = np.asanyarray(img.dataobj)
    notes += [f"{path}: nibabel: {one_line(w.message)}" for w in caught
              if issubclass(w.category, UserWarning)]
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(path, affine, _affine_source(img.header))
    return data, affine, header


def _check_affine(path: Path, affine: np.ndarray, source: str) -> None:
    if not np.isfinite(affine).all():
        raise VolumeError(f"{path}: its voxel-to-world affine (from the {source}) holds non-finite values")
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if singular[0] == 0 or singular[-1] <= 1e-6 * singular[0]:
        raise VolumeError(f"{path}: its voxel-to-world affine (from the {source}) is singular: the voxel axes do not "
                          "span 3-D space")


# ------------------------------------------------------------------------------------------------ ITK formats
@contextlib.contextmanager
def _itk_quiet() -> Iterator[None]:
    """Keep ITK's multi-line warnings (GDCM's "No Series were found", uneven slices) off stderr; the loader reports
    what matters itself."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _itk_affine(image: Any) -> np.ndarray:
    """RAS+ affine of a SimpleITK image for an array transposed to (x, y, z) order."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS[:3, :3] @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS[:3, :3] @ origin
    return affine


def _check_itk_size(path: Path, size: Sequence[int]) -> None:
    voxels = math.prod(int(n) for n in size)
    if voxels > MAX_VOXELS:
        raise VolumeError(f"{path}: declares {voxels:.3g} voxels (size {tuple(size)}), more than condiff reads "
                          f"({MAX_VOXELS:.3g})")


def _from_itk(image: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        n = image.GetNumberOfComponentsPerPixel()
        raise VolumeError(f"{path}: has {n} components per voxel (colour or vector data), expected one grey value")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, 0])
        dim = 3
    if dim != 3:
        raise VolumeError(f"{path}: is {dim}-D with size {tuple(image.GetSize())}, expected a 3-D volume")
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    affine = _itk_affine(image)
    _check_affine(path, affine, "image's spacing and direction")
    return data, affine


def _read_itk_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    _check_itk_size(path, reader.GetSize())
    return _from_itk(reader.Execute(), path)


def _slice_gaps(path: Path, files: Sequence[str]) -> None:
    """Refuse a DICOM series whose slices do not share one orientation, or are not evenly spaced along their normal
    (a missing or repeated slice): a volume built from it would put slices in the wrong place."""
    import SimpleITK as sitk

    if len(files) < 3:
        return
    reader = sitk.ImageFileReader()
    positions = []
    first: np.ndarray | None = None
    normal = np.zeros(3)
    for name in files:
        reader.SetFileName(name)
        reader.ReadImageInformation()
        if not (reader.HasMetaDataKey("0020|0032") and reader.HasMetaDataKey("0020|0037")):
            return  # no patient geometry (e.g. a multi-frame file): nothing to compare
        position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        cosines = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
        if first is None:
            first = cosines
            normal = np.cross(cosines[:3], cosines[3:])
        elif not np.allclose(cosines, first, atol=1e-4):
            raise VolumeError(f"{path}: its DICOM slices do not all have the same orientation (Image Orientation "
                              f"Patient differs in {Path(name).name}); they do not form one volume")
        positions.append(float(position @ normal))
    steps = np.diff(np.sort(np.asarray(positions)))
    if (steps < 1e-3).any():
        raise VolumeError(f"{path}: {int((steps < 1e-3).sum()) + 1} DICOM slices share one position (a repeated slice "
                          "or several volumes in one series)")
    median = float(np.median(steps))
    off = np.abs(steps - median) > SLICE_SPACING_TOLERANCE * median + 1e-3
    if off.any():
        worst = float(steps[np.argmax(np.abs(steps - median))])
        raise VolumeError(f"{path}: its DICOM slices are not evenly spaced (a gap of {worst:.2f} mm where the others "
                          f"are {median:.2f} mm apart): a missing slice?")


def _read_dicom_folder(path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series_ids = sorted(reader.GetGDCMSeriesIDs(str(path)))
    if not series_ids:
        if _is_nifti(path) or _is_itk(path):
            raise VolumeError(f"{path}: is a folder, not a file, and holds no DICOM series")
        raise VolumeError(f"{path}: folder holds no DICOM series")
    files = {sid: reader.GetGDCMSeriesFileNames(str(path), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files[sid]))  # the first of the sorted ids on a tie
    if len(series_ids) > 1:
        others = ", ".join(f"{sid} ({len(files[sid])} slices)" for sid in series_ids if sid != chosen)
        notes.append(f"{path}: holds {len(series_ids)} DICOM series; read the one with the most slices (on a tie, "
                     f"the first by series UID): {chosen} ({len(files[chosen])} slices); not read: {others}")
    _slice_gaps(path, files[chosen])
    first = sitk.ImageFileReader()
    first.SetFileName(files[chosen][0])
    first.ReadImageInformation()
    _check_itk_size(path, (*first.GetSize()[:2], len(files[chosen])))
    reader.SetFileNames(files[chosen])
    return _from_itk(reader.Execute(), path)


# ------------------------------------------------------------------------------------------------ any format
def _read_raw(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header, str, list[str]]:
    """Read voxels (file dtype), RAS affine, NIfTI header, format name and warnings, without checking the content."""
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if not path.is_dir() and not path.is_file():  # a pipe or a device would block or never end
        raise VolumeError(f"{path}: is not a regular file or folder")
    notes: list[str] = []
    try:
        if path.is_dir():
            with _itk_quiet():
                data, affine = _read_dicom_folder(path, notes)
            fmt = "dicom"
            header = None
        elif _is_nifti(path):
            data, affine, header = _read_nifti(path, notes)
            fmt = "nifti"
        elif _is_itk(path):
            with _itk_quiet():
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
    except EOFError as exc:
        raise VolumeError(f"{path}: is truncated (the compressed data end before the image does)") from exc
    except Exception as exc:  # nibabel, gzip, zlib and ITK raise many unrelated types for a bad file
        raise VolumeError(f"{path}: cannot be read ({exception_line(exc)})") from exc
    # A trailing singleton dimension (x, y, z, 1[, 1 ...]) is a 3-D volume stored as 4-D.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if header is None:
        header = _header_from_affine(affine, data.shape)
    return data, affine, header, fmt, notes


def _check_shape(data: np.ndarray, path: Path) -> None:
    shape = tuple(data.shape)
    if data.ndim > 3:
        raise VolumeError(f"{path}: is {data.ndim}-D with shape {shape}, expected a 3-D volume (several volumes or a "
                          "time series: extract one first)")
    if data.ndim < 3:
        raise VolumeError(f"{path}: is {data.ndim}-D with shape {shape}, expected a 3-D volume")
    if min(shape) == 0:
        raise VolumeError(f"{path}: holds no voxels (shape {shape})")
    extent = sum(n > 1 for n in shape)
    if extent == 0:
        raise VolumeError(f"{path}: holds a single voxel (shape {shape}), expected a 3-D volume")
    if extent < 3:
        kind = "single 2-D slice" if extent == 2 else "single line of voxels"
        raise VolumeError(f"{path}: is a {kind} (shape {shape}), expected a 3-D volume")


def _as_float32(raw: np.ndarray, path: Path) -> np.ndarray:
    """The voxels as float32; colour, complex and non-numeric voxels are refused rather than cast."""
    dtype = raw.dtype
    if dtype.fields:
        raise VolumeError(f"{path}: holds {_dtype_text(dtype)} colour voxels; condiff needs one grey value per voxel")
    if np.issubdtype(dtype, np.complexfloating):
        raise VolumeError(f"{path}: holds complex voxels ({dtype.name}); condiff needs real values (a magnitude "
                          "image)")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise VolumeError(f"{path}: voxel type {dtype} is not numeric")
    with np.errstate(over="ignore", invalid="ignore"):
        data = np.asarray(raw, dtype=np.float32)
    if dtype.kind == "f" and dtype.itemsize > 4:
        overflow = np.isfinite(raw) & ~np.isfinite(data)
        if overflow.any():
            peak = float(np.abs(np.asarray(raw)[overflow]).max())
            raise VolumeError(f"{path}: values reach {peak:.3g}, outside the range condiff handles "
                              f"(|value| <= {MAX_ABS_VALUE:.0e})")
    return data


def _label_warning(path: Path, data: np.ndarray, header: nib.Nifti1Header, lo: float, hi: float) -> str | None:
    """A warning when the voxels look like a label image (a mask or segmentation) rather than a scan."""
    advice = "analysing it means nothing: open the scan it belongs to, and this file as a mask"
    if int(header["intent_code"]) == _NIFTI_INTENT_LABEL:
        return f"{path}: looks like a label image, not a scan (its header's intent is 'label'); {advice}"
    if hi - lo > 1e6:
        return None
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.size // 20000)]
    if not np.array_equal(sample, np.round(sample)) or np.unique(sample).size > LABEL_MAX_VALUES:
        return None
    if not np.array_equal(flat, np.round(flat)):
        return None
    values = np.unique(flat)
    if values.size > LABEL_MAX_VALUES:
        return None
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
    return (f"{path}: looks like a label image, not a scan ({values.size} distinct whole-number values: {shown}); "
            f"{advice}")


def load_volume(path: str | Path) -> Volume:
    """Read a scan as a float32 :class:`Volume` in its file's own voxel order.

    Args:
        path: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr`` or ``.mha``/``.mhd`` file, or a folder holding a
            DICOM series (when it holds several, the one with the most slices is read, the first by series UID on a
            tie, and a warning says so).

    Returns:
        The volume. A 4-D file whose extra dimensions are all 1 is read as 3-D. The NIfTI affine follows nibabel's
        rule (the sform when its code is set, else the qform, else the voxel sizes). ``Volume.warnings`` (also
        logged) states what was done with an input that is odd but usable: non-finite voxels set to 0, sform and
        qform that disagree, a header nibabel repaired, several DICOM series, a scan that looks like a label image.

    Raises:
        VolumeError: the path is missing or unreadable; the file is truncated, not what its name says, or its header
            is impossible or claims more voxels than the file holds; the image is not 3-D, its affine is singular or
            non-finite, its voxels are colour or complex, reach beyond :data:`MAX_ABS_VALUE`, are all NaN, or all
            equal (an empty scan); a DICOM series has a missing or repeated slice.
    """
    path = Path(path)
    raw, affine, header, fmt, notes = _read_raw(path)
    _check_shape(raw, path)
    data = _as_float32(raw, path)
    finite = np.isfinite(data)
    if not finite.any():
        raise VolumeError(f"{path}: holds only NaN or infinite values")
    if not finite.all():
        notes.append(f"{path}: {int(data.size - finite.sum())} non-finite voxels (NaN or infinite) set to 0")
        data = np.where(finite, data, np.float32(0.0))
    lo, hi = float(data.min()), float(data.max())
    if max(-lo, hi) > MAX_ABS_VALUE:
        raise VolumeError(f"{path}: values reach {max(-lo, hi):.3g}, outside the range condiff handles "
                          f"(|value| <= {MAX_ABS_VALUE:.0e})")
    if lo == hi:
        raise VolumeError(f"{path}: is empty (every voxel equals {lo:g})")
    label = _label_warning(path, data, header, lo, hi)
    if label:
        notes.append(label)
    for note in notes:
        logger.warning("%s", note)
    return Volume(data=np.ascontiguousarray(data), affine=affine.copy(), header=header, path=path,
                  source_format=fmt, warnings=tuple(notes))


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
    raw, affine, _header, _fmt, notes = _read_raw(path)
    for note in notes:
        logger.warning("%s", note)
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

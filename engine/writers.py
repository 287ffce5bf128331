"""Writing files atomically, and writing arrays on a scan's own grid.

:func:`atomic_write_bytes` and :func:`atomic_write_json` write through a temporary file in the same folder and a
rename, so a folder holds either the whole new file or what it held before. :func:`check_output_folder` checks that
results can be written before a long computation. :func:`save_like` writes an array as NIfTI on exactly a reference
scan's grid, with its affine and a copy of its header, so it overlays the scan in any viewer; nothing is reoriented or
resampled.

This module writes single files; :mod:`engine.outputs` and the other modules that compose an analysis's result files
build on it. Every problem with an output raises :class:`~engine.errors.OutputError` with a one-line message that
starts with the file's path.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike

from engine.errors import OutputError, VolumeError, exception_line
from engine.volumes import Volume, _is_nifti

__all__ = ["atomic_write_bytes", "atomic_write_json", "check_output_folder", "save_like"]


def check_output_folder(folder: str | Path) -> Path:
    """Make sure results can be written into ``folder`` (created when missing), before any long computation.

    A file is created there and removed again, and so are the folders this made, so a later failure leaves nothing
    behind. (A disk that fills up is only found when writing; the writes are atomic, so that too leaves nothing.)

    Raises:
        OutputError: the path is a file, or the folder cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder; choose an output folder")
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".condiff-check.", suffix=".tmp")
        os.close(fd)
        Path(name).unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot be written ({exception_line(exc)})") from exc
    finally:
        for path in made:  # innermost first
            with contextlib.suppress(OSError):
                path.rmdir()
    return folder


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
        raise OutputError(f"{path}: cannot create the folder ({exception_line(exc)})") from exc
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
        raise OutputError(f"{path}: cannot be written ({exception_line(exc)})") from exc
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

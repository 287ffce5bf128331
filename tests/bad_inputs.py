"""A corpus of bad inputs, written by the tests into a temporary folder.

Each case is something a user can hand condiff by mistake: a broken or mislabelled file, a volume of the wrong shape,
odd geometry or intensities, a DICOM folder that is not one clean series, or a damaged model folder. A case says
what must come of it: an ``error`` (an :class:`~engine.errors.EngineError` with a one-line message naming the path)
or a ``warning`` (the scan loads and a one-line warning says what was done), and a fragment the message must hold.

The same corpus runs through the engine (``tests/engine/test_bad_input_corpus.py``), the command line
(``tests/test_cli_corpus.py``) and the viewer (``tests/app/test_viewer_corpus.py``).
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

Outcome = Literal["error", "warning", "loads"]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        name: short identifier (the pytest id).
        group: ``loading``, ``geometry``, ``intensities``, ``dicom`` or ``model``.
        build: writes the input under the given folder and returns the path to open.
        outcome: ``error``, ``warning`` or ``loads``.
        says: a fragment (lower case) the error or warning must contain (empty for ``loads``).
    """

    name: str
    group: str
    build: Callable[[Path], Path]
    outcome: Outcome
    says: str


# ------------------------------------------------------------------------------------------------ helpers
def head(shape: tuple[int, ...] = (20, 22, 18), seed: int = 0) -> np.ndarray:
    """A small float32 "head": a textured ellipsoid on a zero background."""
    idx = np.indices(shape[:3]).astype(np.float32)
    centre = (np.array(shape[:3], np.float32) - 1) / 2
    radius = np.array(shape[:3], np.float32) * 0.4
    inside = (((idx - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(axis=0) <= 1
    texture = np.random.default_rng(seed).normal(100.0, 10.0, shape[:3]).astype(np.float32)
    return np.where(inside, texture, 0.0).astype(np.float32)


AFFINE = np.array([[-1.2, 0.0, 0.0, 12.0], [0.0, 1.1, 0.0, -11.0], [0.0, 0.0, 1.5, -13.0], [0.0, 0.0, 0.0, 1.0]])


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE,
               edit: Callable[[nib.Nifti1Header], None] | None = None) -> Path:
    """Write ``data`` as NIfTI-1 (gzip when the name ends in .gz) after ``edit`` has changed its header."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if edit is not None:
        edit(img.header)
    nib.save(img, path)
    return path


def _raw_header_edit(path: Path, data: np.ndarray, change: Callable[[nib.Nifti1Header], None]) -> Path:
    """Write a valid uncompressed NIfTI, then overwrite its header bytes with ``change`` applied, unchecked.

    nibabel refuses to write some broken headers itself; this writes them byte for byte, as another program might.
    """
    save_nifti(path, data)
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw)), check=False)
    change(header)
    block = header.binaryblock
    raw[: len(block)] = block
    path.write_bytes(bytes(raw))
    return path


def _png_bytes() -> bytes:
    """A valid 4x4 grey PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([i * 16] * 4) for i in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _write_bytes(name: str, payload: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(payload)
        return path

    return build


def _nifti(name: str, data: Callable[[], np.ndarray], affine: np.ndarray = AFFINE,
           edit: Callable[[nib.Nifti1Header], None] | None = None) -> Callable[[Path], Path]:
    return lambda folder: save_nifti(folder / name, data(), affine, edit)


def _raw(name: str, change: Callable[[nib.Nifti1Header], None]) -> Callable[[Path], Path]:
    return lambda folder: _raw_header_edit(folder / name, head(), change)


# ------------------------------------------------------------------------------------------------ loading
def _truncated_gz(folder: Path) -> Path:
    path = save_nifti(folder / "truncated.nii.gz", head((40, 40, 30)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _truncated_nii(folder: Path) -> Path:
    path = save_nifti(folder / "truncated.nii", head())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 500])
    return path


def _header_only(folder: Path) -> Path:
    path = save_nifti(folder / "header_only.nii", head())
    path.write_bytes(path.read_bytes()[:348])
    return path


def _folder_named_nifti(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.mkdir()
    (path / "readme.txt").write_text("not a scan")
    return path


def _empty_folder(folder: Path) -> Path:
    path = folder / "empty_folder"
    path.mkdir()
    return path


def _bad_vox_offset_past_end(header: nib.Nifti1Header) -> None:
    header["vox_offset"] = 1_000_000


def _bad_vox_offset_inside_header(header: nib.Nifti1Header) -> None:
    header["vox_offset"] = 100


def _huge_extension(folder: Path) -> Path:
    """An extension flag set and an extension that claims 2 GB (a damaged size nibabel would allocate for)."""
    path = save_nifti(folder / "huge_extension.nii", head())
    raw = bytearray(path.read_bytes())
    raw[348] = 1
    raw[352:360] = struct.pack("<ii", 2_000_000_000, 4)
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])), check=False)
    header["vox_offset"] = 0  # unset: nibabel then reads extensions up to the end of the file
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    return path


def _fifo(folder: Path) -> Path:
    """A named pipe called scan.nii: reading it would wait for a writer forever."""
    import os  # noqa: PLC0415

    path = folder / "pipe.nii"
    os.mkfifo(path)
    return path


LOADING = [
    Case("empty_file", "loading", _write_bytes("empty.nii.gz", b""), "error", "empty file"),
    Case("empty_file_nii", "loading", _write_bytes("empty.nii", b""), "error", "empty file"),
    Case("truncated_gzip", "loading", _truncated_gz, "error", "truncated"),
    Case("truncated_nii", "loading", _truncated_nii, "error", "truncated"),
    Case("header_only", "loading", _header_only, "error", "truncated"),
    Case("text_named_nifti", "loading", _write_bytes("notes.nii", b"patient notes, not an image\n" * 20), "error",
         "not a nifti"),
    Case("png_named_nifti", "loading", _write_bytes("photo.nii.gz", _png_bytes()), "error", "png"),
    Case("gzip_of_nothing", "loading", _write_bytes("nothing.nii.gz", gzip.compress(b"")), "error",
         "nothing inside"),
    Case("gzip_of_text", "loading", _write_bytes("text.nii.gz", gzip.compress(b"hello " * 100)), "error",
         "not a nifti"),
    Case("folder_named_nifti", "loading", _folder_named_nifti, "error", "folder"),
    Case("empty_folder", "loading", _empty_folder, "error", "no dicom"),
    Case("missing_path", "loading", lambda folder: folder / "does_not_exist.nii.gz", "error", "no such file"),
    Case("unsupported_suffix", "loading", _write_bytes("scan.txt", b"hello"), "error", "unsupported file type"),
    Case("vox_offset_past_end", "loading", _raw("offset_past_end.nii", _bad_vox_offset_past_end), "error",
         "truncated"),
    Case("vox_offset_inside_header", "loading", _raw("offset_in_header.nii", _bad_vox_offset_inside_header), "error",
         "vox_offset"),
    Case("extension_claims_2gb", "loading", _huge_extension, "error", "extension"),
    Case("named_pipe", "loading", _fifo, "error", "not a regular file"),
]


# ------------------------------------------------------------------------------------------------ geometry
def _dims(values: list[int]) -> Callable[[nib.Nifti1Header], None]:
    def change(header: nib.Nifti1Header) -> None:
        dim = header["dim"].copy()
        dim[: len(values)] = values
        header["dim"] = dim

    return change


def _pixdim_zero(header: nib.Nifti1Header) -> None:
    header["pixdim"] = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    header["sform_code"] = 0
    header["qform_code"] = 0


def _singular_sform(header: nib.Nifti1Header) -> None:
    affine = AFFINE.copy()
    affine[:3, 2] = affine[:3, 0]  # two voxel axes point the same way
    header.set_sform(affine, code="scanner")
    header["qform_code"] = 0


def _nan_sform(header: nib.Nifti1Header) -> None:
    header["srow_x"] = [np.nan, 0.0, 0.0, 0.0]
    header["qform_code"] = 0


def _disagreeing_forms(header: nib.Nifti1Header) -> None:
    header.set_sform(AFFINE, code="aligned")
    qform = AFFINE.copy()
    qform[:3, 3] += [30.0, 0.0, 0.0]  # 30 mm to the left
    header.set_qform(qform, code="scanner")


def _no_forms(header: nib.Nifti1Header) -> None:
    header["sform_code"] = 0
    header["qform_code"] = 0


GEOMETRY = [
    Case("two_d", "geometry", _nifti("two_d.nii.gz", lambda: head((20, 22, 18))[:, :, 9]), "error", "2-d"),
    Case("single_slice", "geometry", _nifti("single.nii.gz", lambda: head((20, 22, 18))[:, :, 9:10]), "error",
         "single 2-d slice"),
    Case("four_d", "geometry", _nifti("four_d.nii.gz", lambda: np.stack([head(), head(seed=1)], axis=-1)), "error",
         "4-d"),
    Case("five_d", "geometry", _nifti("five_d.nii.gz", lambda: head()[..., None, None].repeat(2, axis=4)), "error",
         "5-d"),
    Case("one_voxel", "geometry", _nifti("one_voxel.nii.gz", lambda: np.ones((1, 1, 1), np.float32)), "error",
         "single voxel"),
    Case("negative_dim", "geometry", _raw("negative_dim.nii", _dims([3, 20, -22, 18])), "error", "dimension"),
    Case("gigantic_dims", "geometry", _raw("gigantic.nii", _dims([3, 30000, 30000, 30000])), "error", "voxels"),
    Case("gigantic_dims_gz", "geometry",
         lambda folder: _gzip_file(_raw_header_edit(folder / "gigantic.nii", head(), _dims([3, 4000, 4000, 4000]))),
         "error", "voxels"),
    Case("zero_pixdim", "geometry", _raw("zero_pixdim.nii", _pixdim_zero), "error", "voxel size"),
    Case("singular_affine", "geometry", _raw("singular.nii", _singular_sform), "error", "affine"),
    Case("non_finite_affine", "geometry", _raw("nan_affine.nii", _nan_sform), "error", "affine"),
    Case("sform_qform_disagree", "geometry", _raw("forms.nii", _disagreeing_forms), "warning", "using the sform"),
    Case("no_forms", "geometry", _raw("no_forms.nii", _no_forms), "warning", "orientation is assumed"),
]


def _gzip_file(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return out


# ------------------------------------------------------------------------------------------------ intensities
def _some_inf() -> np.ndarray:
    data = head()
    data[10, 10, 9] = np.inf
    data[11, 10, 9] = -np.inf
    data[12, 10, 9] = np.nan
    return data


def _near_float_max() -> np.ndarray:
    data = head().astype(np.float64) / 140.0 * 3.0e38
    return np.clip(data, -3.0e38, 3.0e38).astype(np.float32)


def _slope(value: float, inter: float = 0.0) -> Callable[[nib.Nifti1Header], None]:
    def change(header: nib.Nifti1Header) -> None:
        header["scl_slope"] = value
        header["scl_inter"] = inter

    return change


def _int16_head() -> np.ndarray:
    return np.round(head()).astype(np.int16)


def _raw_int16(name: str, change: Callable[[nib.Nifti1Header], None]) -> Callable[[Path], Path]:
    return lambda folder: _raw_header_edit(folder / name, _int16_head(), change)


def _binary_mask() -> np.ndarray:
    return (head() > 0).astype(np.uint8)


def _label_image() -> np.ndarray:
    data = (head() > 0).astype(np.int16)
    data[8:12, 8:12, 6:10] = 2
    data[5:7, 5:7, 5:7] = 4
    return data


def _rgb(folder: Path) -> Path:
    rgb = np.zeros((20, 22, 18), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    grey = np.clip(head(), 0, 255).astype(np.uint8)
    for channel in ("R", "G", "B"):
        rgb[channel] = grey
    return save_nifti(folder / "rgb.nii.gz", rgb)


def _huge_slope(header: nib.Nifti1Header) -> None:
    header["scl_slope"] = 1e37
    header["scl_inter"] = 0.0


INTENSITIES = [
    Case("all_zeros", "intensities", _nifti("zeros.nii.gz", lambda: np.zeros((20, 22, 18), np.float32)), "error",
         "empty"),
    Case("all_nan", "intensities", _nifti("nan.nii.gz", lambda: np.full((20, 22, 18), np.nan, np.float32)), "error",
         "nan"),
    Case("some_inf", "intensities", _nifti("some_inf.nii.gz", _some_inf), "warning", "non-finite"),
    Case("near_float32_max", "intensities", _nifti("huge_values.nii.gz", _near_float_max), "error", "range"),
    Case("scl_slope_overflows", "intensities", _raw_int16("huge_slope.nii", _huge_slope), "error", "range"),
    # Slope 0 or NaN is the standard's "no scaling" (every BraTS and nibabel-written file has one): not worth a warning.
    Case("scl_slope_zero", "intensities", _raw_int16("slope0.nii", _slope(0.0)), "loads", ""),
    Case("scl_slope_nan", "intensities", _raw_int16("slope_nan.nii", _slope(float("nan"))), "loads", ""),
    Case("scl_slope_nan_with_intercept", "intensities", _raw_int16("slope_nan_inter.nii", _slope(float("nan"), 50.0)),
         "warning", "intercept"),
    Case("scl_inter_infinite", "intensities", _raw_int16("inter_inf.nii", _slope(2.0, float("inf"))), "error",
         "scl_inter"),
    Case("complex_data", "intensities",
         _nifti("complex.nii.gz", lambda: (head() + 1j * head(seed=2)).astype(np.complex64)), "error", "complex"),
    Case("rgb_data", "intensities", _rgb, "error", "rgb"),
    Case("binary_mask_as_scan", "intensities", _nifti("brain_mask.nii.gz", _binary_mask), "warning",
         "looks like a label image"),
    Case("label_image_as_scan", "intensities", _nifti("seg.nii.gz", _label_image), "warning",
         "looks like a label image"),
]


# ------------------------------------------------------------------------------------------------ DICOM
def _to_sitk(data: np.ndarray, affine: np.ndarray) -> object:
    import SimpleITK as sitk  # noqa: PLC0415

    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    lps = np.diag([-1.0, -1.0, 1.0])
    img = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)).astype(np.int16))
    img.SetSpacing(tuple(float(z) for z in zooms))
    img.SetDirection(tuple((lps @ affine[:3, :3] / zooms).ravel()))
    img.SetOrigin(tuple(lps @ affine[:3, 3]))
    return img


def write_dicom_series(data: np.ndarray, affine: np.ndarray, folder: Path, series_uid: str,
                       skip: tuple[int, ...] = (), description: str = "T1") -> Path:
    """Write int16 ``data`` on ``affine``'s grid as one DICOM file per slice along the third axis.

    Slices whose index is in ``skip`` are left out (a series with gaps).
    """
    import SimpleITK as sitk  # noqa: PLC0415

    img = _to_sitk(data, affine)
    folder.mkdir(parents=True, exist_ok=True)
    d = img.GetDirection()
    tags = {
        "0008|0060": "MR",
        "0008|103e": description,
        "0020|000d": "1.2.826.0.1.3680043.2.1125.7.1",
        "0020|000e": series_uid,
        "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        if k in skip:
            continue
        one = img[:, :, k]
        for tag, value in tags.items():
            one.SetMetaData(tag, value)
        one.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        one.SetMetaData("0020|0013", str(k + 1))
        one.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(one)
    return folder


def _dicom_two_series(folder: Path) -> Path:
    path = folder / "dicom_two_series"
    write_dicom_series(head((16, 14, 10)) * 10, AFFINE, path, "1.2.826.0.1.3680043.2.1125.7.100")
    write_dicom_series(head((16, 14, 10), seed=3) * 10, AFFINE, path, "1.2.826.0.1.3680043.2.1125.7.200",
                       skip=(0, 1, 2, 3, 4, 5), description="localiser")
    return path


def _dicom_two_series_same_size(folder: Path) -> Path:
    path = folder / "dicom_two_equal_series"
    write_dicom_series(head((16, 14, 10)) * 10, AFFINE, path, "1.2.826.0.1.3680043.2.1125.7.300")
    write_dicom_series(head((16, 14, 10), seed=3) * 10, AFFINE, path, "1.2.826.0.1.3680043.2.1125.7.400")
    return path


def _dicom_missing_slice(folder: Path) -> Path:
    path = folder / "dicom_missing_slice"
    write_dicom_series(head((16, 14, 10)) * 10, AFFINE, path, "1.2.826.0.1.3680043.2.1125.7.500", skip=(4,))
    return path


def _dicom_tilted_slice(folder: Path) -> Path:
    """One slice of the series written with another orientation (a localiser filed under the same series UID)."""
    import SimpleITK as sitk  # noqa: PLC0415

    path = folder / "dicom_tilted_slice"
    write_dicom_series(head((16, 14, 10)) * 10, AFFINE, path, "1.2.826.0.1.3680043.2.1125.7.600")
    victim = sorted(path.glob("*.dcm"))[5]
    image = sitk.ReadImage(str(victim))
    for key in image.GetMetaDataKeys():
        image.SetMetaData(key, image.GetMetaData(key))
    image.SetMetaData("0020|0037", "1\\0\\0\\0\\0.8660254\\-0.5")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(victim))
    writer.Execute(image)
    return path


def _dicom_garbage(folder: Path) -> Path:
    path = folder / "dicom_garbage"
    path.mkdir()
    for k in range(3):
        (path / f"IM{k:04d}.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    return path


DICOM = [
    Case("dicom_two_series", "dicom", _dicom_two_series, "warning", "the one with the most slices"),
    Case("dicom_two_equal_series", "dicom", _dicom_two_series_same_size, "warning", "the one with the most slices"),
    Case("dicom_missing_slice", "dicom", _dicom_missing_slice, "error", "missing slice"),
    Case("dicom_garbage_files", "dicom", _dicom_garbage, "error", "no dicom"),
    Case("dicom_tilted_slice", "dicom", _dicom_tilted_slice, "error", "orientation"),
]



# ------------------------------------------------------------------------------------------------ NRRD and MHA
def _nrrd_header_lies(folder: Path) -> Path:
    path = folder / "huge.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 30000 30000 30000\nencoding: raw\n\n" + b"\0" * 64)
    return path


def _nrrd_short(folder: Path) -> Path:
    path = folder / "short.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\n\n")
    return path


def _itk_image(name: str, make: Callable[[], object]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        import SimpleITK as sitk  # noqa: PLC0415

        path = folder / name
        sitk.WriteImage(make(), str(path))
        return path

    return build


def _sitk_2d() -> object:
    import SimpleITK as sitk  # noqa: PLC0415

    return sitk.GetImageFromArray(head()[:, :, 9])


def _sitk_vector() -> object:
    import SimpleITK as sitk  # noqa: PLC0415

    return sitk.GetImageFromArray(np.stack([head()] * 3, axis=-1), isVector=True)


def _metaimage(name: str, geometry: str) -> Callable[[Path], Path]:
    """A MetaImage file written by hand, so its header can say what ITK itself would never write."""
    def build(folder: Path) -> Path:
        path = folder / name
        header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                  f"ElementType = MET_FLOAT\n{geometry}ElementDataFile = LOCAL\n")
        path.write_bytes(header.encode() + np.transpose(head(), (2, 1, 0)).tobytes())
        return path

    return build


ITK = [
    Case("nrrd_header_lies", "loading", _nrrd_header_lies, "error", "cannot be read"),
    Case("mha_gigantic_dims", "geometry", _metaimage("huge.mha", "DimSize = 30000 30000 30000\n"), "error", "voxels"),
    Case("mha_zero_spacing", "geometry", _metaimage("flat_voxels.mha", "DimSize = 20 22 18\nElementSpacing = 0 1 1\n"),
         "error", "spacing"),
    Case("nrrd_garbage", "loading", _nrrd_short, "error", "cannot be read"),
    Case("mha_2d", "geometry", _itk_image("flat.mha", _sitk_2d), "error", "2-d"),
    Case("nrrd_vector", "intensities", _itk_image("vector.nrrd", _sitk_vector), "error", "components"),
    Case("mha_singular_direction", "geometry",
         _metaimage("singular.mha", "DimSize = 20 22 18\nTransformMatrix = 1 0 0 1 0 0 0 0 1\n"), "error", "direction"),
]

SCAN_CASES: list[Case] = [*LOADING, *GEOMETRY, *INTENSITIES, *DICOM, *ITK]
"""Every scan case; each is opened with ``load_volume`` (and by the CLI's ``infer`` and the viewer's Open)."""


# ------------------------------------------------------------------------------------------------ model folders
def make_model_folder(folder: Path, folds: tuple[int, ...] = (0, 1)) -> Path:
    """A tiny-preset model folder with untrained members (seeded weights), not calibrated: loads in a second."""
    import torch  # noqa: PLC0415

    from engine import checkpoints  # noqa: PLC0415
    from engine.card import TrainingSummary  # noqa: PLC0415
    from engine.config import get_preset  # noqa: PLC0415
    from engine.network import build_unet  # noqa: PLC0415

    preset = get_preset("tiny")
    checkpoints.init_model_folder(folder, preset, name="corpus")
    for fold in folds:
        torch.manual_seed(fold)
        state = build_unet(preset.unet, preset.preprocess.size).state_dict()
        checkpoints.save_member(folder, fold, state, TrainingSummary(steps=0), dtype=torch.float32)
    return folder


def _edit_json(folder: Path, change: Callable[[dict], None]) -> None:
    path = folder / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _model_case(change: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        model = make_model_folder(folder / "model")
        change(model)
        return model

    return build


def _missing_member(model: Path) -> None:
    (model / "member-1.safetensors").unlink()


def _changed_hash(model: Path) -> None:
    path = model / "member-0.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x5A
    path.write_bytes(bytes(raw))


def _pickled_member(model: Path) -> None:
    """A torch pickle in place of member 0, listed in model.json with its true hash (so only the format stops it)."""
    import hashlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    pickled = model / "member-0.pt"
    torch.save({"weight": torch.zeros(3)}, pickled)
    digest = hashlib.sha256(pickled.read_bytes()).hexdigest()
    (model / "member-0.safetensors").unlink()

    def change(meta: dict) -> None:
        meta["members"]["0"].update(file="member-0.pt", sha256=digest)

    _edit_json(model, change)


def _pickle_renamed(model: Path) -> None:
    """A torch pickle under the member's own name, with model.json's hash updated to match."""
    import hashlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    path = model / "member-0.safetensors"
    torch.save({"weight": torch.zeros(3)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_json(model, lambda meta: meta["members"]["0"].update(sha256=digest))


def _member_outside(model: Path) -> None:
    _edit_json(model, lambda meta: meta["members"]["0"].update(file="../elsewhere/member-0.safetensors"))


def _future_version(model: Path) -> None:
    _edit_json(model, lambda meta: meta.update(format_version=99))


def _text_version(model: Path) -> None:
    _edit_json(model, lambda meta: meta.update(format_version="one"))


def _drop(*keys: str) -> Callable[[Path], None]:
    def change(model: Path) -> None:
        def remove(meta: dict) -> None:
            for key in keys:
                meta.pop(key)

        _edit_json(model, remove)

    return change


def _member_without_hash(model: Path) -> None:
    _edit_json(model, lambda meta: meta["members"]["1"].pop("sha256"))


def _preset_without_unet(model: Path) -> None:
    _edit_json(model, lambda meta: meta["preset"].pop("unet"))


def _preset_unknown_key(model: Path) -> None:
    _edit_json(model, lambda meta: meta["preset"]["unet"].update(wings=2))


def _members_a_list(model: Path) -> None:
    _edit_json(model, lambda meta: meta.update(members=["member-0.safetensors"]))


def _model_json_array(model: Path) -> None:
    (model / "model.json").write_text("[1, 2, 3]")


def _model_json_truncated(model: Path) -> None:
    path = model / "model.json"
    path.write_text(path.read_text()[:100])


def _bad_calibration(model: Path) -> None:
    _edit_json(model, lambda meta: meta.update(calibration={"threshold": "high", "colour": 3}))


def _rewrite_member(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    """Member 0's tensors changed and saved again as valid safetensors, its hash in model.json updated to match."""
    def rewrite(model: Path) -> None:
        import hashlib  # noqa: PLC0415

        from safetensors.torch import load, save  # noqa: PLC0415

        path = model / "member-0.safetensors"
        raw = save(change(load(path.read_bytes())))
        path.write_bytes(raw)
        _edit_json(model, lambda meta: meta["members"]["0"].update(sha256=hashlib.sha256(raw).hexdigest()))

    return rewrite


def _nan_weights(tensors: dict) -> dict:
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * float("nan")
    return tensors


def _drop_a_tensor(tensors: dict) -> dict:
    tensors.pop(sorted(tensors)[0])
    return tensors


def _modality_list(model: Path) -> None:
    _edit_json(model, lambda meta: meta.update(modality=["t1"]))


def _unknown_sampler(model: Path) -> None:
    _edit_json(model, lambda meta: meta["preset"].update(default_sampler="euler"))


def _fold_eleven(model: Path) -> None:
    _edit_json(model, lambda meta: meta["members"].update({"11": meta["members"].pop("1")}))


def _model_is_a_file(folder: Path) -> Path:
    path = folder / "model"
    path.write_text("not a folder")
    return path


MODEL_CASES: list[Case] = [
    Case("model_missing", "model", lambda folder: folder / "no_model_here", "error", "not found"),
    Case("model_is_a_file", "model", _model_is_a_file, "error", "not found"),
    Case("model_no_json", "model", _model_case(lambda m: (m / "model.json").unlink()), "error", "no model.json"),
    Case("model_json_truncated", "model", _model_case(_model_json_truncated), "error", "unreadable"),
    Case("model_json_not_an_object", "model", _model_case(_model_json_array), "error", "not a condiff model"),
    Case("model_missing_member", "model", _model_case(_missing_member), "error", "member file missing"),
    Case("model_changed_hash", "model", _model_case(_changed_hash), "error", "sha256"),
    Case("model_pickled_member", "model", _model_case(_pickled_member), "error", "safetensors"),
    Case("model_pickle_renamed", "model", _model_case(_pickle_renamed), "error", "safetensors"),
    Case("model_member_outside_folder", "model", _model_case(_member_outside), "error", "file name"),
    Case("model_future_version", "model", _model_case(_future_version), "error", "newer condiff"),
    Case("model_version_not_a_number", "model", _model_case(_text_version), "error", "format_version"),
    Case("model_missing_preset", "model", _model_case(_drop("preset")), "error", "preset"),
    Case("model_missing_name", "model", _model_case(_drop("name")), "error", "name"),
    Case("model_missing_members", "model", _model_case(_drop("members")), "error", "members"),
    Case("model_member_without_hash", "model", _model_case(_member_without_hash), "error", "sha256"),
    Case("model_preset_without_unet", "model", _model_case(_preset_without_unet), "error", "preset"),
    Case("model_preset_unknown_key", "model", _model_case(_preset_unknown_key), "error", "preset"),
    Case("model_members_not_a_table", "model", _model_case(_members_a_list), "error", "members"),
    Case("model_bad_calibration", "model", _model_case(_bad_calibration), "error", "calibration"),
    Case("model_member_nan_weights", "model", _model_case(_rewrite_member(_nan_weights)), "error", "nan"),
    Case("model_member_misfits_network", "model", _model_case(_rewrite_member(_drop_a_tensor)), "error",
         "does not fit"),
    Case("model_fold_out_of_range", "model", _model_case(_fold_eleven), "error", "not a fold"),
    Case("model_modality_not_text", "model", _model_case(_modality_list), "error", "modality"),
    Case("model_unknown_default_sampler", "model", _model_case(_unknown_sampler), "error", "sampler"),
]


def by_name(cases: list[Case]) -> dict[str, Case]:
    """The cases keyed by name (names are unique)."""
    table = {case.name: case for case in cases}
    assert len(table) == len(cases), "case names must be unique"
    return table

"""Tests of engine.readers and engine.writers: reading every supported format onto RAS, and writing on a scan's own
grid."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.errors import OutputError, VolumeError
from engine.readers import load_mask, load_volume
from engine.volumes import Volume
from engine.writers import atomic_write_bytes, atomic_write_json, save_like

# One real scan per on-disk orientation: (path under the data folder, expected axis codes).
ORIENTED_SCANS = {
    "ixi-PSR": ("ixi-t1/val/IXI056-HH-1327_T1.nii.gz", ("P", "S", "R")),
    "brats-LPS": ("brats2018-dev/Brats18_2013_20_1/Brats18_2013_20_1_t1.nii.gz", ("L", "P", "S")),
    "ms-LAS": ("ms-lesjak/patient07/patient07_T1.nii.gz", ("L", "A", "S")),
    "stroke-RAS": ("stroke-rorden/T2.nii.gz", ("R", "A", "S")),
}
IXI_T1 = "ixi-t1/val/IXI056-HH-1327_T1.nii.gz"
IXI_MASK = "ixi-t1/val/IXI056-HH-1327_brainmask.nii.gz"


def _to_sitk(data: np.ndarray, affine: np.ndarray, pixel_type: type = np.float32) -> sitk.Image:
    """A SimpleITK image (LPS, z-y-x array) holding the same voxels at the same world positions as (data, affine)."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    lps = np.diag([-1.0, -1.0, 1.0])
    img = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)).astype(pixel_type))
    img.SetSpacing(tuple(float(z) for z in zooms))
    img.SetDirection(tuple((lps @ affine[:3, :3] / zooms).ravel()))
    img.SetOrigin(tuple(lps @ affine[:3, 3]))
    return img


def _write_dicom_series(img: sitk.Image, folder: Path, series_uid: str, n_slices: int | None = None) -> None:
    """Write ``img`` (int16) as one DICOM file per slice along its third axis."""
    folder.mkdir(parents=True, exist_ok=True)
    d = img.GetDirection()
    tags = {
        "0008|0060": "MR",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.7.1",
        "0020|000e": series_uid,
        "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n_slices or img.GetDepth()):
        one = img[:, :, k]
        for tag, value in tags.items():
            one.SetMetaData(tag, value)
        one.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        one.SetMetaData("0020|0013", str(k + 1))
        one.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(one)


def _sitk_world_ras(img: sitk.Image, index_xyz: tuple[int, int, int]) -> np.ndarray:
    """SimpleITK's own world position (converted to RAS) of a voxel given in (x, y, z) index order."""
    lps = np.asarray(img.TransformIndexToPhysicalPoint(tuple(int(i) for i in index_xyz)))
    return lps * np.array([-1.0, -1.0, 1.0])


def _assert_one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert str(path) in text
    assert "\n" not in text
    assert text.startswith(str(path))


# ----------------------------------------------------------------------------------------------------- reading


def test_tiny_volume_properties(tiny_volume: Path) -> None:
    vol = load_volume(tiny_volume)
    assert vol.shape == (16, 16, 8)
    assert vol.data.dtype == np.float32
    assert vol.affine.dtype == np.float64
    assert vol.zooms == pytest.approx((1.0, 1.0, 2.5))
    assert vol.axcodes == ("L", "A", "S")
    assert vol.source_format == "nifti"
    assert vol.path == tiny_volume
    assert float(vol.data.max()) == 100.0
    assert isinstance(vol.header, nib.Nifti1Header)


@pytest.mark.parametrize("name", sorted(ORIENTED_SCANS))
def test_real_scans_load_in_file_order(require_data: Path, name: str) -> None:
    rel, codes = ORIENTED_SCANS[name]
    vol = load_volume(require_data / rel)
    ref = nib.load(require_data / rel)
    assert vol.axcodes == codes
    assert vol.shape == ref.shape
    np.testing.assert_allclose(vol.affine, ref.affine)
    np.testing.assert_array_equal(vol.data, ref.get_fdata(dtype=np.float32))


def test_nrrd_and_mha_match_nifti(require_data: Path, tmp_path: Path) -> None:
    nifti = load_volume(require_data / IXI_T1)  # P S R on disk: a permuted, left-handed grid
    img = _to_sitk(nifti.data, nifti.affine)
    i, j, k = np.unravel_index(int(np.argmax(nifti.data)), nifti.shape)
    world = (nifti.affine @ [i, j, k, 1.0])[:3]
    for name, fmt in (("scan.nrrd", "nrrd"), ("scan.mha", "mha")):
        sitk.WriteImage(img, str(tmp_path / name))
        vol = load_volume(tmp_path / name)
        assert vol.source_format == fmt
        assert vol.shape == nifti.shape
        assert vol.axcodes == nifti.axcodes
        np.testing.assert_allclose(vol.affine, nifti.affine, atol=1e-4)
        np.testing.assert_array_equal(vol.data, nifti.data)
        # The brightest voxel sits at the same world position in both readings, and where SimpleITK puts it.
        np.testing.assert_allclose((vol.affine @ [i, j, k, 1.0])[:3], world, atol=1e-4)
        reread = sitk.ReadImage(str(tmp_path / name))
        np.testing.assert_allclose(_sitk_world_ras(reread, (i, j, k)), world, atol=1e-4)
        assert vol.data[i, j, k] == nifti.data.max()


def test_dicom_series_matches_nifti(require_data: Path, tmp_path: Path) -> None:
    # A crop of the stroke scan: a real, slightly oblique, right-handed grid (DICOM cannot store a left-handed one).
    full = load_volume(require_data / "stroke-rorden/T2.nii.gz")
    start = np.array([50, 60, 60])
    data = np.ascontiguousarray(full.data[50:90, 60:100, 60:72])
    affine = full.affine.copy()
    affine[:3, 3] = (full.affine @ [*start, 1.0])[:3]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "crop.nii.gz")
    nifti = load_volume(tmp_path / "crop.nii.gz")

    img = _to_sitk(nifti.data, nifti.affine, np.int16)
    _write_dicom_series(img, tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.7.2")
    vol = load_volume(tmp_path / "dicom")
    assert vol.source_format == "dicom"
    assert vol.shape == nifti.shape
    np.testing.assert_allclose(vol.affine, nifti.affine, atol=1e-3)
    np.testing.assert_array_equal(vol.data, nifti.data)
    i, j, k = np.unravel_index(int(np.argmax(nifti.data)), nifti.shape)
    np.testing.assert_allclose((vol.affine @ [i, j, k, 1.0])[:3], (full.affine @ [*(start + [i, j, k]), 1.0])[:3],
                               atol=1e-3)
    assert isinstance(vol.header, nib.Nifti1Header)
    assert int(vol.header["sform_code"]) == 1


def test_dicom_folder_with_two_series_reads_the_largest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(12, 10, 6)).astype(np.float32)
    img = _to_sitk(data, np.diag([-0.9, -0.9, 3.0, 1.0]), np.int16)
    _write_dicom_series(img, tmp_path, "1.2.826.0.1.3680043.2.1125.7.100")
    _write_dicom_series(img, tmp_path, "1.2.826.0.1.3680043.2.1125.7.200", n_slices=3)
    with caplog.at_level(logging.WARNING, logger="engine.readers"):
        vol = load_volume(tmp_path)
    assert vol.shape == (12, 10, 6)
    np.testing.assert_array_equal(vol.data, data)
    assert "2 DICOM series" in caplog.text


def test_singleton_fourth_dimension_is_squeezed(tmp_path: Path) -> None:
    data = np.zeros((8, 9, 10, 1), dtype=np.int16)
    data[2:5, 3:6, 4:7, 0] = 7
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "v4.nii.gz")
    vol = load_volume(tmp_path / "v4.nii.gz")
    assert vol.shape == (8, 9, 10)
    assert float(vol.data.sum()) == 7 * 27


def test_partial_nan_is_zeroed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = np.ones((8, 8, 8), dtype=np.float32)
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = 5.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    with caplog.at_level(logging.WARNING, logger="engine.readers"):
        vol = load_volume(tmp_path / "nan.nii")
    assert vol.data[0, 0, 0] == 0.0
    assert np.isfinite(vol.data).all()
    assert "non-finite" in caplog.text


def _bad_inputs(folder: Path) -> dict[str, Path]:
    eye = np.eye(4)
    paths: dict[str, Path] = {}

    def save(name: str, data: np.ndarray) -> None:
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, eye), paths[name])

    save("two_d", np.arange(64, dtype=np.float32).reshape(8, 8))
    save("four_d", np.arange(8 * 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 8, 3))
    save("single_slice", np.arange(64, dtype=np.float32).reshape(8, 8, 1))
    save("all_zero", np.zeros((8, 8, 8), dtype=np.float32))
    save("all_equal", np.full((8, 8, 8), 7.0, dtype=np.float32))
    save("nan_only", np.full((8, 8, 8), np.nan, dtype=np.float32))
    good = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
    save("good", good)
    raw = paths.pop("good").read_bytes()
    paths["truncated_gzip"] = folder / "truncated_gzip.nii.gz"
    paths["truncated_gzip"].write_bytes(raw[: len(raw) // 2])
    paths["not_gzip"] = folder / "not_gzip.nii.gz"
    paths["not_gzip"].write_bytes(b"this is not a gzip stream at all" * 20)
    plain = gzip.decompress(raw)
    paths["truncated_nii"] = folder / "truncated_nii.nii"
    paths["truncated_nii"].write_bytes(plain[: len(plain) - 1000])
    paths["garbage_nrrd"] = folder / "garbage.nrrd"
    paths["garbage_nrrd"].write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\n\n")
    paths["unsupported"] = folder / "scan.txt"
    paths["unsupported"].write_text("hello")
    paths["missing"] = folder / "does_not_exist.nii.gz"
    paths["empty_folder"] = folder / "empty_folder"
    paths["empty_folder"].mkdir()
    return paths


BAD_INPUTS = ["two_d", "four_d", "single_slice", "all_zero", "all_equal", "nan_only", "truncated_gzip", "not_gzip",
              "truncated_nii", "garbage_nrrd", "unsupported", "missing", "empty_folder"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_inputs_raise_one_line_volume_error(tmp_path: Path, kind: str) -> None:
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(VolumeError) as info:
        load_volume(path)
    _assert_one_line_naming(info.value, path)


# ------------------------------------------------------------------------------------------------------- masks


def test_load_mask_on_real_pair(require_data: Path) -> None:
    vol = load_volume(require_data / IXI_T1)
    mask = load_mask(require_data / IXI_MASK, vol)
    assert mask.dtype == np.bool_
    assert mask.shape == vol.shape
    # The brain is a sizeable, but not dominant, part of a 2 mm head volume.
    assert 0.05 < mask.mean() < 0.5
    assert vol.data[mask].mean() > vol.data[~mask].mean()


def test_load_mask_labels_and_probabilities(tiny_volume: Path, tmp_path: Path) -> None:
    vol = load_volume(tiny_volume)
    labels = np.zeros(vol.shape, dtype=np.uint8)
    labels[1, 1, 1], labels[2, 2, 2], labels[3, 3, 3] = 1, 2, 4
    nib.save(nib.Nifti1Image(labels, vol.affine), tmp_path / "labels.nii.gz")
    assert load_mask(tmp_path / "labels.nii.gz", vol).sum() == 3
    prob = np.zeros(vol.shape, dtype=np.float32)
    prob[0, 0, 0], prob[0, 0, 1] = 0.3, 0.7
    nib.save(nib.Nifti1Image(prob, vol.affine), tmp_path / "prob.nii.gz")
    mask = load_mask(tmp_path / "prob.nii.gz", vol)
    assert mask.sum() == 1
    assert mask[0, 0, 1]
    nib.save(nib.Nifti1Image(np.zeros(vol.shape, np.uint8), vol.affine), tmp_path / "empty.nii.gz")
    assert not load_mask(tmp_path / "empty.nii.gz", vol).any()


@pytest.mark.parametrize(("shape", "shift_mm", "ok"), [
    ((16, 16, 8), 0.0, True),
    ((16, 16, 8), 1e-5, True),
    ((16, 16, 8), 0.01, False),
    ((16, 16, 9), 0.0, False),
])
def test_load_mask_checks_the_grid(tiny_volume: Path, tmp_path: Path, shape: tuple[int, int, int],
                                   shift_mm: float, ok: bool) -> None:
    vol = load_volume(tiny_volume)
    affine = vol.affine.copy()
    affine[0, 3] += shift_mm
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, dtype=np.uint8), affine), path)
    if ok:
        assert load_mask(path, vol).all()
    else:
        with pytest.raises(VolumeError) as info:
            load_mask(path, vol)
        _assert_one_line_naming(info.value, path)


# ------------------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("name", sorted(ORIENTED_SCANS))
def test_save_like_round_trip_real_scans(require_data: Path, tmp_path: Path, name: str) -> None:
    rel, codes = ORIENTED_SCANS[name]
    vol = load_volume(require_data / rel)
    original = nib.load(require_data / rel)
    values = vol.data * np.float32(0.5) - np.float32(3.0)
    out = save_like(values, vol, tmp_path / "out.nii.gz")
    back = nib.load(out)
    assert back.shape == vol.shape
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-6)
    assert nib.aff2axcodes(back.affine) == codes
    assert int(back.header["sform_code"]) == int(original.header["sform_code"])
    assert int(back.header["qform_code"]) == int(original.header["qform_code"])
    np.testing.assert_allclose(back.header.get_sform(), original.header.get_sform(), atol=1e-6)
    np.testing.assert_allclose(back.header.get_qform(), original.header.get_qform(), atol=1e-6)
    assert back.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), values)
    assert back.header["cal_max"] == pytest.approx(float(values.max()))
    assert back.header["cal_min"] == pytest.approx(float(values.min()))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_save_like_mask_header(tiny_volume: Path, tmp_path: Path) -> None:
    vol = load_volume(tiny_volume)
    out = save_like(vol.data > 50, vol, tmp_path / "mask.nii", is_mask=True)
    back = nib.load(out)
    assert back.get_data_dtype() == np.uint8
    assert back.header.get_intent()[0] == "label"
    with out.open("rb") as fh:
        raw = nib.Nifti1Header.from_fileobj(fh)
    assert float(raw["scl_slope"]) == 1.0
    assert float(raw["scl_inter"]) == 0.0
    data = np.asanyarray(back.dataobj)
    assert set(np.unique(data).tolist()) == {0, 1}
    assert int(data.sum()) == int((vol.data > 50).sum())
    # The mask reads back as the same mask on the same grid.
    np.testing.assert_array_equal(load_mask(out, vol), vol.data > 50)


def test_save_like_integer_dtype_rounds_and_clips(tiny_volume: Path, tmp_path: Path) -> None:
    vol = load_volume(tiny_volume)
    values = np.zeros(vol.shape, dtype=np.float32)
    values[0, 0, 0], values[0, 0, 1], values[0, 0, 2] = 2.6, 300.0, -4.0
    back = np.asanyarray(nib.load(save_like(values, vol, tmp_path / "u8.nii.gz", dtype=np.uint8)).dataobj)
    assert back.dtype == np.uint8
    assert back[0, 0, :3].tolist() == [3, 255, 0]


def test_save_like_from_non_nifti_reference(require_data: Path, tmp_path: Path) -> None:
    nifti = load_volume(require_data / IXI_T1)
    sitk.WriteImage(_to_sitk(nifti.data, nifti.affine), str(tmp_path / "scan.mha"))
    vol = load_volume(tmp_path / "scan.mha")
    back = nib.load(save_like(vol.data, vol, tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(back.affine, nifti.affine, atol=1e-4)
    assert int(back.header["sform_code"]) == 1
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), nifti.data)


def test_save_like_refuses_bad_requests(tiny_volume: Path, tmp_path: Path) -> None:
    vol = load_volume(tiny_volume)
    before = tiny_volume.read_bytes()
    with pytest.raises(OutputError) as info:
        save_like(vol.data, vol, tiny_volume)
    _assert_one_line_naming(info.value, tiny_volume)
    assert tiny_volume.read_bytes() == before
    with pytest.raises(VolumeError) as info:
        save_like(np.zeros((16, 16, 7)), vol, tmp_path / "wrong.nii.gz")
    _assert_one_line_naming(info.value, tmp_path / "wrong.nii.gz")
    with pytest.raises(OutputError):
        save_like(vol.data, vol, tmp_path / "out.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "out.nii.gz"
    with pytest.raises(OutputError) as info:
        save_like(vol.data, vol, target)
    _assert_one_line_naming(info.value, target)


def test_failed_write_leaves_nothing(tiny_volume: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = load_volume(tiny_volume)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError) as info:
        save_like(vol.data, vol, out_dir / "map.nii.gz")
    _assert_one_line_naming(info.value, out_dir / "map.nii.gz")
    assert list(out_dir.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError):
        atomic_write_bytes(target, b"new contents")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_json_round_trip(tmp_path: Path) -> None:
    obj = {"name": "scan", "values": [1, 2.5], "nested": {"ok": True}}
    path = atomic_write_json(tmp_path / "sub" / "x.json", obj)
    assert json.loads(path.read_text(encoding="utf-8")) == obj
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_volume_built_in_memory_can_be_saved(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.array([[0.0, 0.0, 1.5, 10.0], [-2.0, 0.0, 0.0, 20.0], [0.0, 1.0, 0.0, -5.0], [0, 0, 0, 1]])
    vol = Volume(data=data, affine=affine, header=nib.Nifti1Header(), path=None, source_format="nifti")
    back = nib.load(save_like(data, vol, tmp_path / "mem.nii.gz"))
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)

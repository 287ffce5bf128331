"""Geometry round trips through files: write a scan, load it, analyse it, export, reload the outputs.

One synthetic head per case, each on another grid: the four axis orders LPS, LAS, RAS and PSR, an oblique grid,
anisotropic 0.5 x 0.5 x 5 mm voxels, NIfTI headers with only an sform or only a qform, and DICOM (axial and oblique),
NRRD and MHA files. For each:

* the loaded volume puts a marked voxel at the world position it was written at;
* analysed with the tiny trained model and exported, every output reloads with the scan's shape, affine (1e-5), axis
  codes and (NIfTI) sform/qform codes, and the restoration keeps the marked voxel, outside the brain, in its place;
* analysed with an oracle network that removes small bright blobs (tests/engine/test_ensemble.py), the exported
  anomaly map, reloaded, lights up where a blob was put.

The in-memory mapping is tested in test_preprocess.py and test_ensemble.py; these tests add the files on both ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import engine
from engine.volumes import Volume
from tests.bad_inputs import write_dicom_series

MARK = -50.0
"""Value of the marked voxel: below zero, so the analysis treats it as background and keeps it."""
BLOB_RADIUS_MM = 5.0


def _rotation(degrees: float, axis: tuple[float, float, float]) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _grid(columns: np.ndarray, zooms: tuple[float, float, float], extent_mm: float = 130.0
          ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An affine whose voxel axes point along ``columns`` (unit vectors, RAS) with these zooms, centred on the
    origin, and the shape that covers ``extent_mm`` along every axis."""
    shape = tuple(int(np.ceil(extent_mm / z)) for z in zooms)
    affine = np.eye(4)
    affine[:3, :3] = columns @ np.diag(zooms)
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine, shape  # type: ignore[return-value]


LPS = np.diag([-1.0, -1.0, 1.0])
LAS = np.diag([-1.0, 1.0, 1.0])
RAS = np.eye(3)
PSR = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # columns: P, S, R
OBLIQUE = _rotation(20.0, (1.0, 1.0, 0.5)) @ LAS


def _head(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A smooth textured ellipsoid "brain" (world radii 45, 55, 40 mm) on a zero background, float32."""
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    world = (affine[:3, :3] @ idx + affine[:3, 3:]).reshape(3, *shape)
    inside = (world[0] / 45) ** 2 + (world[1] / 55) ** 2 + (world[2] / 40) ** 2 <= 1
    texture = 100 + 20 * np.sin(world[0] / 9) * np.cos(world[1] / 11) + 10 * np.cos(world[2] / 7)
    return np.where(inside, texture, 0.0).astype(np.float32)


def _mark(data: np.ndarray) -> tuple[int, int, int]:
    """Put the marked voxel near a corner (outside the head); returns its index."""
    index = (2, 3, 1)
    data[index] = MARK
    return index


def _world(affine: np.ndarray, index: np.ndarray | tuple[int, ...]) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


# ------------------------------------------------------------------------------------------------ writers
def _nifti(sform: str | None, qform: str | None) -> Callable[[np.ndarray, np.ndarray, Path], Path]:
    def write(data: np.ndarray, affine: np.ndarray, folder: Path) -> Path:
        img = nib.Nifti1Image(data, affine)
        header = img.header
        header.set_xyzt_units("mm", "sec")
        if sform:
            header.set_sform(affine, code=sform)
        else:
            header.set_sform(np.eye(4), code=0)
        if qform:
            header.set_qform(affine, code=qform)
        else:
            header.set_qform(np.eye(4), code=0)
        path = folder / "scan_T1w.nii.gz"
        nib.save(nib.Nifti1Image(data, None, header), path)
        return path

    return write


def _to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)))
    img.SetSpacing(tuple(float(z) for z in zooms))
    img.SetDirection(tuple((LPS @ affine[:3, :3] / zooms).ravel()))
    img.SetOrigin(tuple(LPS @ affine[:3, 3]))
    return img


def _itk(suffix: str) -> Callable[[np.ndarray, np.ndarray, Path], Path]:
    def write(data: np.ndarray, affine: np.ndarray, folder: Path) -> Path:
        path = folder / f"scan_T1w{suffix}"
        sitk.WriteImage(_to_sitk(data, affine), str(path))
        return path

    return write


def _dicom(data: np.ndarray, affine: np.ndarray, folder: Path) -> Path:
    return write_dicom_series(np.round(data), affine, folder / "series", "1.2.826.0.1.3680043.2.1125.9.1")


@dataclass(frozen=True)
class Case:
    columns: np.ndarray
    zooms: tuple[float, float, float]
    write: Callable[[np.ndarray, np.ndarray, Path], Path]
    codes: tuple[str, str, str] | None = None  # expected axis codes of the file's own grid


BOTH = _nifti("scanner", "scanner")
CASES = {
    "LPS": Case(LPS, (2.0, 2.0, 2.0), BOTH, ("L", "P", "S")),
    "LAS": Case(LAS, (2.0, 2.0, 2.0), BOTH, ("L", "A", "S")),
    "RAS": Case(RAS, (2.0, 2.0, 2.0), BOTH, ("R", "A", "S")),
    "PSR": Case(PSR, (2.0, 2.0, 2.0), BOTH, ("P", "S", "R")),
    "oblique": Case(OBLIQUE, (2.0, 2.2, 1.8), BOTH),
    "anisotropic": Case(LAS, (0.5, 0.5, 5.0), BOTH, ("L", "A", "S")),
    "sform-only": Case(OBLIQUE, (2.0, 2.0, 2.0), _nifti("aligned", None)),
    "qform-only": Case(PSR, (2.0, 2.0, 2.0), _nifti(None, "scanner"), ("P", "S", "R")),
    "DICOM": Case(LPS, (1.8, 1.8, 2.5), _dicom),
    "DICOM-oblique": Case(OBLIQUE, (1.8, 1.8, 2.5), _dicom),
    "NRRD": Case(OBLIQUE, (2.0, 2.0, 2.0), _itk(".nrrd")),
    "MHA": Case(PSR, (2.0, 2.0, 2.0), _itk(".mha"), ("P", "S", "R")),
}


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> engine.Ensemble:
    return engine.load_ensemble(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> engine.Ensemble:
    """An ensemble whose network restores the 5 x 5 median of its condition: it removes small bright blobs."""
    import torch

    from engine.card import read_card
    from engine.checkpoints import init_model_folder
    from engine.config import get_preset
    from engine.ensemble import Ensemble
    from tests.engine.test_ensemble import MedianOracle

    folder = tmp_path_factory.mktemp("oracle")
    init_model_folder(folder, get_preset("small"), name="oracle")
    return Ensemble(folder, read_card(folder), [(0, MedianOracle())], torch.device("cpu"))


def _written(tmp_path: Path, name: str) -> tuple[Path, np.ndarray, tuple[int, int, int], np.ndarray]:
    """Write the case's head with its marked voxel; returns the path, the affine, the marked index and its world
    position."""
    case = CASES[name]
    affine, shape = _grid(case.columns, case.zooms)
    data = _head(affine, shape)
    marked = _mark(data)
    folder = tmp_path / "in"
    folder.mkdir()
    return case.write(data, affine, folder), affine, marked, _world(affine, marked)


def _marked_world(volume_data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    (index,) = np.argwhere(volume_data == MARK)
    return _world(affine, index)


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_analyse_export_reload(tmp_path: Path, tiny: engine.Ensemble, name: str) -> None:
    path, affine, _marked, marked_mm = _written(tmp_path, name)
    volume = engine.load_volume(path)
    np.testing.assert_allclose(_marked_world(volume.data, volume.affine), marked_mm, atol=1e-3)
    if CASES[name].codes is not None:
        assert volume.axcodes == CASES[name].codes
    if path.name.endswith(".nii.gz"):  # NIfTI: the file's own grid, read the way nibabel reads it
        np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    result = tiny.analyse(volume, settings=engine.AnalysisSettings(steps=1))
    paths = engine.write_outputs(volume, result, tmp_path / "out", threshold=0.3)
    source = nib.load(path) if path.name.endswith(".nii.gz") else None
    for kind in ("mask", "map", "spread", "restored"):
        out = nib.load(paths[kind])
        assert out.shape == volume.shape, kind
        np.testing.assert_allclose(out.affine, volume.affine, atol=1e-5)
        assert nib.aff2axcodes(out.affine) == volume.axcodes
        if source is not None:
            assert int(out.header["sform_code"]) == int(source.header["sform_code"])
            assert int(out.header["qform_code"]) == int(source.header["qform_code"])
            np.testing.assert_allclose(out.affine, source.affine, atol=1e-5)
    # The restoration keeps everything outside the brain, the marked voxel too, where it was.
    restored = engine.load_volume(paths["restored"])
    assert restored.shape == volume.shape
    np.testing.assert_allclose(restored.affine, volume.affine, atol=1e-5)
    np.testing.assert_allclose(_marked_world(restored.data, restored.affine), marked_mm, atol=1e-3)
    mask = nib.load(paths["mask"])
    np.testing.assert_array_equal(np.asarray(mask.dataobj) > 0, result.anomaly_map >= 0.3)


def _blob(volume: Volume, centre_mm: np.ndarray) -> Volume:
    idx = np.indices(volume.shape).reshape(3, -1).astype(np.float64)
    world = (volume.affine[:3, :3] @ idx + volume.affine[:3, 3:]).reshape(3, *volume.shape)
    ball = np.linalg.norm(world - centre_mm[:, None, None, None], axis=0) <= BLOB_RADIUS_MM
    data = volume.data.copy()
    data[ball] = 250.0
    return Volume(data, volume.affine, volume.header, volume.path, volume.source_format)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_blob_lights_up_the_exported_map_where_it_was_put(tmp_path: Path, oracle: engine.Ensemble, name: str) -> None:
    path, _affine, _marked, _marked_mm = _written(tmp_path, name)
    volume = engine.load_volume(path)
    centre_mm = np.array([12.0, 8.0, 6.0])  # inside the brain, off every axis
    blobbed = _blob(volume, centre_mm)
    settings = engine.AnalysisSettings(steps=1, slice_stride=1)
    axis = engine.axial_axis(volume.affine)
    centre_index = np.linalg.inv(volume.affine) @ [*centre_mm, 1.0]
    reach = int(np.ceil(3 * BLOB_RADIUS_MM / volume.zooms[axis]))
    near = [k for k in range(int(round(centre_index[axis])) - reach, int(round(centre_index[axis])) + reach + 1)
            if 0 <= k < volume.shape[axis]]
    maps = {}
    for label, scan in (("with", blobbed), ("without", volume)):
        result = oracle.analyse(scan, settings=settings, slices=near)
        out = engine.write_outputs(scan, result, tmp_path / label, threshold=0.3, include=("map",))
        reloaded = nib.load(out["map"])
        np.testing.assert_allclose(reloaded.affine, volume.affine, atol=1e-5)
        maps[label] = np.asarray(reloaded.dataobj, dtype=np.float32)
    # The blob's effect on the exported map (1 - SSIM over an 11-pixel window, so shaped by the anatomy around it)
    # is centred on the blob, within 2.5 model pixels (3 mm each), as in memory (test_ensemble.py).
    effect = np.clip(maps["with"] - maps["without"], 0, None)
    assert effect.max() > 0.05
    hot = effect > 0.5 * effect.max()
    weights = effect[hot]
    found = _world(volume.affine, (np.argwhere(hot) * weights[:, None]).sum(0) / weights.sum())
    assert np.linalg.norm(found - centre_mm) < 7.5, (found, centre_mm)

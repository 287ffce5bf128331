"""Tests of engine.preprocess: native volume <-> model space geometry and intensities."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from engine.config import PreprocessSpec
from engine.errors import VolumeError
from engine.preprocess import (
    ModelSpace,
    axial_axis,
    brain_slice_fraction,
    fill_holes,
    foreground_mask,
    from_model_space,
    to_model_space,
)
from engine.readers import load_mask, load_volume
from engine.volumes import Volume
from engine.writers import save_like

# One real scan per on-disk orientation: (scan, brain mask or None, native axial axis).
REAL_SCANS = {
    "ixi-PSR": ("ixi-t1/val/IXI056-HH-1327_T1.nii.gz", "ixi-t1/val/IXI056-HH-1327_brainmask.nii.gz", 1),
    "brats-LPS": ("brats2018-dev/Brats18_2013_20_1/Brats18_2013_20_1_t1.nii.gz", None, 2),
    "ms-LAS": ("ms-lesjak/patient07/patient07_T1.nii.gz", None, 2),
    "stroke-RAS": ("stroke-rorden/T2.nii.gz", None, 2),
}
SPEC = PreprocessSpec(size=64, spacing_mm=3.0)


def _volume_like(vol: Volume, data: np.ndarray, affine: np.ndarray | None = None) -> Volume:
    affine = vol.affine if affine is None else affine
    return Volume(data=data.astype(np.float32), affine=affine, header=nib.Nifti1Image(data, affine).header,
                  path=vol.path, source_format=vol.source_format)


def _oblique_volume() -> Volume:
    """A synthetic head: voxel axes roughly A, I, L (rotated 20 degrees), anisotropic voxels, ellipsoid brain."""
    shape = (64, 56, 48)
    zooms = np.array([1.5, 2.0, 1.8])
    axis = np.array([1.0, 1.0, 0.5]) / np.linalg.norm([1.0, 1.0, 0.5])
    angle = np.deg2rad(20.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    perm = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: A, I, L
    affine = np.eye(4)
    affine[:3, :3] = rot @ perm @ np.diag(zooms)
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    idx = np.indices(shape).reshape(3, -1)
    world = (affine[:3, :3] @ idx + affine[:3, 3:]).reshape(3, *shape)
    inside = (world[0] / 35) ** 2 + (world[1] / 42) ** 2 + (world[2] / 30) ** 2 <= 1
    texture = 100 + 30 * np.sin(world[0] / 5) * np.cos(world[1] / 7) + 10 * np.cos(world[2] / 4)
    data = np.where(inside, texture, 0.0).astype(np.float32)
    return Volume(data=data, affine=affine, header=nib.Nifti1Image(data, affine).header, path=Path("oblique.nii"),
                  source_format="nifti")


def _load(data_dir: Path, name: str) -> tuple[Volume, np.ndarray | None]:
    rel, mask_rel, _ = REAL_SCANS[name]
    vol = load_volume(data_dir / rel)
    return vol, (load_mask(data_dir / mask_rel, vol) if mask_rel else None)


def _crop(vol: Volume, mask: np.ndarray | None, half_mm: float = 45.0) -> tuple[Volume, np.ndarray | None]:
    """A sub-volume of about 2 * half_mm around the brain centre, same orientation (keeps the tests fast)."""
    brain = mask if mask is not None else foreground_mask(vol.data)
    centre = np.array([np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != ax))).mean()
                       for ax in range(3)])
    half = np.ceil(half_mm / np.array(vol.zooms)).astype(int)
    lo = np.maximum(np.round(centre).astype(int) - half, 0)
    hi = np.minimum(lo + 2 * half, vol.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    affine = vol.affine.copy()
    affine[:3, 3] = (vol.affine @ [*lo, 1.0])[:3]
    return _volume_like(vol, np.ascontiguousarray(vol.data[box]), affine), (None if mask is None else mask[box])


def _world_of_voxels(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).reshape(3, *shape)


def _brain_centre_world(vol: Volume, mask: np.ndarray | None) -> np.ndarray:
    brain = mask if mask is not None else foreground_mask(vol.data)
    return (vol.affine @ [*np.argwhere(brain).mean(axis=0), 1.0])[:3]


def _weighted_centroid_world(weights: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(weights > 0)
    w = weights[weights > 0].astype(np.float64)
    return (affine @ [*(idx * w[:, None]).sum(axis=0) / w.sum(), 1.0])[:3]


def _cases(data_dir: Path, name: str) -> tuple[Volume, np.ndarray | None]:
    if name == "oblique":
        return _oblique_volume(), None
    return _load(data_dir, name)


ALL_CASES = [*sorted(REAL_SCANS), "oblique"]


# ------------------------------------------------------------------------------------------- geometry round trip


@pytest.mark.parametrize("name", ALL_CASES)
def test_cube_round_trip_lands_on_the_native_grid(require_data: Path, tmp_path: Path, name: str) -> None:
    vol, mask = _cases(require_data, name)
    vol, mask = _crop(vol, mask)
    centre = _brain_centre_world(vol, mask)
    world = _world_of_voxels(vol.affine, vol.shape)
    # A 12 mm cube (in world axes) 10 mm right, 8 mm anterior, 5 mm superior of the brain centre.
    offset = world - (centre + np.array([10.0, 8.0, 5.0]))[:, None, None, None]
    cube = (np.abs(offset) <= 6.0).all(axis=0)
    assert cube.sum() > 20
    data = vol.data.copy()
    data[cube] = 3.0 * float(vol.data.max())
    cube_vol = _volume_like(vol, data)
    ms = to_model_space(cube_vol, SPEC, mask)
    model_cube = (ms.slices > 0.5).astype(np.float32)
    assert model_cube.sum() > 0
    back = from_model_space(model_cube, ms)
    assert back.shape == vol.shape
    err = np.linalg.norm(_weighted_centroid_world(back, vol.affine) - _weighted_centroid_world(cube, vol.affine))
    assert err <= SPEC.spacing_mm
    # The native-space map is as large as the cube (not smeared or shrunk by more than the model pixel rim).
    assert 0.5 < back.sum() / cube.sum() < 2.0
    # Written with save_like, it lies on the scan's own grid.
    out = nib.load(save_like(back, cube_vol, tmp_path / "cube.nii.gz"))
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-5)


@pytest.mark.parametrize("name", ALL_CASES)
def test_model_space_is_ras(require_data: Path, name: str) -> None:
    """Blobs 25 mm to each side of the brain centre land where the documented convention says."""
    vol, mask = _cases(require_data, name)
    vol, mask = _crop(vol, mask)
    centre = _brain_centre_world(vol, mask)
    world = _world_of_voxels(vol.affine, vol.shape)

    def blob_position(direction: np.ndarray) -> np.ndarray:
        """(n, row, col) centroid of a 10 mm blob at centre + 25 mm * direction, and its world z."""
        target = centre + 25.0 * direction
        blob = np.linalg.norm(world - target[:, None, None, None], axis=0) <= 5.0
        data = vol.data.copy()
        data[blob] = 3.0 * float(vol.data.max())
        ms = to_model_space(_volume_like(vol, data), SPEC, mask)
        pos = np.argwhere(ms.slices > 0.5).mean(axis=0)
        native_k = np.interp(pos[0], np.arange(len(ms)), ms.native_index.astype(float))
        return np.array([*pos, native_k])

    step = 50.0 / SPEC.spacing_mm  # expected distance between the two blobs, in model pixels
    # The oblique volume is processed in its closest canonical orientation, 20 degrees off the world axes.
    tilt = np.deg2rad(20.0) if name == "oblique" else 0.0
    along_tol, across_tol = 1.5 + step * (1 - np.cos(tilt)), 1.5 + step * np.sin(tilt)
    right, left = blob_position(np.array([1.0, 0, 0])), blob_position(np.array([-1.0, 0, 0]))
    assert right[2] < left[2]  # columns run from the patient's right to left
    assert left[2] - right[2] == pytest.approx(step, abs=along_tol)
    assert abs(left[1] - right[1]) < across_tol
    anterior, posterior = blob_position(np.array([0, 1.0, 0])), blob_position(np.array([0, -1.0, 0]))
    assert anterior[1] < posterior[1]  # rows run from anterior to posterior
    assert posterior[1] - anterior[1] == pytest.approx(step, abs=along_tol)
    assert abs(posterior[2] - anterior[2]) < across_tol
    superior, inferior = blob_position(np.array([0, 0, 1.0])), blob_position(np.array([0, 0, -1.0]))
    assert superior[0] > inferior[0]  # model slices run from inferior to superior
    slice_mm = vol.zooms[axial_axis(vol.affine)]
    assert abs(superior[3] - inferior[3]) * slice_mm == pytest.approx(50.0, abs=1.5 * slice_mm + 2.0)


@pytest.mark.parametrize("name", sorted(REAL_SCANS))
def test_axial_axis_of_real_scans(require_data: Path, name: str) -> None:
    vol = load_volume(require_data / REAL_SCANS[name][0])
    assert axial_axis(vol.affine) == REAL_SCANS[name][2]


def test_axial_axis_of_oblique_and_flipped() -> None:
    assert axial_axis(_oblique_volume().affine) == 1
    assert axial_axis(np.diag([1.0, -1.0, -3.0, 1.0])) == 2
    assert axial_axis(np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])) == 0


# --------------------------------------------------------------------------------------------- model space content


def test_brats_t1_at_small_preset(require_data: Path) -> None:
    vol, _ = _load(require_data, "brats-LPS")
    ms = to_model_space(vol, SPEC)
    assert isinstance(ms, ModelSpace)
    assert ms.slices.shape == (len(ms), 64, 64)
    assert ms.slices.dtype == np.float32
    assert ms.brain.dtype == np.bool_
    assert 100 < len(ms) <= vol.shape[2]
    assert ms.slices.min() >= 0.0
    assert ms.slices.max() <= 1.0
    assert ms.slices.max() > 0.5
    assert not ms.cropped
    # The brain's bounding box is inside the canvas, with a margin, and roughly centred.
    rows, cols = np.flatnonzero(ms.brain.any(axis=(0, 2))), np.flatnonzero(ms.brain.any(axis=(0, 1)))
    assert rows[0] > 0
    assert rows[-1] < 63
    assert cols[0] > 0
    assert cols[-1] < 63
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1.0
    assert abs((cols[0] + cols[-1]) / 2 - 31.5) <= 1.0
    # Zero outside the brain, and the kept slices all have enough brain.
    assert not ms.slices[~ms.brain].any()
    assert (ms.brain_fraction >= SPEC.min_brain_fraction).all()
    np.testing.assert_allclose(ms.brain_fraction, brain_slice_fraction(ms.brain))
    assert ms.scale == pytest.approx(float(vol.data.max()))
    # Native slice indices are consecutive along the S axis (LPS: not flipped).
    assert (np.diff(ms.native_index) == 1).all()


def test_identity_when_spacing_matches(require_data: Path) -> None:
    vol, mask = _load(require_data, "ixi-PSR")  # 2 mm isotropic, 120 x 120 x 90
    spec = PreprocessSpec(size=128, spacing_mm=2.0, min_brain_fraction=0.0)
    ms = to_model_space(vol, spec, mask, keep_empty=True)
    assert len(ms) == vol.shape[ms.slice_axis]
    back = from_model_space(ms.slices, ms) * ms.scale
    stripped = np.where(mask, vol.data, 0.0)
    np.testing.assert_allclose(back, stripped, rtol=1e-5, atol=1e-5 * ms.scale)
    brain_back = from_model_space(ms.brain.astype(np.float32), ms, order=0)
    np.testing.assert_array_equal(brain_back > 0.5, mask)


def test_identity_on_oblique_and_tiny(tiny_volume: Path) -> None:
    tiny = load_volume(tiny_volume)  # 1 x 1 x 2.5 mm
    vol = _oblique_volume()
    iso = Volume(data=vol.data, affine=vol.affine @ np.diag([1 / 1.5, 1 / 2.0, 1 / 1.8, 1.0]), header=vol.header,
                 path=None)
    for volume, spacing in ((tiny, 1.0), (iso, 1.0)):
        spec = PreprocessSpec(size=8 * (max(volume.shape) // 8 + 1), spacing_mm=spacing, min_brain_fraction=0.0)
        ms = to_model_space(volume, spec, keep_empty=True)
        brain = foreground_mask(volume.data)
        back = from_model_space(ms.slices, ms) * ms.scale
        np.testing.assert_allclose(back, np.where(brain, volume.data, 0.0), rtol=1e-5, atol=1e-5 * ms.scale)


def test_percentile_normalisation(require_data: Path) -> None:
    vol, mask = _load(require_data, "ixi-PSR")
    ms_max = to_model_space(vol, SPEC, mask)
    ms_pct = to_model_space(vol, PreprocessSpec(size=64, spacing_mm=3.0, normalisation="percentile",
                                                percentile=99.0), mask)
    assert ms_pct.scale == pytest.approx(float(np.percentile(vol.data[mask], 99.0)), rel=1e-5)
    assert ms_pct.scale < ms_max.scale
    assert ms_pct.slices.max() == 1.0
    assert ms_pct.slices.min() >= 0.0
    saturated = (ms_pct.slices[ms_pct.brain] >= 1.0).mean()
    assert 0.001 < saturated < 0.05


LANDMARKS = PreprocessSpec(size=64, spacing_mm=3.0, normalisation="landmarks",
                           landmark_percentiles=(2.0, 10.0, 25.0, 50.0, 75.0, 90.0, 98.0),
                           landmark_values=(0.16, 0.31, 0.48, 0.63, 0.77, 0.86, 0.955))


def test_landmark_normalisation_undoes_a_scanner_s_contrast_change(require_data: Path) -> None:
    """A scan whose intensities went through a monotone change (offset, compressed contrast, a gamma) comes out
    the same in model space: the landmarks follow the change."""
    vol, mask = _load(require_data, "ixi-PSR")
    ms = to_model_space(vol, LANDMARKS, mask)
    brain_pixels = ms.slices[ms.brain]
    # Native percentiles of the brain land near the reference values (resampling blurs them a little).
    got = np.percentile(brain_pixels, [25, 50, 75])
    assert got == pytest.approx([0.48, 0.63, 0.77], abs=0.03)
    data = np.asarray(vol.data, dtype=np.float64)
    top = float(np.percentile(data[mask], 99.5))
    changed = np.where(mask, 2.0 * top * (0.3 + 0.7 * (np.clip(data, 0, None) / top) ** 1.3), 0.0)
    ms_changed = to_model_space(_volume_like(vol, changed), LANDMARKS, mask)
    moved = np.abs(ms_changed.slices - ms.slices)[ms.brain].mean()
    assert moved < 0.02
    # With a plain percentile division the same change moves the brain far more.
    pct = PreprocessSpec(size=64, spacing_mm=3.0, normalisation="percentile")
    shifted = np.abs(to_model_space(_volume_like(vol, changed), pct, mask).slices
                     - to_model_space(vol, pct, mask).slices)[ms.brain].mean()
    assert shifted > 0.05
    assert shifted > 3 * moved


def test_landmark_normalisation_inverts_exactly(require_data: Path) -> None:
    vol, mask = _load(require_data, "ixi-PSR")
    ms = to_model_space(vol, LANDMARKS, mask)
    inside = ms.brain & (ms.slices > 0) & (ms.slices < 1)
    native = ms.to_native_intensity(ms.slices)
    # Back through the forward mapping (its points are the ModelSpace's) gives the model values again.
    from engine.preprocess import piecewise_linear

    native_points, model_points = ms._intensity
    assert piecewise_linear(native[inside], native_points, model_points) == pytest.approx(ms.slices[inside],
                                                                                       abs=1e-5)
    assert ms.to_native_intensity(np.array([1.0], np.float32))[0] == pytest.approx(ms.scale, rel=1e-5)
    # Linear normalisations invert by the scale.
    ms_pct = to_model_space(vol, PreprocessSpec(size=64, spacing_mm=3.0, normalisation="percentile"), mask)
    assert ms_pct.to_native_intensity(np.array([0.5], np.float32))[0] == pytest.approx(0.5 * ms_pct.scale)


def test_landmark_spec_is_checked() -> None:
    with pytest.raises(ValueError, match="landmark"):
        PreprocessSpec(normalisation="landmarks")
    with pytest.raises(ValueError, match="increase"):
        PreprocessSpec(normalisation="landmarks", landmark_percentiles=(50.0, 10.0), landmark_values=(0.2, 0.6))
    with pytest.raises(ValueError, match="increase"):
        PreprocessSpec(normalisation="landmarks", landmark_percentiles=(10.0, 50.0), landmark_values=(0.6, 0.2))


def test_fit_landmarks_averages_brains_in_percentile_units() -> None:
    from engine.preprocess import fit_landmarks

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, 100_000)
    b = 3.0 * rng.uniform(0, 100, 100_000)  # the same brain, another scanner gain
    values = fit_landmarks([a, b], (25.0, 50.0, 75.0), 99.5)
    assert values == pytest.approx((0.25 / 0.995, 0.5 / 0.995, 0.75 / 0.995), abs=0.01)


def test_slice_selection(require_data: Path) -> None:
    vol, mask = _load(require_data, "ixi-PSR")
    n_native = vol.shape[1]
    everything = to_model_space(vol, SPEC, mask, keep_empty=True)
    assert len(everything) == n_native
    np.testing.assert_array_equal(np.sort(everything.native_index), np.arange(n_native))
    default = to_model_space(vol, SPEC, mask)
    keep = everything.brain_fraction >= SPEC.min_brain_fraction
    np.testing.assert_array_equal(default.native_index, everything.native_index[keep])
    np.testing.assert_allclose(default.slices, everything.slices[keep], atol=1e-6)
    assert 0 < len(default) < n_native
    empty_native = int(everything.native_index[np.argmin(everything.brain_fraction)])
    chosen = [int(default.native_index[5]), empty_native, int(default.native_index[0])]
    picked = to_model_space(vol, SPEC, mask, slices=chosen)
    np.testing.assert_array_equal(picked.native_index, chosen)
    np.testing.assert_allclose(picked.slices[0], default.slices[5], atol=1e-6)
    np.testing.assert_allclose(picked.slices[2], default.slices[0], atol=1e-6)
    assert picked.brain_fraction[1] < SPEC.min_brain_fraction
    with pytest.raises(ValueError, match="slice indices"):
        to_model_space(vol, SPEC, mask, slices=[n_native])


def test_flipped_slice_axis_orders_inferior_to_superior() -> None:
    vol = _oblique_volume()  # second voxel axis points inferior
    ms = to_model_space(vol, PreprocessSpec(size=64, spacing_mm=3.0), keep_empty=True)
    assert ms.slice_axis == 1
    np.testing.assert_array_equal(ms.native_index, np.arange(vol.shape[1])[::-1])


def test_from_model_space_fill_and_canvas_edges(require_data: Path) -> None:
    vol, mask = _load(require_data, "ixi-PSR")
    spec = PreprocessSpec(size=32, spacing_mm=3.0)  # 96 mm: smaller than the brain, so part is off the canvas
    ms = to_model_space(vol, spec, mask)
    assert ms.cropped
    back = from_model_space(np.ones_like(ms.slices), ms, fill=-1.0)
    assert set(np.unique(back).tolist()) == {-1.0, 1.0}
    in_model = np.zeros(vol.shape[ms.slice_axis], dtype=bool)
    in_model[ms.native_index] = True
    other = np.moveaxis(back, ms.slice_axis, 0)
    assert (other[~in_model] == -1.0).all()
    # On a kept slice, the canvas covers a 96 mm square: 48 native 2 mm voxels per in-plane axis (+/- 1).
    covered = other[in_model][0] == 1.0
    assert abs(covered.any(axis=0).sum() - 48) <= 1
    assert abs(covered.any(axis=1).sum() - 48) <= 1
    with pytest.raises(ValueError, match="shape"):
        from_model_space(np.ones((len(ms) + 1, 32, 32)), ms)
    # A NaN pixel stays local: only the native voxels interpolated from it become NaN.
    maps = np.ones_like(ms.slices)
    maps[3, 10, 12] = np.nan
    with_nan = from_model_space(maps, ms)
    assert 0 < np.isnan(with_nan).sum() <= 4 * 2 * 2  # a 3 mm pixel reaches at most 4 x 4 native 2 mm voxels
    assert np.isnan(np.take(with_nan, ms.native_index[3], axis=ms.slice_axis)).any()


def test_without_mask_uses_foreground(require_data: Path) -> None:
    vol, _ = _load(require_data, "stroke-RAS")  # skull on, no brain mask: the head is the foreground
    ms = to_model_space(vol, SPEC)
    fg = foreground_mask(vol.data)
    assert ms.scale == pytest.approx(float(vol.data[fg].max()))
    assert 0.05 < fg.mean() < 0.9


def test_fill_holes_equals_scipy_on_real_foregrounds(require_data: Path) -> None:
    holes = 0
    for name in sorted(REAL_SCANS):
        vol, _ = _load(require_data, name)
        data = np.asarray(vol.data, dtype=np.float32)
        raw = data > 0.05 * float(np.percentile(data[data > 0], 99.5))
        filled = fill_holes(raw)
        np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(raw), err_msg=name)
        holes += int(filled.sum() - raw.sum())
    assert holes > 1000  # some of these foregrounds enclose dark tissue, so there is something to fill


def test_fill_holes_equals_scipy_on_edge_cases() -> None:
    rng = np.random.default_rng(3)
    cases = [rng.random((17, 23, 11)) > p for p in (0.3, 0.5, 0.7)]  # many small holes, regions touching the border
    cases += [rng.random((40, 31)) > 0.45, np.zeros((5, 6, 7), bool), np.ones((5, 6, 7), bool)]
    ring = np.zeros((9, 9, 9), bool)
    ring[2:7, 2:7, 2:7] = True
    ring[3:6, 3:6, 3:6] = False  # one enclosed cavity
    shell_at_border = np.ones((6, 6, 6), bool)
    shell_at_border[1:5, 1:5, 1:5] = False  # the mask fills the whole box: no margin to add
    for mask in [*cases, ring, shell_at_border]:
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    assert not ring[4, 4, 4]
    assert fill_holes(ring)[4, 4, 4]
    assert not fill_holes(ring)[0, 0, 0]
    original = ring.copy()
    fill_holes(ring)
    np.testing.assert_array_equal(ring, original)  # the input is left alone


def test_empty_brain_errors(tiny_volume: Path) -> None:
    vol = load_volume(tiny_volume)
    with pytest.raises(VolumeError) as info:
        to_model_space(vol, SPEC, np.zeros(vol.shape, dtype=bool))
    assert str(tiny_volume) in str(info.value)
    outside = np.zeros(vol.shape, dtype=bool)
    outside[0, 0, 0] = True  # a mask over background only: nothing left after stripping
    with pytest.raises(VolumeError, match="no positive intensity") as info:
        to_model_space(vol, SPEC, outside)
    assert str(tiny_volume) in str(info.value)
    with pytest.raises(VolumeError, match="shape"):
        to_model_space(vol, SPEC, np.ones((4, 4, 4), dtype=bool))
    negative = _volume_like(vol, -vol.data - 1.0)
    with pytest.raises(VolumeError, match="foreground is empty"):
        to_model_space(negative, SPEC)

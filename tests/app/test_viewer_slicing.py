"""Pure tests of app.slicing: the displayed slice shows the patient as a radiologist expects, for any disk order."""

from __future__ import annotations

import numpy as np
import pytest

from app import slicing

_LETTER = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def affine_for(codes: str, zooms: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel-to-RAS affine whose array axes point along ``codes`` (e.g. "PSR"), centred on the origin."""
    affine = np.eye(4)
    for i, letter in enumerate(codes):
        world, sign = _LETTER[letter]
        affine[:3, i] = 0.0
        affine[world, i] = sign * zooms[i]
    centre = (np.array(shape) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def volume_with_blob(codes: str, ras: tuple[float, float, float], zooms=(2.0, 2.0, 2.0), shape=(40, 44, 36)):
    """A zero volume with one bright voxel at the RAS position ``ras`` (mm)."""
    affine = affine_for(codes, zooms, shape)
    voxel = np.round(np.linalg.inv(affine) @ np.array([*ras, 1.0]))[:3].astype(int)
    data = np.zeros(shape, np.float32)
    data[tuple(voxel)] = 1.0
    return data, affine, tuple(int(v) for v in voxel)


ORIENTATIONS = ["LPS", "LAS", "PSR", "RAS", "RPI", "ASL", "IRP"]
# Patient's left (x < 0), anterior (y > 0), superior (z > 0).
BLOB = (-24.0, 18.0, 12.0)


def find(image: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(image)), image.shape)
    return int(row), int(col)


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_axial_radiological_puts_patient_left_on_screen_right_and_anterior_up(codes: str) -> None:
    data, affine, voxel = volume_with_blob(codes, BLOB)
    assert slicing.axcodes(affine) == tuple(codes)
    layout = slicing.plane_layout(affine, data.shape, "axial", radiological=True)
    image = slicing.take_slice(data, layout, voxel[layout.slice_axis])
    row, col = find(image)
    assert image[row, col] == 1.0
    assert col > image.shape[1] / 2, "patient's left must be on the screen's right (radiological)"
    assert row < image.shape[0] / 2, "anterior must be at the top"
    assert (layout.left, layout.right, layout.top, layout.bottom) == ("R", "L", "A", "P")
    assert image.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_axial_neurological_puts_patient_left_on_screen_left(codes: str) -> None:
    data, affine, voxel = volume_with_blob(codes, BLOB)
    layout = slicing.plane_layout(affine, data.shape, "axial", radiological=False)
    row, col = find(slicing.take_slice(data, layout, voxel[layout.slice_axis]))
    assert col < layout.n_cols / 2
    assert row < layout.n_rows / 2
    assert (layout.left, layout.right) == ("L", "R")


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_coronal_has_superior_up_and_sagittal_has_anterior_left(codes: str) -> None:
    data, affine, voxel = volume_with_blob(codes, BLOB)
    coronal = slicing.plane_layout(affine, data.shape, "coronal")
    row, col = find(slicing.take_slice(data, coronal, voxel[coronal.slice_axis]))
    assert row < coronal.n_rows / 2
    assert col > coronal.n_cols / 2
    assert (coronal.top, coronal.left, coronal.right) == ("S", "R", "L")
    sagittal = slicing.plane_layout(affine, data.shape, "sagittal")
    row, col = find(slicing.take_slice(data, sagittal, voxel[sagittal.slice_axis]))
    assert row < sagittal.n_rows / 2
    assert col < sagittal.n_cols / 2
    assert (sagittal.top, sagittal.left, sagittal.right) == ("S", "A", "P")


@pytest.mark.parametrize("codes", ORIENTATIONS)
@pytest.mark.parametrize("plane", slicing.PLANES)
def test_display_and_voxel_coordinates_round_trip(codes: str, plane: str) -> None:
    data, affine, voxel = volume_with_blob(codes, BLOB)
    layout = slicing.plane_layout(affine, data.shape, plane)
    row, col = slicing.voxel_to_display(layout, voxel)
    assert slicing.take_slice(data, layout, voxel[layout.slice_axis])[row, col] == 1.0
    assert slicing.display_to_voxel(layout, voxel[layout.slice_axis], row, col) == voxel


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_step_sign_moves_toward_superior(codes: str) -> None:
    data, affine, voxel = volume_with_blob(codes, BLOB)
    layout = slicing.plane_layout(affine, data.shape, "axial")
    here = np.array(voxel, dtype=float)
    there = here.copy()
    there[layout.slice_axis] += layout.step_sign
    z_here = slicing.voxel_to_ras(affine, tuple(here))[2]
    z_there = slicing.voxel_to_ras(affine, tuple(there))[2]
    assert z_there > z_here


def test_anisotropic_voxels_give_physical_pixel_sizes() -> None:
    shape = (30, 32, 10)
    affine = affine_for("LPS", (0.9, 0.8, 5.0), shape)
    axial = slicing.plane_layout(affine, shape, "axial")
    assert (axial.col_spacing, axial.row_spacing) == pytest.approx((0.9, 0.8))
    coronal = slicing.plane_layout(affine, shape, "coronal")
    assert coronal.row_spacing == pytest.approx(5.0)
    assert slicing.voxel_sizes(affine) == pytest.approx((0.9, 0.8, 5.0))


def test_oblique_affine_uses_closest_axes() -> None:
    shape = (40, 44, 36)
    affine = affine_for("RAS", (2.0, 2.0, 2.0), shape)
    angle = np.deg2rad(15)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, :3] = rotation @ affine[:3, :3]
    layout = slicing.plane_layout(affine, shape, "axial")
    assert layout.slice_axis == 2
    assert (layout.left, layout.top) == ("R", "A")


def test_take_slice_clamps_the_index_and_never_changes_the_data() -> None:
    data, affine, _ = volume_with_blob("LPS", BLOB)
    before = data.copy()
    layout = slicing.plane_layout(affine, data.shape, "axial")
    assert slicing.take_slice(data, layout, 10_000).shape == (layout.n_rows, layout.n_cols)
    assert slicing.take_slice(data, layout, -5).shape == (layout.n_rows, layout.n_cols)
    np.testing.assert_array_equal(data, before)


def test_robust_window_ignores_zero_background_and_outliers() -> None:
    rng = np.random.default_rng(0)
    data = np.zeros((50, 50, 20), np.float32)
    data[10:40, 10:40, 5:15] = rng.normal(100, 10, size=(30, 30, 10))
    data[0, 0, 0] = 1e6
    lo, hi = slicing.robust_window(data)
    assert 60 < lo < 100 < hi < 140
    assert slicing.robust_window(np.zeros((4, 4, 4))) == (0.0, 1.0)


def test_robust_window_shows_a_binary_mask_bright() -> None:
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[5:15, 5:15, 2:8] = 1
    assert slicing.robust_window(mask) == (0.0, 1.0), "the mask's 1 must sit at the top of the window (white)"
    assert slicing.robust_window(-3.0 * mask.astype(np.float32)) == (-3.0, 0.0)
    assert slicing.robust_window(np.full((4, 4, 4), 7.0)) == (0.0, 7.0)


def test_bad_plane_is_rejected() -> None:
    with pytest.raises(ValueError, match="plane"):
        slicing.plane_layout(np.eye(4), (4, 4, 4), "oblique")  # type: ignore[arg-type]


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("radiological", [True, False])
def test_a_slice_stack_cuts_what_take_slice_cuts(plane: str, radiological: bool) -> None:
    rng = np.random.default_rng(1)
    data = rng.random((7, 9, 5)).astype(np.float32)
    affine = np.array([[0, -1.0, 0, 0], [1.2, 0, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]])  # axes not in RAS order
    layout = slicing.plane_layout(affine, data.shape, plane, radiological=radiological)
    stack = slicing.SliceStack()
    for index in (-3, 0, 2, layout.n_slices - 1, layout.n_slices + 4):
        np.testing.assert_array_equal(stack.take(data, layout, index), slicing.take_slice(data, layout, index))
    other = data + 1  # another array (or another layout) is cut anew
    np.testing.assert_array_equal(stack.take(other, layout, 1), slicing.take_slice(other, layout, 1))

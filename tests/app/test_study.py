"""A study's sequences and reference segmentation (issue 23): recognised by name, fitted to the analysed grid,
refused when they belong elsewhere; reference scores against an independent computation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.study import (
    StudyError,
    fit_to,
    is_reference,
    reference_scores,
    sequence_of,
    study_files,
    world_overlap,
)
from engine import load_volume
from tests.conftest import data_path


@pytest.mark.parametrize(("name", "sequence"), [
    ("Brats18_2013_20_1_t1.nii.gz", "T1"), ("Brats18_2013_20_1_t1ce.nii.gz", "T1ce"),
    ("Brats18_2013_20_1_flair.nii.gz", "FLAIR"), ("Brats18_2013_20_1_t2.nii.gz", "T2"),
    ("patient07_T1.nii.gz", "T1"), ("patient07_FLAIR.nii.gz", "FLAIR"), ("sub-01_ses-1_T2w.nii.gz", "T2"),
    ("sub-01_acq-mprage_T1w.nii", "T1"), ("IXI056-HH-1327_T1.nii.gz", "T1"), ("sub-01_PDw.nii.gz", "PD"),
    ("IXI056-HH-1327_brainmask.nii.gz", None), ("patient07_lesion.nii.gz", None), ("notes_t3.nii.gz", None),
])
def test_sequences_are_recognised_by_name(name: str, sequence: str | None) -> None:
    assert sequence_of(name) == sequence


def test_a_brats_case_folder_is_a_study_with_its_segmentation() -> None:
    case = data_path("brats2018-dev/Brats18_2013_20_1")
    found, reference = study_files(case)
    assert set(found) >= {"T1", "T2", "FLAIR"}
    assert found["T1"].name.endswith("_t1.nii.gz")
    assert reference is not None
    assert reference.name.endswith("_seg.nii.gz")
    assert is_reference(reference)


def test_a_scan_on_the_same_grid_is_shown_as_it_is() -> None:
    case = data_path("brats2018-dev/Brats18_2013_20_1")
    t1 = load_volume(next(case.glob("*_t1.nii.gz")))
    flair = load_volume(next(case.glob("*_flair.nii.gz")))
    image = fit_to(t1, flair, "FLAIR")
    assert not image.resampled
    np.testing.assert_array_equal(image.data, np.asarray(flair.data, np.float32))


def test_a_scan_on_another_grid_is_resampled_to_the_same_world_positions(tmp_path: Path) -> None:
    """The MS FLAIR, cut to every second voxel (another grid, the same world): resampled back, each voxel of the
    analysed grid takes the value at its own world position."""
    folder = data_path("ms-lesjak/patient07")
    t1 = load_volume(folder / "patient07_T1.nii.gz")
    flair_img = nib.load(folder / "patient07_FLAIR.nii.gz")
    data = np.asarray(flair_img.dataobj, np.float32)
    coarse_affine = flair_img.affine.copy()
    coarse_affine[:3, :3] *= 2  # every second voxel along each axis
    coarse = tmp_path / "patient07_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(data[::2, ::2, ::2], coarse_affine), coarse)
    image = fit_to(t1, load_volume(coarse), "FLAIR")
    assert image.resampled
    assert image.data.shape == t1.data.shape
    # Voxels that fall exactly on the coarse grid take its value; in between, a linear blend of neighbours.
    np.testing.assert_allclose(image.data[::2, ::2, ::2][:-1, :-1, :-1], data[::2, ::2, ::2][:-1, :-1, :-1],
                               rtol=1e-4, atol=1e-3)
    between = image.data[1:-1:2, 10, 10]
    neighbours = (data[0:-2:2, 10, 10][: between.size] + data[2::2, 10, 10][: between.size]) / 2
    np.testing.assert_allclose(between, neighbours, rtol=1e-4, atol=1e-3)


def test_another_subjects_space_is_refused(tmp_path: Path) -> None:
    folder = data_path("ms-lesjak/patient07")
    t1 = load_volume(folder / "patient07_T1.nii.gz")
    flair_img = nib.load(folder / "patient07_FLAIR.nii.gz")
    moved = flair_img.affine.copy()
    moved[:3, 3] += 400.0  # 40 cm away: no overlap
    far = tmp_path / "other_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(flair_img.dataobj), moved), far)
    with pytest.raises(StudyError, match=r"other_FLAIR\.nii\.gz: covers 0 %"):
        fit_to(t1, load_volume(far), "FLAIR")
    assert world_overlap(t1.data.shape, t1.affine, t1.data.shape, t1.affine) == pytest.approx(1.0)


def test_reference_scores_match_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random((20, 20, 10)) > 0.8
    flagged = reference.copy()
    flagged[:5] = ~flagged[:5]
    scores = reference_scores(flagged, reference)
    tp = np.sum(flagged & reference)
    assert scores.dice == pytest.approx(2 * tp / (flagged.sum() + reference.sum()))
    assert scores.sensitivity == pytest.approx(tp / reference.sum())
    assert scores.precision == pytest.approx(tp / flagged.sum())
    empty = reference_scores(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert (empty.dice, empty.sensitivity, empty.precision) == (None, None, None)

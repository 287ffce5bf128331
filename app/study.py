"""A study: the other sequences of the analysed scan's subject, and a reference segmentation (no widgets).

The analysed scan is the one the model's contrast names (T1 for the bundled model); the others are for reading.
Each is shown on the analysed scan's grid, so one cursor, slice, zoom and the map's overlays serve them all:

* a scan on the same grid (shape and affine) is taken as it is;
* a scan on another grid of the same world space is resampled into the analysed scan's voxels (trilinear, through
  both affines; for display only, never analysed) and the viewer says so in one line;
* a scan whose world extent barely meets the analysed scan's (another subject, a missing registration) is refused.

Sequences are recognised by name (``..._flair.nii.gz``, ``sub-01_T2w.nii.gz``, ``patient07_T1.nii.gz``); a reference
segmentation by ``seg`` / ``lesion`` / ``label`` in its name. :func:`reference_scores` gives Dice, sensitivity and
precision of the anomaly mask against the reference, for a slice and for the volume.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from engine import file_stem, same_grid

SEQUENCES = ("T1", "T1ce", "T2", "FLAIR", "PD")
"""The sequences a study can hold, in the order the viewer offers them."""
_NAME_PATTERNS = (
    ("T1ce", r"t1ce|t1c|t1gd|t1-gd|t1_gd|ce-gd|t1post"),
    ("FLAIR", r"flair"),
    ("T2", r"t2w?"),
    ("PD", r"pdw?"),
    ("T1", r"t1w?|mprage"),
)
_REFERENCE_WORDS = ("seg", "lesion", "label")
MIN_OVERLAP = 0.5
"""Share of the analysed scan's world extent another scan must cover to be shown with it."""


class StudyError(ValueError):
    """A study input that cannot be shown with the analysed scan (one line naming the file)."""


def _stem(path: Path) -> str:
    return file_stem(path).lower()


def _is_scan_file(path: Path) -> bool:
    """A file whose extension is a scan format's (the engine strips it from the name)."""
    return path.is_file() and file_stem(path) != path.name


def sequence_named(word: str) -> str | None:
    """The sequence a single word names (``"t1"``, ``"FLAIR"``, ``"t2w"``, ...), or None."""
    for name, pattern in _NAME_PATTERNS:
        if re.fullmatch(pattern, word.lower()):
            return name
    return None


def sequence_of(path: str | Path) -> str | None:
    """The sequence a file's name says (one of :data:`SEQUENCES`), or None (a mask, a label, an unknown name)."""
    stem = _stem(Path(path))
    if any(word in stem for word in (*_REFERENCE_WORDS, "mask")):
        return None
    parts = re.split(r"[_\-.]", stem)
    for name, pattern in _NAME_PATTERNS:
        if any(re.fullmatch(pattern, part) for part in parts[1:] or parts):
            return name
    return None


def display_order(image: StudyImage) -> tuple[int, str]:
    """Sort key of study images: T1, T1ce, T2, FLAIR, PD, then other names alphabetically."""
    return (SEQUENCES.index(image.name) if image.name in SEQUENCES else len(SEQUENCES), image.name)


def is_reference(path: str | Path) -> bool:
    """A file named as a segmentation or lesion label (``*_seg``, ``*_lesion``, ``*_label``)."""
    stem = _stem(Path(path))
    return any(re.search(rf"(^|[_\-.]){word}", stem) for word in _REFERENCE_WORDS)


def study_files(folder: str | Path) -> tuple[dict[str, Path], Path | None]:
    """The scans of a study folder by sequence (a BraTS case, a BIDS ``anat`` folder) and its reference
    segmentation, if any; files whose names say neither are left out."""
    found: dict[str, Path] = {}
    reference = None
    for path in sorted(Path(folder).iterdir()):
        if not _is_scan_file(path):
            continue
        if is_reference(path):
            reference = reference or path
            continue
        name = sequence_of(path)
        if name is not None and name not in found:
            found[name] = path
    return found, reference


def is_study_folder(folder: str | Path) -> bool:
    """A folder holding two or more scans of different sequences and no two of the same (a BraTS case, a BIDS
    ``anat`` folder), rather than a folder of many subjects' scans."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    names = [sequence_of(p) for p in folder.iterdir() if _is_scan_file(p)
             and not is_reference(p) and "mask" not in p.name.lower()]
    known = [n for n in names if n is not None]
    return len(known) >= 2 and len(set(known)) == len(known)


def _corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    idx = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    return (np.asarray(affine, float) @ idx.T).T[:, :3]


def world_overlap(shape: Sequence[int], affine: np.ndarray, other_shape: Sequence[int],
                  other_affine: np.ndarray) -> float:
    """Share of the first grid's world bounding box that the second grid's box covers (0 to 1)."""
    a, b = _corners(shape, affine), _corners(other_shape, other_affine)
    lo, hi = np.maximum(a.min(0), b.min(0)), np.minimum(a.max(0), b.max(0))
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    own = float(np.prod(np.clip(a.max(0) - a.min(0), 1e-6, None)))
    return inter / own


def on_grid(data: np.ndarray, affine: np.ndarray, shape: Sequence[int], target_affine: np.ndarray, *,
            order: int = 1) -> np.ndarray:
    """``data`` (with ``affine``) resampled onto a grid of ``shape`` with ``target_affine``: each target voxel takes
    the value at its own world position (zero outside ``data``), trilinearly (``order`` 1) or from the nearest voxel
    (``order`` 0, for labels)."""
    to_source = np.linalg.inv(np.asarray(affine, float)) @ np.asarray(target_affine, float)
    return ndimage.affine_transform(np.asarray(data, np.float32), to_source[:3, :3], offset=to_source[:3, 3],
                                    output_shape=tuple(int(s) for s in shape), order=order, mode="constant",
                                    cval=0.0)


@dataclass(frozen=True)
class StudyImage:
    """One image shown with the analysed scan, on its grid.

    Attributes:
        name: the sequence (:data:`SEQUENCES`) or ``"reference"``.
        path: the file it came from.
        data: the image on the analysed scan's grid (float32; a reference: bool).
        resampled: True when it was on another grid and was resampled for display.
    """

    name: str
    path: Path
    data: np.ndarray
    resampled: bool


def fit_to(volume: Any, other: Any, name: str, *, label: bool = False) -> StudyImage:
    """``other`` (an ``engine.Volume``) on ``volume``'s grid, as :class:`StudyImage` ``name``.

    Raises:
        StudyError: ``other`` is not 3-D, or its world extent covers less than :data:`MIN_OVERLAP` of ``volume``'s.
    """
    path = Path(other.path) if other.path is not None else Path(name)
    data = np.asarray(other.data)
    if data.ndim != 3:
        raise StudyError(f"{path}: shape {data.shape} is not a 3-D scan")
    if same_grid(np.shape(volume.data), volume.affine, np.shape(other.data), other.affine):
        out = data > 0 if label else data.astype(np.float32, copy=False)
        return StudyImage(name, path, out, resampled=False)
    overlap = world_overlap(np.shape(volume.data), volume.affine, data.shape, other.affine)
    if overlap < MIN_OVERLAP:
        raise StudyError(f"{path}: covers {100 * overlap:.0f} % of the analysed scan's space; not the same subject "
                         "or not registered to it")
    if label:  # nearest neighbour for a label: its outline stays where it was drawn
        out = on_grid(data > 0, other.affine, np.shape(volume.data), volume.affine, order=0) > 0.5
    else:
        out = on_grid(data, other.affine, np.shape(volume.data), volume.affine)
    return StudyImage(name, path, out, resampled=True)


@dataclass(frozen=True)
class ReferenceScores:
    """The anomaly mask against a reference segmentation at one threshold (None where undefined).

    Attributes:
        dice / sensitivity / precision: of the flagged voxels against the reference's.
        reference_voxels / flagged_voxels: the counts behind them.
    """

    dice: float | None
    sensitivity: float | None
    precision: float | None
    reference_voxels: int
    flagged_voxels: int


def reference_scores(flagged: np.ndarray, reference: np.ndarray) -> ReferenceScores:
    """Dice, sensitivity and precision of ``flagged`` against ``reference`` (same shape, any region: a slice or a
    volume)."""
    flagged, reference = np.asarray(flagged, bool), np.asarray(reference, bool)
    both = int(np.count_nonzero(flagged & reference))
    n_ref, n_flag = int(np.count_nonzero(reference)), int(np.count_nonzero(flagged))
    return ReferenceScores(
        dice=2 * both / (n_ref + n_flag) if n_ref + n_flag else None,
        sensitivity=both / n_ref if n_ref else None,
        precision=both / n_flag if n_flag else None,
        reference_voxels=n_ref, flagged_voxels=n_flag)

"""The scan type and the facts about grids that reading and writing share.

A :class:`Volume` keeps the voxels in the file's own order together with the voxel-to-world affine (RAS+
mm, the nibabel convention) and the NIfTI header it came with. Nothing in the engine reorients or resamples a
scan: :mod:`engine.readers` builds a Volume from a file, and :mod:`engine.writers` writes results on exactly its
grid, so they overlay the scan in any viewer.

Besides the type, this module holds what both sides need: the file suffixes of the formats condiff reads
(:data:`NIFTI_SUFFIXES`, :data:`ITK_SUFFIXES`), and when two grids are the same (:func:`same_grid`, within
:data:`GRID_TOLERANCE_MM`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["Volume", "same_grid"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SCAN_SUFFIXES = tuple(sorted(NIFTI_SUFFIXES + ITK_SUFFIXES, key=len, reverse=True))
"""Every single-file scan suffix, longest first (so ``.nii.gz`` is taken off before ``.nii``)."""
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM/ITK patient coordinates (LPS) to NIfTI's (RAS), homogeneous; ``[:3, :3]`` turns directions."""
GRID_TOLERANCE_MM = 1e-3
"""Two grids are the same when the world positions of their corner voxels differ by at most this much."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scan in its file's own voxel order.

    Attributes:
        data: float32 voxels, indexed (i, j, k) as nibabel does.
        affine: float64 4x4 map from voxel index to RAS+ world coordinates in mm.
        header: the file's NIfTI header; for other formats, a NIfTI header built from ``affine``.
        path: where the volume was read from (None for a volume built in memory).
        source_format: ``"nifti"``, ``"dicom"``, ``"nrrd"`` or ``"mha"``.
        warnings: one-line warnings about how the file was read (see :func:`engine.readers.load_volume`); clients show
            them.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path | None = None
    source_format: str = "nifti"
    warnings: tuple[str, ...] = ()

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


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


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

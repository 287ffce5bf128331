"""Does the calibrated threshold hold off the calibration scanner? Counts on each scan's own grid, and shifted
healthy scans.

The threshold a user applies is chosen on one scanner's healthy scans. Two checks say whether it transfers:

* :class:`TransferCounts`, on scans with lesion labels: at the threshold, on the map a user gets (the scan's own
  grid, the analysed slices and those filled between them), the lesion share caught (sensitivity), the flagged share
  that is lesion (precision), the share of non-lesion brain flagged, and the share of brain lying farther than
  :data:`FAR_MM` from any lesion label that is flagged: tissue that neither oedema nor mass effect explains.
* :func:`shifted_healthy`, on healthy scans: the same scan as another acquisition would show it (resampled to 1 mm
  slices, under a bias field, with another contrast), each of which should be flagged no more than the scan itself.

Counting is in voxels of each scan pooled over scans; a per-scan share is also kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from engine.results import flagged as flagged_by
from engine.volumes import Volume

__all__ = ["FAR_MM", "SHIFTS", "TransferCounts", "TransferResult", "far_from", "shifted_healthy"]

FAR_MM = 10.0
"""Brain farther than this from every lesion label counts as "far from the lesion"."""
SHIFTS = ("1mm", "thick", "noise", "bias", "contrast")
"""The shifted-healthy variants :func:`shifted_healthy` makes."""


def far_from(label: np.ndarray, zooms: tuple[float, ...], distance_mm: float = FAR_MM) -> np.ndarray:
    """Voxels farther than ``distance_mm`` (Euclidean, in mm on the voxel grid) from every True voxel of ``label``;
    all True when the label is empty."""
    label = np.asarray(label, dtype=bool)
    if not label.any():
        return np.ones(label.shape, dtype=bool)
    return ndimage.distance_transform_edt(~label, sampling=tuple(float(z) for z in zooms)) > distance_mm


@dataclass(frozen=True)
class TransferResult:
    """What a threshold flags on a set of scans (shares in [0, 1]; None where the denominator is empty).

    Attributes:
        scans: scans counted.
        threshold: the map threshold applied.
        brain_flagged: flagged share of all brain voxels.
        sensitivity: flagged share of lesion voxels.
        precision: lesion share of flagged brain voxels.
        dice: Dice of the flagged voxels and the lesion label, pooled.
        nonlesion_flagged: flagged share of brain voxels outside the lesion label.
        far_flagged: flagged share of brain voxels farther than :data:`FAR_MM` from any lesion voxel.
        far_flagged_per_scan: the same share per scan, in order.
    """

    scans: int
    threshold: float
    brain_flagged: float | None
    sensitivity: float | None
    precision: float | None
    dice: float | None
    nonlesion_flagged: float | None
    far_flagged: float | None
    far_flagged_per_scan: tuple[float, ...] = ()


@dataclass
class TransferCounts:
    """Voxel counts at one threshold, accumulated scan by scan on each scan's own grid."""

    threshold: float
    scans: int = 0
    brain: int = 0
    brain_flagged: int = 0
    lesion: int = 0
    lesion_flagged: int = 0
    far: int = 0
    far_flagged: int = 0
    per_scan_far: list[float] = field(default_factory=list)

    def add(self, anomaly_map: np.ndarray, brain: np.ndarray, lesion: np.ndarray | None,
            zooms: tuple[float, ...]) -> None:
        """Count one scan: its map, brain mask and lesion label (None for a healthy scan) on its own grid."""
        brain = np.asarray(brain, dtype=bool)
        flagged = flagged_by(anomaly_map, self.threshold) & brain
        lesion = np.zeros_like(brain) if lesion is None else (np.asarray(lesion, dtype=bool) & brain)
        far = far_from(lesion, zooms) & brain
        self.scans += 1
        self.brain += int(brain.sum())
        self.brain_flagged += int(flagged.sum())
        self.lesion += int(lesion.sum())
        self.lesion_flagged += int((flagged & lesion).sum())
        n_far, n_far_flagged = int(far.sum()), int((flagged & far).sum())
        self.far += n_far
        self.far_flagged += n_far_flagged
        self.per_scan_far.append(n_far_flagged / n_far if n_far else float("nan"))

    def result(self) -> TransferResult:
        """The shares (pooled voxels)."""
        def share(num: int, den: int) -> float | None:
            return num / den if den else None

        nonlesion = self.brain - self.lesion
        return TransferResult(
            scans=self.scans,
            threshold=float(self.threshold),
            brain_flagged=share(self.brain_flagged, self.brain),
            sensitivity=share(self.lesion_flagged, self.lesion),
            precision=share(self.lesion_flagged, self.brain_flagged) if self.lesion else None,
            dice=share(2 * self.lesion_flagged, self.lesion + self.brain_flagged) if self.lesion else None,
            nonlesion_flagged=share(self.brain_flagged - self.lesion_flagged, nonlesion),
            far_flagged=share(self.far_flagged, self.far),
            far_flagged_per_scan=tuple(round(v, 5) for v in self.per_scan_far),
        )


def _in_memory(data: np.ndarray, affine: np.ndarray) -> Volume:
    data = np.ascontiguousarray(data, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    return Volume(data=data, affine=affine, header=nib.Nifti1Image(data, affine).header)


THICK_MM = 5.0
"""Slice thickness of the ``"thick"`` shifted-healthy variant."""


def _thick_axial(data: np.ndarray, affine: np.ndarray, thickness_mm: float) -> np.ndarray:
    """``data`` (1 mm voxels) as slabs of ``thickness_mm`` along its axial axis, interpolated back to 1 mm."""
    from engine.preprocess import axial_axis  # noqa: PLC0415

    axis = axial_axis(affine)
    n = data.shape[axis]
    width = max(1, int(round(thickness_mm)))
    moved = np.moveaxis(data, axis, 0).astype(np.float32)
    n_slabs = int(np.ceil(n / width))
    padded = np.concatenate([moved, np.repeat(moved[-1:], n_slabs * width - n, axis=0)], axis=0)
    slabs = padded.reshape(n_slabs, width, *moved.shape[1:]).mean(axis=1)
    centres = np.arange(n_slabs) * width + (width - 1) / 2.0
    position = np.clip(np.arange(n, dtype=np.float64), centres[0], centres[-1])
    upper = np.clip(np.searchsorted(centres, position), 1, max(1, n_slabs - 1)) if n_slabs > 1 else np.zeros(n, int)
    lower = np.maximum(upper - 1, 0)
    span = np.where(centres[upper] > centres[lower], centres[upper] - centres[lower], 1.0)
    weight = ((position - centres[lower]) / span).astype(np.float32).reshape(-1, *([1] * (moved.ndim - 1)))
    out = (1 - weight) * slabs[lower] + weight * slabs[upper]
    return np.moveaxis(out, 0, axis)


def _bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``exp(p)``, ``p`` a random polynomial of degree 2 in normalised coordinates
    scaled so that ``p`` spans about ``±strength`` over the volume."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    terms = [g for g in grid] + [g * g for g in grid] + [grid[0] * grid[1], grid[0] * grid[2], grid[1] * grid[2]]
    coefficients = rng.uniform(-1.0, 1.0, size=len(terms))
    poly = sum(c * t for c, t in zip(coefficients, terms, strict=True))
    poly = poly - poly.mean()
    span = float(np.abs(poly).max()) or 1.0
    return np.exp(strength * poly / span).astype(np.float32)


def shifted_healthy(volume: Volume, brain: np.ndarray, kind: str, *, seed: int = 0,
                    ) -> tuple[Volume, np.ndarray]:
    """A healthy scan as another acquisition would show it, with its brain mask on the new grid.

    Args:
        volume: the healthy scan.
        brain: its bool brain mask.
        kind: ``"1mm"``: resampled to 1 mm voxels (linear; the mask by nearest neighbour), as BraTS and the MS scans
            come, so the slices are thinner and sharper than the training scans'; ``"thick"``: the 1 mm scan as a 2-D
            axial acquisition of 5 mm slices would give it once resampled to 1 mm (each 5 mm slab averaged, then
            linear interpolation between slab centres), as many clinical T1 scans (and BraTS's older ones) come;
            ``"noise"``: Rician noise of 4 % of the brain's 99th percentile added (an older, noisier scanner);
            ``"bias"``: under a smooth
            multiplicative bias field spanning about exp(±0.4); ``"contrast"``: intensities raised to the power 1.5
            (relative to the brain's 99th percentile), another T1 weighting's tissue contrast.
        seed: the bias field's seed.

    Returns:
        ``(volume, brain)``: the new scan (an in-memory :class:`Volume` with the right affine) and its brain mask.
    """
    data = np.asarray(volume.data, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    if kind == "1mm":
        factors = np.asarray(volume.zooms, dtype=np.float64) / 1.0
        new_data = ndimage.zoom(data, factors, order=1, grid_mode=True, mode="grid-constant").astype(np.float32)
        new_brain = ndimage.zoom(brain.astype(np.uint8), factors, order=0, grid_mode=True,
                                 mode="grid-constant").astype(bool)
        affine = np.array(volume.affine, dtype=np.float64)
        scale = np.diag(list(1.0 / factors) + [1.0])
        # Voxel centres of a finer grid covering the same field: its first centre lies half a new voxel inside.
        shift = np.eye(4)
        shift[:3, 3] = (1.0 / factors - 1.0) / 2.0
        new_affine = affine @ shift @ scale
        return _in_memory(new_data, new_affine), new_brain
    if kind == "thick":
        fine, fine_brain = shifted_healthy(volume, brain, "1mm")
        return _in_memory(_thick_axial(np.asarray(fine.data), fine.affine, THICK_MM), fine.affine), fine_brain
    if kind == "noise":
        rng = np.random.default_rng(seed)
        sigma = 0.04 * (float(np.percentile(data[brain], 99)) if brain.any() else float(data.max() or 1.0))
        real = data + rng.normal(0.0, sigma, data.shape)
        imag = rng.normal(0.0, sigma, data.shape)
        return _in_memory(np.sqrt(real * real + imag * imag), volume.affine), brain
    if kind == "bias":
        field_ = _bias_field(data.shape, 0.4, np.random.default_rng(seed))
        return _in_memory(data * field_, volume.affine), brain
    if kind == "contrast":
        top = float(np.percentile(data[brain], 99)) if brain.any() else float(data.max() or 1.0)
        return _in_memory((np.clip(data, 0, None) / top) ** 1.5 * top, volume.affine), brain
    raise ValueError(f"unknown shift {kind!r}; known: {', '.join(SHIFTS)}")

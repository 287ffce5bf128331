"""Findings: the connected regions of a thresholded anomaly map, measured on the scan's own grid.

What a radiologist reports is not a heat map but a list: how many regions, where, how big, how strong and how much
the ensemble agrees on each. :func:`find_findings` labels the 3-D connected components (26-connectivity: voxels that
share a face, an edge or a corner) of ``anomaly_map >= threshold`` on the scan's native voxel grid, measures each and
ranks them; :func:`write_findings` writes the table beside the other outputs as
``<stem>_desc-anomaly_findings.tsv`` and ``.json``; :func:`format_findings` renders it as text.

Member agreement: a result keeps the ensemble mean map and the members' standard deviation (spread), not each
member's map. A finding's ``member_agreement`` is therefore an *estimate* of the share of members whose map exceeds
the threshold, averaged over the finding's voxels: at a voxel with mean ``m`` and spread ``s`` it is
``Phi((m - threshold) / s)`` (a normal spread of the members around their mean; 1 where ``s`` is 0). ``member_spread``
is the plain mean of the spread over the finding, in map units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from engine.config import DEFAULT_MIN_VOLUME_ML
from engine.errors import OutputError
from engine.outputs import output_paths
from engine.results import AnomalyResult
from engine.results import flagged as flagged_by
from engine.volumes import Volume
from engine.writers import atomic_write_bytes, atomic_write_json

RANK_RULE = "anomaly load (sum of the map over the finding x voxel volume, in mL), largest first"
AGREEMENT_RULE = ("estimated share of members above the threshold: mean over the finding of Phi((mean - threshold) "
                  "/ member spread), assuming normally spread members (per-member maps are not kept)")
COLUMNS = ("id", "volume_ml", "voxels", "centre_i", "centre_j", "centre_k", "centre_x_mm", "centre_y_mm",
           "centre_z_mm", "peak_i", "peak_j", "peak_k", "first_slice", "last_slice", "max_score", "mean_score",
           "member_spread", "member_agreement", "load_ml")
"""Columns of the TSV, in order (voxel indices in the scan's own array order; x, y, z in RAS+ mm)."""


@dataclass(frozen=True)
class Finding:
    """One connected region of the thresholded map.

    Attributes:
        id: 1-based rank (1 = the largest anomaly load).
        voxels: number of voxels.
        volume_ml: voxels times the voxel volume, in millilitres.
        centre_voxel: centroid in the scan's voxel indices (i, j, k); may lie outside a curved region.
        centre_ras_mm: the centroid in RAS+ world coordinates, mm.
        peak_voxel: the region's voxel with the highest score (where the viewer jumps to).
        slice_range: first and last index along the slice axis (inclusive).
        max_score / mean_score: highest and mean anomaly score in the region (map units).
        member_spread: mean member standard deviation over the region (map units).
        member_agreement: estimated share of members above the threshold (see the module docstring), in [0, 1].
        load_ml: sum of the scores times the voxel volume (mL x score), the ranking key.
    """

    id: int
    voxels: int
    volume_ml: float
    centre_voxel: tuple[float, float, float]
    centre_ras_mm: tuple[float, float, float]
    peak_voxel: tuple[int, int, int]
    slice_range: tuple[int, int]
    max_score: float
    mean_score: float
    member_spread: float
    member_agreement: float
    load_ml: float

    def row(self) -> dict[str, Any]:
        """The finding as a flat table row keyed by :data:`COLUMNS`."""
        return {
            "id": self.id, "volume_ml": round(self.volume_ml, 4), "voxels": self.voxels,
            "centre_i": round(self.centre_voxel[0], 1), "centre_j": round(self.centre_voxel[1], 1),
            "centre_k": round(self.centre_voxel[2], 1), "centre_x_mm": round(self.centre_ras_mm[0], 1),
            "centre_y_mm": round(self.centre_ras_mm[1], 1), "centre_z_mm": round(self.centre_ras_mm[2], 1),
            "peak_i": self.peak_voxel[0], "peak_j": self.peak_voxel[1], "peak_k": self.peak_voxel[2],
            "first_slice": self.slice_range[0], "last_slice": self.slice_range[1],
            "max_score": round(self.max_score, 4), "mean_score": round(self.mean_score, 4),
            "member_spread": round(self.member_spread, 4), "member_agreement": round(self.member_agreement, 3),
            "load_ml": round(self.load_ml, 5),
        }


@dataclass(frozen=True, eq=False)
class Findings:
    """The findings of one result at one threshold.

    Attributes:
        items: the findings, ranked (``items[0].id == 1``).
        labels: int32 array on the scan's grid: the finding id of each voxel, 0 elsewhere (regions below the minimum
            size are 0 too).
        threshold: the map threshold used (map units).
        min_volume_ml: regions below this volume were left out.
        left_out: how many regions were left out for their size.
        slice_axis: the axis ``slice_range`` counts along.
        voxel_ml: volume of one voxel, mL.
        rank_rule / agreement_rule: how the list is sorted and what ``member_agreement`` means, in words.
    """

    items: tuple[Finding, ...]
    labels: np.ndarray
    threshold: float
    min_volume_ml: float
    left_out: int
    slice_axis: int
    voxel_ml: float
    rank_rule: str = RANK_RULE
    agreement_rule: str = AGREEMENT_RULE

    def rows(self) -> list[dict[str, Any]]:
        """One :meth:`Finding.row` per finding, in rank order."""
        return [f.row() for f in self.items]

    def summary(self) -> dict[str, Any]:
        """Everything but the label array, as JSON-ready values."""
        return {
            "threshold": self.threshold,
            "min_volume_ml": self.min_volume_ml,
            "left_out_below_min_volume": self.left_out,
            "slice_axis": self.slice_axis,
            "voxel_ml": self.voxel_ml,
            "connectivity": "26 (face, edge or corner)",
            "rank_rule": self.rank_rule,
            "agreement_rule": self.agreement_rule,
            "columns": list(COLUMNS),
            "findings": [{**f.row(), "centre_voxel": list(f.centre_voxel), "centre_ras_mm": list(f.centre_ras_mm)}
                         for f in self.items],
        }


def find_findings(result: AnomalyResult, affine: np.ndarray, *, threshold: float,
                  min_volume_ml: float = DEFAULT_MIN_VOLUME_ML) -> Findings:
    """Label, measure and rank the 3-D connected regions of ``result.anomaly_map >= threshold``.

    Args:
        result: an analysis on the scan's own grid.
        affine: the scan's 4x4 voxel-to-RAS+ affine (``Volume.affine``).
        threshold: map threshold (map units, as the calibration's).
        min_volume_ml: regions smaller than this are left out of the list and the label array.

    Returns:
        The ranked findings and their label array.

    Raises:
        ValueError: the affine is not 4x4 or the threshold or minimum volume is not a finite number >= 0.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not (np.isfinite(min_volume_ml) and min_volume_ml >= 0):
        raise ValueError(f"min_volume_ml must be a number >= 0, got {min_volume_ml}")
    scores = np.asarray(result.anomaly_map, dtype=np.float32)
    spread = np.asarray(result.member_spread, dtype=np.float32)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    axis = result.slice_axis
    flagged = flagged_by(scores, threshold)
    labels = np.zeros(scores.shape, dtype=np.int32)
    box = _bounding_box(flagged)
    if box is None:
        return Findings((), labels, float(threshold), float(min_volume_ml), 0, axis, voxel_ml)
    # Label only the box around the flagged voxels, then measure with one pass over those voxels.
    region, n = ndimage.label(flagged[box], structure=np.ones((3, 3, 3), dtype=bool))
    coords = np.nonzero(region)
    ids = region[coords] - 1
    coords = tuple(c + b.start for c, b in zip(coords, box, strict=True))
    values = scores[coords].astype(np.float64)
    sd = spread[coords].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        agree = np.where(sd > 0, ndtr((values - threshold) / np.where(sd > 0, sd, 1.0)), 1.0)
    count = np.bincount(ids, minlength=n)
    total = np.bincount(ids, weights=values, minlength=n)
    spread_sum = np.bincount(ids, weights=sd, minlength=n)
    agree_sum = np.bincount(ids, weights=agree, minlength=n)
    centre_sums = [np.bincount(ids, weights=c.astype(np.float64), minlength=n) for c in coords]
    order = np.lexsort((values, ids))  # grouped by region, highest value last in each group
    last = np.r_[np.flatnonzero(np.diff(ids[order])), order.size - 1]
    peak_at = order[last]  # one per region, regions in id order
    low = np.full(n, np.iinfo(np.int64).max)
    high = np.full(n, -1)
    np.minimum.at(low, ids, coords[axis])
    np.maximum.at(high, ids, coords[axis])
    keep = [r for r in range(n) if count[r] * voxel_ml >= min_volume_ml]
    keep.sort(key=lambda r: (-total[r], -values[peak_at[r]], r))
    rank_of = np.zeros(n, dtype=np.int32)
    items = []
    for rank, r in enumerate(keep, start=1):
        rank_of[r] = rank
        centre = tuple(float(c[r] / count[r]) for c in centre_sums)
        ras = affine @ np.array([*centre, 1.0])
        items.append(Finding(
            id=rank, voxels=int(count[r]), volume_ml=float(count[r] * voxel_ml),
            centre_voxel=centre,  # type: ignore[arg-type]
            centre_ras_mm=(float(ras[0]), float(ras[1]), float(ras[2])),
            peak_voxel=tuple(int(c[peak_at[r]]) for c in coords),  # type: ignore[arg-type]
            slice_range=(int(low[r]), int(high[r])),
            max_score=float(values[peak_at[r]]), mean_score=float(total[r] / count[r]),
            member_spread=float(spread_sum[r] / count[r]), member_agreement=float(agree_sum[r] / count[r]),
            load_ml=float(total[r] * voxel_ml),
        ))
    labels[coords] = rank_of[ids]
    return Findings(tuple(items), labels, float(threshold), float(min_volume_ml), n - len(keep), axis, voxel_ml)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel, or None when there is none."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def findings_paths(volume: Volume, out_dir: str | Path | None = None, stem: str | None = None) -> dict[str, Path]:
    """Where :func:`write_findings` writes: beside the mask of :func:`engine.output_paths`, keyed ``tsv``, ``json``."""
    mask = output_paths(volume, out_dir, stem)["mask"]
    base = mask.name[: -len("_mask.nii.gz")]
    return {"tsv": mask.with_name(f"{base}_findings.tsv"), "json": mask.with_name(f"{base}_findings.json")}


def findings_tsv(findings: Findings) -> str:
    """The findings as tab-separated text with a header line (:data:`COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(findings.rows())
    return buffer.getvalue()


def write_findings(findings: Findings, volume: Volume, out_dir: str | Path | None = None, *, stem: str | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<stem>_desc-anomaly_findings.tsv`` and ``.json`` (atomically) beside the other outputs.

    Args:
        findings: what :func:`find_findings` returned for ``volume``.
        volume: the scan (for the names and the source path).
        out_dir: output folder; None writes beside the scan.
        stem: base name instead of the scan's.
        extra: more keys for the JSON (model, sampler, ...).

    Returns:
        The written paths, keyed ``tsv`` and ``json``.

    Raises:
        OutputError: the folder cannot be written, or a path would overwrite the scan.
    """
    paths = findings_paths(volume, out_dir, stem)
    if volume.path is not None:
        for path in paths.values():
            if path.resolve() == Path(volume.path).resolve():
                raise OutputError(f"{path}: refusing to overwrite the input scan")
    atomic_write_bytes(paths["tsv"], findings_tsv(findings).encode("utf-8"))
    atomic_write_json(paths["json"], {"Source": str(volume.path) if volume.path else None, **findings.summary(),
                                      **(extra or {})})
    return paths


def format_findings(findings: Findings, columns: Sequence[str] = ("id", "volume_ml", "centre_x_mm", "centre_y_mm",
                                                                   "centre_z_mm", "first_slice", "last_slice",
                                                                   "max_score", "mean_score", "member_agreement"),
                    max_rows: int = 20) -> str:
    """A plain-text table of the first ``max_rows`` findings (for a terminal or a log)."""
    if not findings.items:
        return f"no findings at threshold {findings.threshold:.4g} (min {findings.min_volume_ml:g} mL)"
    rows = [[str(f.row()[c]) for c in columns] for f in findings.items[:max_rows]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    more = len(findings.items) - max_rows
    if more > 0:
        lines.append(f"... and {more} more")
    return "\n".join(lines)

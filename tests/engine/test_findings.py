"""Findings: connected regions of the thresholded map, measured on the scan's grid (engine.findings)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import engine
from engine.findings import COLUMNS, findings_tsv

# 1 x 1.5 x 2.5 mm voxels, first axis flipped, shifted origin: every measure below depends on getting these right.
AFFINE = np.array([[-1.0, 0, 0, 40.0], [0, 1.5, 0, -20.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
VOXEL_ML = 1.0 * 1.5 * 2.5 / 1000


def _result(amap: np.ndarray, spread: np.ndarray | None = None) -> engine.AnomalyResult:
    n = amap.shape[2]
    return engine.AnomalyResult(
        anomaly_map=amap.astype(np.float32),
        member_spread=(np.zeros_like(amap) if spread is None else spread).astype(np.float32),
        restored=np.zeros_like(amap, dtype=np.float32), slice_scores=np.zeros(n, np.float32),
        analysed=np.ones(n, bool), covered=np.ones(n, bool), slice_axis=2, seed=0, sampler="ddim", steps=5,
        model_id="test-v1")


@pytest.fixture
def two_blobs() -> np.ndarray:
    """A 4x4x3 block scoring 0.5 and a 2x2x2 block scoring 0.9 (with one peak of 0.95), apart."""
    amap = np.zeros((20, 20, 12), np.float32)
    amap[2:6, 3:7, 1:4] = 0.5
    amap[12:14, 14:16, 8:10] = 0.9
    amap[13, 15, 9] = 0.95
    return amap


def test_regions_are_measured_on_the_scan_grid_and_ranked_by_load(two_blobs: np.ndarray) -> None:
    found = engine.find_findings(_result(two_blobs), AFFINE, threshold=0.3, min_volume_ml=0.0)
    assert [f.id for f in found.items] == [1, 2]
    big, small = found.items  # load: 48 voxels x 0.5 beats 8 voxels x ~0.9
    assert big.voxels == 48
    assert big.volume_ml == pytest.approx(48 * VOXEL_ML)
    assert big.centre_voxel == pytest.approx((3.5, 4.5, 2.0))
    assert big.centre_ras_mm == pytest.approx((40 - 3.5, -20 + 1.5 * 4.5, -10 + 2.5 * 2.0))
    assert big.slice_range == (1, 3)
    assert big.max_score == pytest.approx(0.5)
    assert big.mean_score == pytest.approx(0.5)
    assert big.load_ml == pytest.approx(48 * 0.5 * VOXEL_ML)
    assert small.voxels == 8
    assert small.peak_voxel == (13, 15, 9)
    assert small.max_score == pytest.approx(0.95)
    assert small.mean_score == pytest.approx((7 * 0.9 + 0.95) / 8)
    assert small.slice_range == (8, 9)
    assert found.labels.dtype == np.int32
    assert found.labels.shape == two_blobs.shape
    np.testing.assert_array_equal(found.labels == 1, two_blobs == 0.5)
    np.testing.assert_array_equal(found.labels == 2, two_blobs >= 0.9)
    assert found.voxel_ml == pytest.approx(VOXEL_ML)


def test_voxels_touching_at_a_corner_are_one_region() -> None:
    amap = np.zeros((6, 6, 6), np.float32)
    amap[1, 1, 1] = amap[2, 2, 2] = amap[3, 3, 3] = 1.0
    found = engine.find_findings(_result(amap), np.eye(4), threshold=0.5, min_volume_ml=0.0)
    assert len(found.items) == 1
    assert found.items[0].voxels == 3
    assert found.items[0].slice_range == (1, 3)


def test_small_regions_are_left_out(two_blobs: np.ndarray) -> None:
    found = engine.find_findings(_result(two_blobs), AFFINE, threshold=0.3, min_volume_ml=10 * VOXEL_ML)
    assert [f.voxels for f in found.items] == [48]
    assert found.left_out == 1
    assert not found.labels[12:14, 14:16, 8:10].any()  # the left-out region is not labelled either
    nothing = engine.find_findings(_result(two_blobs), AFFINE, threshold=1.0)
    assert nothing.items == ()
    assert not nothing.labels.any()


def test_member_agreement_follows_the_spread(two_blobs: np.ndarray) -> None:
    sure = engine.find_findings(_result(two_blobs), AFFINE, threshold=0.3, min_volume_ml=0.0)
    assert all(f.member_agreement == 1.0 for f in sure.items)  # no spread: every member agrees
    assert all(f.member_spread == 0.0 for f in sure.items)
    spread = np.where(two_blobs > 0, 0.2, 0.0)
    unsure = engine.find_findings(_result(two_blobs, spread), AFFINE, threshold=0.3, min_volume_ml=0.0)
    big = unsure.items[0]
    assert big.member_spread == pytest.approx(0.2)
    assert big.member_agreement == pytest.approx(0.841, abs=1e-3)  # Phi((0.5 - 0.3) / 0.2) = Phi(1)
    at_threshold = engine.find_findings(_result(two_blobs, spread), AFFINE, threshold=0.5, min_volume_ml=0.0)
    assert at_threshold.items[0].member_agreement == pytest.approx(0.5)


def test_bad_arguments_are_refused(two_blobs: np.ndarray) -> None:
    with pytest.raises(ValueError, match="affine"):
        engine.find_findings(_result(two_blobs), np.eye(3), threshold=0.3)
    with pytest.raises(ValueError, match="threshold"):
        engine.find_findings(_result(two_blobs), AFFINE, threshold=float("nan"))
    with pytest.raises(ValueError, match="min_volume_ml"):
        engine.find_findings(_result(two_blobs), AFFINE, threshold=0.3, min_volume_ml=-1)


def test_findings_are_written_beside_the_mask(two_blobs: np.ndarray, tmp_path: Path) -> None:
    scan = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(two_blobs + 1.0, AFFINE), str(scan))
    volume = engine.load_volume(scan)
    found = engine.find_findings(_result(two_blobs), volume.affine, threshold=0.3, min_volume_ml=0.0)
    paths = engine.write_findings(found, volume, tmp_path / "out", extra={"Model": "test-v1"})
    assert paths["tsv"].name == "sub-01_desc-anomaly_findings.tsv"
    assert paths["json"].name == "sub-01_desc-anomaly_findings.json"
    assert paths["tsv"].parent == engine.output_paths(volume, tmp_path / "out")["mask"].parent
    with paths["tsv"].open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert tuple(rows[0]) == COLUMNS
    assert [int(r["id"]) for r in rows] == [1, 2]
    assert float(rows[0]["volume_ml"]) == pytest.approx(48 * VOXEL_ML, abs=1e-4)
    assert float(rows[0]["centre_x_mm"]) == pytest.approx(36.5)
    saved = json.loads(paths["json"].read_text())
    assert saved["Model"] == "test-v1"
    assert saved["threshold"] == 0.3
    assert "largest first" in saved["rank_rule"]
    assert "Phi" in saved["agreement_rule"]
    assert [f["id"] for f in saved["findings"]] == [1, 2]
    assert findings_tsv(found).count("\n") == 3
    table = engine.format_findings(found)
    assert table.splitlines()[0].split()[:2] == ["id", "volume_ml"]
    assert len(table.splitlines()) == 3
    assert "no findings" in engine.format_findings(
        engine.find_findings(_result(two_blobs), AFFINE, threshold=2.0))

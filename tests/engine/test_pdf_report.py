"""The one-page PDF report (engine.pdf_report): a real PDF page, the right slices, drawn the right way round."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

import engine
from engine.pdf_report import _display_slice, report_slices

# Two affines for the same anatomy: voxel axes pointing R, A, S and pointing L, A, S.
RAS = np.diag([2.0, 2.0, 3.0, 1.0])
LAS = np.diag([-2.0, 2.0, 3.0, 1.0])


def _volume(tmp_path: Path, affine: np.ndarray, name: str = "scan_T1w.nii.gz") -> engine.Volume:
    """A 40x40x12 head with a bright marker 10 voxels towards the patient's right and anterior of the centre."""
    data = np.zeros((40, 40, 12), np.float32)
    data[5:35, 5:35, 1:11] = 100.0
    right = 30 if affine[0, 0] > 0 else 10  # +i points right in RAS, left in LAS
    data[right - 1:right + 1, 29:31, 5:7] = 400.0
    data += np.random.default_rng(0).uniform(0, 5, data.shape).astype(np.float32)  # a scan, not a label image
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return engine.load_volume(path)


def _result(volume: engine.Volume) -> engine.AnomalyResult:
    amap = np.where(volume.data > 200, 0.6, 0.0).astype(np.float32)
    amap[18:21, 8:11, 2:4] = 0.4
    n = volume.shape[2]
    scores = np.linspace(0.01, 0.03, n).astype(np.float32)
    return engine.AnomalyResult(anomaly_map=amap, member_spread=amap * 0.2, restored=volume.data.copy(),
                                slice_scores=scores, analysed=np.ones(n, bool), covered=np.ones(n, bool),
                                slice_axis=2, seed=0, sampler="ddim", steps=5, model_id="test-v1",
                                warnings=("scan.nii.gz: a warning the report repeats",))


@pytest.mark.parametrize("affine", [RAS, LAS], ids=["RAS", "LAS"])
def test_slices_are_shown_radiologically_whatever_the_voxel_order(tmp_path: Path, affine: np.ndarray) -> None:
    volume = _volume(tmp_path, affine)
    image, extent = _display_slice(volume, volume.data, 2, 5)
    rows, columns = np.nonzero(image > 200)
    # patient's right on the left of the image, anterior at the top
    assert columns.mean() < image.shape[1] / 2
    assert rows.mean() < image.shape[0] / 2
    assert extent == (0.0, 80.0, 0.0, 80.0)


def test_the_report_is_one_pdf_page_with_a_png_twin(tmp_path: Path) -> None:
    volume = _volume(tmp_path, LAS)
    result = _result(volume)
    findings = engine.find_findings(result, volume.affine, threshold=0.3, min_volume_ml=0.0)
    assert len(findings.items) == 2
    pdf = engine.report_path(volume, tmp_path / "out")
    assert pdf.name == "scan_desc-anomaly_report.pdf"
    written = engine.write_report(volume, result, findings, pdf, png_path=tmp_path / "page.png", brain_mask="m.nii")
    assert written == pdf
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", content)) == 1
    page = imread(tmp_path / "page.png")
    assert page.shape[1] == 1240  # A4 at 150 dpi
    assert abs(page.shape[0] - 1754) <= 1
    assert page[..., :3].std() > 0.05  # not blank
    reddish = (page[..., 0] > 0.55) & (page[..., 1] < 0.2) & (page[..., 2] < 0.2)
    assert reddish.sum() > 200  # the disclaimer, the heat map and the colour bar are drawn in red


def test_the_panels_show_the_findings_with_the_highest_scores(tmp_path: Path) -> None:
    volume = _volume(tmp_path, RAS)
    result = _result(volume)
    amap = result.anomaly_map.copy()
    amap[5:8, 25:28, 9] = 0.9  # a third region, the strongest, on its own slice
    result = engine.AnomalyResult(**{**result.__dict__, "anomaly_map": amap})
    findings = engine.find_findings(result, volume.affine, threshold=0.3, min_volume_ml=0.0)
    slices = report_slices(findings)
    strongest = max(findings.items, key=lambda f: f.max_score)
    assert slices[0] == (9, strongest.id)
    assert [s for s, _ in slices] == sorted({s for s, _ in slices}, key=[s for s, _ in slices].index)  # distinct
    assert len(slices) == 3


def test_a_report_without_findings_still_has_its_page(tmp_path: Path) -> None:
    volume = _volume(tmp_path, RAS)
    result = _result(volume)
    findings = engine.find_findings(result, volume.affine, threshold=0.99)
    assert findings.items == ()
    assert report_slices(findings) == []
    pdf = engine.write_report(volume, result, findings, tmp_path / "report.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")

"""One analysis (issue 20): the viewer's chunked whole-volume run and ``condiff-engine infer`` write the same files
for the same scan, model and settings, byte for byte in every voxel and header."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.bad_inputs import head, save_nifti

THRESHOLD = 0.3


def _payload(path: Path) -> bytes:
    """A .nii.gz file's NIfTI bytes (the gzip wrapper carries a time stamp)."""
    return gzip.decompress(path.read_bytes())


def test_the_viewer_and_the_cli_write_the_same_maps_and_mask(qtbot, settings, tiny_model: Path,
                                                             tmp_path: Path) -> None:
    from app.main_window import MainWindow
    from engine.cli import main

    (tmp_path / "in").mkdir()
    scan = save_nifti(tmp_path / "in" / "synthetic_T1w.nii.gz", head((60, 70, 50)))
    cli_out = tmp_path / "cli"
    assert main(["infer", str(scan), "--model", str(tiny_model), "--out", str(cli_out), "--steps", "1",
                 "--threshold", str(THRESHOLD), "--device", "cpu", "--threads", "1"]) == 0

    window = MainWindow(None, settings, model_path=tiny_model)
    qtbot.addWidget(window)
    window.show()
    controller = window.controller
    qtbot.waitUntil(controller.scheduler.is_idle, timeout=120000)
    assert controller.models.model is not None, controller.models.model_error
    controller.models.set_settings(device="cpu", steps=1, seed=0)
    assert window.open_scan(scan)
    controller.scheduler.request_analysis("volume")
    # Chunk by chunk, nearest the slice on screen first, until the whole plan is done.
    qtbot.waitUntil(lambda: controller.scheduler.is_idle() and window.state.result is not None, timeout=180000)
    result = window.state.result
    assert result.analysed.sum() > 3 * 3  # more than the first chunk: the chunks were merged and filled
    window.state.set_threshold(THRESHOLD)
    written = window.export_results(tmp_path / "viewer")
    assert written is not None, window.errors

    compared = 0
    for viewer_file in sorted(p for p in written.values() if p.name.endswith(".nii.gz")):
        cli_file = cli_out / viewer_file.name
        assert cli_file.exists(), f"the CLI wrote no {viewer_file.name}"
        assert _payload(viewer_file) == _payload(cli_file), viewer_file.name
        compared += 1
    assert compared >= 3  # mask, map and restoration at least
    mask = np.asarray(nib.load(cli_out / next(p.name for p in written.values() if p.name.endswith("_mask.nii.gz")))
                      .dataobj)
    assert mask.any()

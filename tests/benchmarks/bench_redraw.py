"""Slice-change redraw time of the viewer with every overlay on (not collected by pytest; run it as a script).

Usage: ``python tests/benchmarks/bench_redraw.py [--steps N] [--study] [--profile] [--app-root DIR]``

``--study`` measures the study grid instead (issue 23): the BraTS case's T1 analysed, with three more sequences (its
T2, FLAIR and a copy of its T2 standing in for the T1ce this dev case lacks; speed does not depend on the content)
and its segmentation, all in the 2 x 2 grid with the heat map, filled mask and reference outlines on.

A 240x240x155 scan (the BraTS FLAIR from ``../shared/data`` when present, else a synthetic head of that size) with a
whole-volume result from the tests' fake engine, shown with the heat map, the filled mask, member spread and the
restored image side by side. Each step moves one slice and processes events until the window has repainted; the
script prints the median, 90th percentile and maximum in milliseconds. ``--profile`` adds the top functions by
cumulative time (``BENCH_SORT=tottime`` sorts by own time). It draws on ``$DISPLAY`` when set (e.g. Xvfb), else on
Qt's offscreen platform. ``--app-root`` measures another copy of the ``app`` package (e.g. an older commit unpacked
with ``git archive``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "app"))
BRATS = ROOT / ".." / "shared" / "data" / "brats2018-dev" / "Brats18_2013_2_1" / "Brats18_2013_2_1_flair.nii.gz"


def scan_file(folder: Path) -> Path:
    """The BraTS FLAIR (240x240x155), or a synthetic scan of the same size written to ``folder``."""
    if BRATS.exists():
        return BRATS
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (240, 240, 155)), indexing="ij")
    head = (x**2 + y**2 + z**2 < 0.8).astype(np.float32)
    data = head * (300 + 50 * rng.standard_normal(head.shape).astype(np.float32))
    path = folder / "synthetic_240x240x155.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="slice changes to time")
    parser.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    parser.add_argument("--app-root", type=Path, help="folder holding another copy of the app package")
    parser.add_argument("--study", action="store_true", help="four sequences in the grid, a reference outline")
    args = parser.parse_args()
    if args.app_root is not None:
        sys.path.insert(0, str(args.app_root))
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from fake_engine import make_backend
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model").mkdir()
        settings = QSettings(str(folder / "s.ini"), QSettings.Format.IniFormat)
        window = MainWindow(make_backend(folder / "model"), settings)
        window.resize(1600, 1000)
        window.show()
        controller = getattr(window, "controller", None)  # older viewers had no controller
        wait_idle = controller.scheduler.wait_idle if controller is not None else window.wait_idle
        wait_idle(30)
        if args.study:
            import shutil  # noqa: PLC0415

            case = BRATS.parent
            if not case.is_dir():
                sys.exit(f"bench_redraw: --study needs {case}")
            t1ce = folder / f"{case.name}_t1ce.nii.gz"
            shutil.copy(case / f"{case.name}_t2.nii.gz", t1ce)
            opened = window.open_scan(case / f"{case.name}_t1.nii.gz") and window.study.open_study(
                [case / f"{case.name}_t2.nii.gz", case / f"{case.name}_flair.nii.gz", t1ce],
                case / f"{case.name}_seg.nii.gz")
        else:
            opened = window.open_scan(scan_file(folder))
        if not opened:
            sys.exit(f"bench_redraw: {window.errors[-1]}")
        if controller is not None:
            controller.scheduler.request_analysis("volume")
        else:
            window._request_analysis("volume")
        wait_idle(600)
        state = window.state
        if state.result is None:
            sys.exit("bench_redraw: no result")
        for name in ("heat", "mask", "spread"):
            state.set_overlay_visible(name, True)
        state.set_mask_fill(True)
        if args.study:
            state.set_study_grid(True)
        else:
            state.set_side_by_side(True)
        state.set_slice_index(20)
        app.processEvents()

        def step(direction: int) -> float:
            start = time.perf_counter()
            state.step_slice(direction)
            app.processEvents()
            return (time.perf_counter() - start) * 1000

        for _ in range(5):  # warm up caches and the paint path
            step(1)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        times = [step(1 if i % 120 < 60 else -1) for i in range(args.steps)]
        if profiler is not None:
            profiler.disable()
        shape = "x".join(str(n) for n in state.volume.data.shape)
        what = ("four sequences in the study grid with heat, filled mask and reference outlines" if args.study else
                "heat, filled mask, spread and side-by-side restoration")
        print(f"slice change with {what}, {shape} scan, {app.platformName()} platform, {args.steps} steps")
        print(f"median {statistics.median(times):.1f} ms   p90 {np.percentile(times, 90):.1f} ms   "
              f"max {max(times):.1f} ms")
        if profiler is not None:
            pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(25)
        window.close()


if __name__ == "__main__":
    main()

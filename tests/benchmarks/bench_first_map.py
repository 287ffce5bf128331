"""Time from "Analyse volume" to the first anomaly map on screen, with the real engine (not collected by pytest).

Usage: ``python tests/benchmarks/bench_first_map.py [--scan NII] [--model DIR] [--threads N] [--app-root DIR]``

Opens the scan (default: ``resources/samples/patient07_T1.nii.gz``) in the real viewer window with the real engine and
model (default: the bundled ``condiff-t1-small``), waits until the model has loaded, then presses "Analyse volume"
with the cursor on the middle axial slice. It prints, in seconds from the press: when the shown slice first carries a
map (the heat-map image on screen holds a value above zero), when any result first arrived, and when the analysis
ended, plus how many slices carry a map at the end. ``--app-root`` measures another copy of the ``app`` package (e.g.
an older commit unpacked with ``git archive``), which is how the "before" number is taken. It draws on ``$DISPLAY``
when set, else on Qt's offscreen platform; ``--threads`` sets torch's CPU threads (1 on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resources" / "samples" / "patient07_T1.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, default=SAMPLE, help="scan to analyse")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--app-root", type=Path, help="folder holding another copy of the app package")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.app_root is not None:
        sys.path.insert(0, str(args.app_root))
    sys.path.insert(1 if args.app_root is not None else 0, str(ROOT))
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import numpy as np
    import torch
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    import app
    from app.main_window import MainWindow

    torch.set_num_threads(args.threads)
    qt_app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        window = MainWindow(None, settings, model_path=args.model)
        window.resize(1600, 1000)
        window.show()
        controller = window.controller
        controller.models.set_settings(device="cpu")
        if not window.open_scan(args.scan):
            sys.exit(f"bench_first_map: {window.errors[-1]}")
        controller.scheduler.load_model()
        controller.scheduler.wait_idle(300)
        if controller.models.model is None:
            sys.exit(f"bench_first_map: no model: {controller.models.model_error}")
        window.state.set_plane("axial")
        qt_app.processEvents()
        heat = window.view.heat_item
        first_result: float | None = None
        first_map: float | None = None
        start = time.perf_counter()
        controller.scheduler.request_analysis("volume")
        while not controller.scheduler.is_idle() or first_map is None:
            qt_app.processEvents()
            now = time.perf_counter() - start
            if first_result is None and window.state.result is not None:
                first_result = now
            image = heat.image
            if first_map is None and heat.isVisible() and image is not None and float(np.max(image)) > 0:
                first_map = now
            if controller.scheduler.is_idle() and first_map is None:
                break
            time.sleep(0.005)
        total = time.perf_counter() - start
        result = window.state.result
        covered = getattr(result, "covered", None) if result is not None else None
        with_map = int(np.sum(covered if covered is not None else result.analysed)) if result is not None else 0
        info, chosen = controller.models.model.info, controller.models.analysis_settings()
        print(f"viewer {Path(app.__file__).parent}, scan {args.scan.name}, model {info.model_id} ({info.members} "
              f"members, {chosen.sampler} {chosen.steps or info.default_steps} steps), torch threads {args.threads}")
        print(f"first result {first_result if first_result is not None else float('nan'):.2f} s   "
              f"first map on the shown slice {first_map if first_map is not None else float('nan'):.2f} s   "
              f"whole analysis {total:.2f} s   slices with a map {with_map}")
        window.close()


if __name__ == "__main__":
    main()

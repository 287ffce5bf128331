"""Launch to first image of the viewer on a real X display (not collected by pytest; run it as a script).

Usage: ``python tests/benchmarks/bench_launch.py [--runs N] [--scan PATH] [--app-root DIR] [--wait-model]``

Each run starts ``python -m app SCAN`` as a user would (a fresh settings folder, the bundled model, no
``QT_QPA_PLATFORM``) on an X display: ``$DISPLAY`` if set, else a private Xvfb with the openbox window manager (install
them with ``../shared/tools/window-shot.sh`` or ``apt-get install xvfb openbox``). It times, from the moment the
process is spawned, the viewer's ``first image`` log line (interpreter start, imports, window, scan read and drawn)
and, with ``--wait-model``, the line saying the model has loaded. ``--app-root`` runs another copy of the ``app``
package (e.g. an older commit unpacked with ``git archive``) against this checkout's engine, for before/after tables.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCAN = ROOT / "resources" / "samples" / "patient07_T1.nii.gz"
FIRST_IMAGE = re.compile(r"first image ([\d.]+) s after launch")
MODEL_LOADED = re.compile(r"model .* loaded")


def start_display() -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A private Xvfb (1600x1000) with openbox on a free display number."""
    if shutil.which("Xvfb") is None:
        sys.exit("bench_launch: no DISPLAY and no Xvfb (apt-get install xvfb openbox)")
    for number in range(140, 190):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            break
    display = f":{number}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1600x1000x24"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    processes = [server]
    if shutil.which("openbox"):
        processes.append(subprocess.Popen(["openbox"], env=dict(os.environ, DISPLAY=display),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
    return display, processes


def one_launch(scan: Path, display: str, app_root: Path | None, wait_model: bool, timeout_s: float) -> dict[str, float]:
    """Spawn the viewer, read its log until the first image (and the model), then stop it; seconds since spawn."""
    config = tempfile.mkdtemp(prefix="condiff-bench-")
    env = dict(os.environ, DISPLAY=display, XDG_CONFIG_HOME=config, PYTHONUNBUFFERED="1")
    env.pop("QT_QPA_PLATFORM", None)
    if app_root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(app_root), str(ROOT)])
    spawned = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "app", str(scan)], cwd=app_root or ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    times: dict[str, float] = {}
    try:
        assert process.stderr is not None
        deadline = spawned + timeout_s
        for line in process.stderr:
            now = time.perf_counter() - spawned
            if "first_image_s" not in times and (found := FIRST_IMAGE.search(line)):
                times["first_image_s"] = now
                times["first_image_logged_s"] = float(found.group(1))
                if not wait_model:
                    break
            if wait_model and MODEL_LOADED.search(line):
                times["model_loaded_s"] = now
                break
            if time.perf_counter() > deadline:
                break
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(config, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scan", type=Path, default=DEFAULT_SCAN)
    parser.add_argument("--app-root", type=Path, help="folder holding another copy of the app package")
    parser.add_argument("--wait-model", action="store_true", help="also time until the model has loaded")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    processes: list[subprocess.Popen[bytes]] = []
    display = os.environ.get("DISPLAY", "")
    if not display:
        display, processes = start_display()
    try:
        runs = [one_launch(args.scan, display, args.app_root, args.wait_model, args.timeout) for _ in range(args.runs)]
    finally:
        for process in reversed(processes):
            process.terminate()
    print(f"{args.runs} launches of the viewer on {args.scan.name}, display {display}"
          f"{', app from ' + str(args.app_root) if args.app_root else ''}")
    for name in ("first_image_s", "first_image_logged_s", "model_loaded_s"):
        values = [r[name] for r in runs if name in r]
        if values:
            print(f"{name:<22} median {statistics.median(values):6.2f} s   min {min(values):6.2f}   "
                  f"max {max(values):6.2f}   ({len(values)}/{len(runs)} runs)")


if __name__ == "__main__":
    main()

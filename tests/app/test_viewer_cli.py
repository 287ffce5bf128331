"""The command line: headless screenshots, exit codes, and the boundary between app and engine."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import scan_path
from PySide6.QtCore import QSettings
from PySide6.QtGui import QImage

REPO = Path(__file__).resolve().parents[2]


def image_array(path: Path) -> np.ndarray:
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGBA8888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
    return data.reshape(height, image.bytesPerLine() // 4, 4)[:, :width, :3].copy()  # R, G, B


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_screenshot_with_analysis_in_process(qtbot, tmp_path: Path, model_dir: Path, mode: str) -> None:
    from fake_engine import make_backend

    from app.main import main

    png = tmp_path / "shot.png"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    scan = scan_path("ixi" if mode == "volume" else "brats")
    code = main([str(scan), "--screenshot", str(png), "--analyze", mode], backend=make_backend(model_dir),
                settings=settings)
    assert code == 0
    pixels = image_array(png)
    assert pixels.shape[1] >= 1000
    assert pixels.shape[0] >= 700
    assert pixels.std() > 10, "the screenshot is blank"
    heat = (pixels[..., 0] > 200) & (pixels[..., 2] < 80)  # red/orange/yellow overlay pixels
    assert heat.sum() > 50, "the anomaly overlay is missing"


def test_report_from_the_command_line(qtbot, tmp_path: Path, model_dir: Path) -> None:
    """``--report DIR`` writes the PDF the viewer's File > Save report writes, for the analysed scan and its study."""
    from fake_engine import make_backend

    from app.main import main

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    out = tmp_path / "reports"
    scan = scan_path("brats")
    flair = scan.with_name(scan.name.replace("_t1.", "_flair."))
    backend = make_backend(model_dir)
    underlays = []
    real = backend.write_report

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        underlays.append(kwargs.get("underlay", (None,))[0])
        return real(*args, **kwargs)

    backend.write_report = recording
    code = main([str(scan), "--also", str(flair), "--sequence", "FLAIR", "--analyze", "slice", "--report", str(out)],
                backend=backend, settings=settings)
    assert code == 0
    assert len(underlays) == 1
    assert underlays[0].startswith("FLAIR")  # the shown sequence is drawn under the map
    (pdf,) = out.glob("*_report.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) == 1  # one page


def test_report_without_an_analysis_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.main import main

    out = tmp_path / "reports"
    with pytest.raises(SystemExit) as stop:
        main([str(scan_path("ms")), "--report", str(out)])
    assert stop.value.code == 2
    assert "--report needs an analysis" in capsys.readouterr().err
    assert not out.exists()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1")
    env.pop("DISPLAY", None)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_cli_screenshot_of_a_real_scan(tmp_path: Path) -> None:
    png = tmp_path / "ms.png"
    done = run_cli(str(scan_path("ms")), "--screenshot", str(png))
    assert done.returncode == 0, done.stderr
    pixels = image_array(png)
    assert pixels.shape[0] >= 700
    assert pixels.shape[1] >= 1000
    assert pixels.std() > 10


def test_cli_bad_scan_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_text("not an image")
    done = run_cli(str(bad), "--screenshot", str(tmp_path / "x.png"))
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "broken.nii.gz" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_cli_brain_mask_from_another_grid_exits_with_one_line(tmp_path: Path) -> None:
    scan = scan_path("ixi")
    wrong = scan_path("ms").with_name("patient07_lesion.nii.gz")
    done = run_cli(str(scan), "--brain-mask", str(wrong), "--screenshot", str(tmp_path / "x.png"))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("condiff-viewer: ")
    assert "patient07_lesion.nii.gz" in lines[0]
    assert "differs from the scan's" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_screenshot_with_brain_mask_in_process(qtbot, tmp_path: Path, model_dir: Path) -> None:
    from fake_engine import make_backend

    from app.main import main

    scan = scan_path("ixi")
    mask = scan.with_name(scan.name.replace("_T1", "_brainmask"))
    backend = make_backend(model_dir)
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    code = main([str(scan), "--brain-mask", str(mask), "--screenshot", str(tmp_path / "shot.png"), "--analyze"],
                backend=backend, settings=settings)
    assert code == 0
    used = backend.ensembles[-1].brain_masks
    assert len(used) == 1
    assert used[0] is not None
    assert used[0].sum() > 0


def test_cli_rejects_unknown_options() -> None:
    from app.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--no-such-option"])
    assert exit_info.value.code == 2


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "app").rglob("*.py")), ids=lambda p: p.name)
def test_app_uses_only_the_public_engine_api(path: Path) -> None:
    for name in _imports(path):
        assert not name.startswith("engine."), f"{path.name} imports engine submodule {name}"
        assert name.split(".")[0] != "torch", f"{path.name} imports torch"
    if path.name in ("slicing.py", "colormaps.py", "results_cache.py"):
        assert not any(n.startswith(("PySide6", "pyqtgraph")) for n in _imports(path))
    if path.name == "state.py":
        assert not any(n.startswith(("PySide6.QtWidgets", "PySide6.QtGui", "pyqtgraph")) for n in _imports(path))


def test_interactive_launch_opens_the_scan_and_quits(qtbot, tmp_path: Path, model_dir: Path) -> None:
    from fake_engine import make_backend
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main import main
    from app.main_window import MainWindow

    seen = {}
    finished = False  # once main() returns, the timers below must not touch later tests' windows

    def close_windows() -> None:
        if finished:
            return
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.isVisible():
                seen["volume"] = widget.state.volume
                seen["result"] = widget.state.result
                widget.close()

    def poll() -> None:
        if finished:
            return
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and windows[0].controller.scheduler.is_idle() and windows[0].state.result is not None:
            close_windows()
        else:
            QTimer.singleShot(50, poll)

    safety_net = QTimer()
    safety_net.setSingleShot(True)
    safety_net.timeout.connect(close_windows)
    QTimer.singleShot(50, poll)
    safety_net.start(20000)
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    try:
        code = main([str(scan_path("ixi")), "--analyze"], backend=make_backend(model_dir), settings=settings)
    finally:
        finished = True
        safety_net.stop()
    assert code == 0
    assert seen["volume"] is not None
    assert seen["result"] is not None


def test_screenshot_of_a_chosen_slice_and_threshold(qtbot, tmp_path: Path, model_dir: Path) -> None:
    from fake_engine import make_backend
    from PySide6.QtWidgets import QApplication

    from app.main import main
    from app.main_window import MainWindow

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    shots = {}
    for name, extra in {"low": ["--threshold", "0.0"], "high": ["--threshold", "10"]}.items():
        png = tmp_path / f"{name}.png"
        code = main([str(scan_path("brats")), "--screenshot", str(png), "--analyze", "--slice", "60", *extra],
                    backend=make_backend(model_dir), settings=settings)
        assert code == 0
        shots[name] = image_array(png)
        # The window is destroyed before main returns (not left to the interpreter's exit, which crashed).
        assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
    heat = {k: ((v[..., 0] > 200) & (v[..., 2] < 80)).sum() for k, v in shots.items()}
    assert heat["low"] > heat["high"] + 50  # the threshold really applies to the overlay

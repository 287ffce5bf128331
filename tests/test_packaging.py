"""Fast checks of the packaging files, building nothing: the spec, the entry scripts, the .desktop entry, the icon."""

from __future__ import annotations

import ast
import configparser
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "condiff.spec"
DESKTOP = ROOT / "resources" / "condiff.desktop"
ICON = ROOT / "resources" / "icons" / "condiff.png"


def _spec_tree() -> ast.Module:
    return ast.parse(SPEC.read_text(encoding="utf-8"), filename=str(SPEC))


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


def _keyword(call: ast.Call, name: str) -> ast.expr:
    matches = [k.value for k in call.keywords if k.arg == name]
    assert matches, f"{ast.unparse(call.func)} has no {name}="
    return matches[0]


def test_spec_parses_and_builds_two_programs_into_one_folder() -> None:
    tree = _spec_tree()
    names = sorted(ast.literal_eval(_keyword(call, "name")) for call in _calls(tree, "EXE"))
    assert names == ["condiff-engine", "condiff-viewer"]
    for call in _calls(tree, "EXE"):
        assert ast.literal_eval(_keyword(call, "exclude_binaries")) is True  # binaries go to the shared COLLECT
    collects = _calls(tree, "COLLECT")
    assert len(collects) == 1
    assert [ast.unparse(arg) for arg in collects[0].args[:2]] == ["viewer_exe", "engine_exe"]
    assert len(_calls(tree, "Analysis")) == 1


def test_spec_excludes_unused_heavy_modules() -> None:
    tree = _spec_tree()
    assigns = [n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "excludes"]
    assert len(assigns) == 1
    excludes = set(ast.literal_eval(assigns[0].value))
    for name in ("PySide6.QtWebEngineCore", "PySide6.QtQml", "PySide6.QtQuick", "PySide6.Qt3DCore",
                 "PySide6.QtMultimedia", "PySide6.QtNetwork", "tkinter", "tensorboard", "triton",
                 "IPython", "pytest", "PyQt5"):
        assert name in excludes, name
    # the modules the viewer and engine import must never be excluded
    for needed in ("PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtOpenGL", "torch", "diffusers",
                   "scipy", "nibabel", "SimpleITK", "skimage", "pyqtgraph", "safetensors", "sympy",
                   "matplotlib", "highdicom", "pydicom",  # the report and the DICOM SEG export
                   "onnxruntime", "onnx"):  # the CPU runtime and its exporter
        assert needed not in excludes, needed


def test_spec_collects_the_data_files_packages_read_at_run_time() -> None:
    """Packages that open files from their own folder at run time need them collected (the import scan sees only
    modules): bidsschematools' schema for BIDS, highdicom's DICOM tables for the SEG export."""
    tree = _spec_tree()
    collected = {ast.literal_eval(call.args[0]) for call in ast.walk(tree)
                 if isinstance(call, ast.Call) and ast.unparse(call.func) == "collect_data_files"}
    assert {"bidsschematools", "highdicom"} <= collected


def test_spec_bundles_visible_resources_only(tmp_path: Path) -> None:
    """Execute the spec's helper for listing files on a fake resources tree (the PyInstaller calls are not run)."""
    tree = _spec_tree()
    helper = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_visible_files")
    namespace: dict[str, object] = {"Path": Path}
    exec(compile(ast.Module(body=[helper], type_ignores=[]), str(SPEC), "exec"), namespace)  # noqa: S102
    model = tmp_path / "models" / "condiff-t1-small"
    (model / ".train" / "fold-0").mkdir(parents=True)
    for name in ("model.json", "member-0.safetensors", ".model.json.lock", ".train/fold-0/checkpoint.pt"):
        (model / name).write_text("x")
    found = namespace["_visible_files"](tmp_path)  # type: ignore[operator]
    assert sorted(p.name for p in found) == ["member-0.safetensors", "model.json"]
    assert namespace["_visible_files"](tmp_path / "samples") == []  # type: ignore[operator]  # missing folder: none


@pytest.mark.parametrize(("script", "target"), [("condiff_viewer.py", "app.main"), ("condiff_engine.py", "engine.cli")])
def test_entry_scripts_call_freeze_support_before_importing_the_program(script: str, target: str) -> None:
    tree = ast.parse((PACKAGING / script).read_text(encoding="utf-8"))
    guard = next(n for n in tree.body if isinstance(n, ast.If))
    assert ast.unparse(guard.test) == "__name__ == '__main__'"
    first = guard.body[0]
    assert ast.unparse(first) == "multiprocessing.freeze_support()"
    imports = [n for n in guard.body if isinstance(n, ast.ImportFrom)]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [(target, ["main"])]
    assert guard.body.index(imports[0]) > 0
    top_level_imports = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert top_level_imports <= {"multiprocessing", "sys"}  # nothing heavy before freeze_support


def test_desktop_entry_has_the_required_keys() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in desktop entries
    parser.read(DESKTOP, encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "condiff"
    assert entry["Exec"] == "condiff-viewer %f"
    assert entry["Icon"] == "condiff"
    categories = entry["Categories"].split(";")
    assert categories[-1] == ""  # lists end with a semicolon
    assert {"Science", "MedicalSoftware", "Graphics"} <= set(categories)
    text = DESKTOP.read_text(encoding="utf-8")
    assert text.startswith("[Desktop Entry]\n")
    assert "\r" not in text


def test_icon_is_a_square_256_png_with_transparent_corners() -> None:
    from PIL import Image

    with Image.open(ICON) as image:
        assert image.format == "PNG"
        assert image.size == (256, 256)
        rgba = image.convert("RGBA")
        assert rgba.getpixel((0, 0))[3] == 0  # rounded corner
        assert rgba.getpixel((128, 128))[3] == 255
        assert len(rgba.getcolors(maxcolors=1 << 16) or []) > 100  # a drawing, not a flat square


def test_icon_script_redraws_the_committed_icon(tmp_path: Path) -> None:
    out = tmp_path / "icon.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(PACKAGING / "make_icon.py"), "--out", str(out)], check=True, env=env,
                   timeout=60)
    from PIL import Image, ImageChops

    with Image.open(out) as drawn, Image.open(ICON) as committed:
        assert ImageChops.difference(drawn.convert("RGBA"), committed.convert("RGBA")).getbbox() is None


def test_build_script_is_executable_bash_and_uses_the_spec() -> None:
    script = PACKAGING / "build.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "packaging/condiff.spec" in text
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)  # syntax check only


def test_install_desktop_registers_a_bundle_for_the_user(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("condiff-viewer", "condiff-engine"):
        (bundle / name).write_text("#!/bin/sh\n")
        (bundle / name).chmod(0o755)
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    subprocess.run(["bash", str(PACKAGING / "install-desktop.sh"), str(bundle)], check=True, env=env, timeout=30,
                   capture_output=True)
    assert (home / ".local" / "bin" / "condiff-viewer").resolve() == bundle / "condiff-viewer"
    assert (home / ".local" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "condiff.png").is_file()
    entry = (home / ".local" / "share" / "applications" / "condiff.desktop").read_text(encoding="utf-8")
    assert f'Exec="{bundle}/condiff-viewer" %f\n' in entry
    assert "Icon=condiff\n" in entry
    subprocess.run(["bash", str(PACKAGING / "install-desktop.sh"), "--uninstall"], check=True, env=env, timeout=30,
                   capture_output=True)
    assert not (home / ".local" / "share" / "applications" / "condiff.desktop").exists()

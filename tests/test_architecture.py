"""The engine/app boundary (design.md §2): the engine never imports Qt or the app, and stays cheap to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ENGINE_FILES = sorted((REPO_ROOT / "engine").rglob("*.py"))
FORBIDDEN_IN_ENGINE = ("app", "PySide6", "pyqtgraph", "PyQt5", "PyQt6", "shiboken6")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_engine_imports_no_gui_and_no_app(path: Path) -> None:
    bad = {name for name in _imported_modules(path) if name.split(".")[0] in FORBIDDEN_IN_ENGINE}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_engine_has_no_print_calls() -> None:
    offenders = []
    for path in ENGINE_FILES:
        if path.name in ("cli.py", "cli_output.py"):  # the command line is the one place that prints
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders


def test_importing_engine_does_not_load_torch_or_qt() -> None:
    code = "import sys, engine; engine.Volume; print(sorted(m for m in ('torch', 'PySide6') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


MAX_CLASS_LINES = 400
"""No class of the engine or the viewer grows past this (issue 20: one class, one job)."""


def _class_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None]


def test_no_class_is_over_the_size_limit() -> None:
    files = ENGINE_FILES + sorted((REPO_ROOT / "app").rglob("*.py"))
    too_long = [f"{path.relative_to(REPO_ROOT)}:{name} ({lines} lines)"
                for path in files for name, lines in _class_lengths(path) if lines > MAX_CLASS_LINES]
    assert not too_long, too_long


def test_the_controller_only_wires_its_parts() -> None:
    """The controller delegates scan input, the model, scheduling and export to their own classes."""
    from app.controller import AnalysisController  # noqa: PLC0415

    own = {name for name, value in vars(AnalysisController).items() if callable(value) and not name.startswith("__")}
    for delegated in ("open_scan", "load_model", "request_analysis", "export", "save_report", "set_settings"):
        assert delegated not in own, delegated
    assert _class_lengths(REPO_ROOT / "app" / "controller.py")[0][1] < 150

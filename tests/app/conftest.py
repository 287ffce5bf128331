"""Fixtures for the viewer tests: offscreen Qt, a temporary settings store, the fake engine and real scans."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from tests.conftest import real_scan  # noqa: E402 - the one module that knows where data live

SCANS = {
    "brats": "brats2018-dev/Brats18_2013_2_1/Brats18_2013_2_1_flair.nii.gz",
    "ms": "ms-lesjak/patient07/patient07_T1.nii.gz",  # bundled in resources/samples
    "ixi": "ixi-t1/val/IXI056-HH-1327_T1.nii.gz",  # bundled in resources/samples
    "stroke": "stroke-rorden/T2.nii.gz",
}


@pytest.fixture(autouse=True, scope="session")
def _private_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep any default QSettings away from the user's own files."""
    folder = str(tmp_path_factory.mktemp("qsettings"))
    for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, folder)
        QSettings.setPath(fmt, QSettings.Scope.SystemScope, folder)


def scan_path(name: str) -> Path:
    """A real scan: the bundled sample when there is one, else from the shared data (or skip, naming it)."""
    return real_scan(SCANS[name])


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "viewer-settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fake-model"
    folder.mkdir()
    return folder


@pytest.fixture
def make_window(qtbot, settings: QSettings, model_dir: Path):
    """Factory: a shown MainWindow on a fake backend, with its model loaded."""
    from fake_engine import make_backend

    from app.main_window import MainWindow

    def make(**backend_options):
        backend = make_backend(model_dir, **backend_options)
        window = MainWindow(backend, settings)
        qtbot.addWidget(window)
        window.resize(1200, 800)
        window.show()
        qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=5000)
        return window

    return make

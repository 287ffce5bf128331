"""Nothing reaches for the network at run time: every socket is blocked while a whole analysis runs.

The CLI loads the bundled model and a trained tiny one, analyses the bundled IXI sample inside its brain mask and
writes its outputs, findings and report; the viewer, headless on the real engine, opens the sample, loads the model,
analyses the slice on screen, exports and saves its report. Any attempt to resolve a name or open a connection is
recorded and refused; the test fails if there was one.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SAMPLE_IXI, SAMPLE_IXI_MASK


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse every connection, send and name lookup through Python's socket module; returns the attempts."""
    attempts: list[str] = []

    def refuse(name: str):  # noqa: ANN202 - a replacement for several signatures
        def blocked(*args: object, **_kwargs: object) -> None:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network blocked by the test: {name}")

        return blocked

    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        monkeypatch.setattr(socket.socket, name, refuse(f"socket.{name}"))
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "getfqdn"):
        monkeypatch.setattr(socket, name, refuse(name))
    return attempts


def test_the_blocker_blocks(no_network: list[str]) -> None:
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("example.org", 443), timeout=1)
    with pytest.raises(OSError, match="network blocked"), socket.socket() as sock:
        sock.connect(("127.0.0.1", 9))
    assert len(no_network) == 2
    no_network.clear()


@pytest.mark.timeout(600)
def test_a_whole_analysis_from_the_command_line(no_network: list[str], tiny_model: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["info", "--model", str(REPO_ROOT / "resources" / "models" / "condiff-t1-small")]) == 0
    import engine

    engine.load_ensemble(engine.default_model_path(), device="cpu")  # the bundled model, built and loaded
    out = tmp_path / "out"
    assert main(["infer", str(SAMPLE_IXI), "--brain-mask", str(SAMPLE_IXI_MASK), "--model", str(tiny_model),
                 "--out", str(out), "--threshold", "0.3", "--steps", "1", "--device", "cpu", "--threads", "1",
                 "--report"]) == 0, capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert any(name.endswith("_desc-anomalyscore_map.nii.gz") for name in written)
    assert any(name.endswith("_desc-anomaly_findings.tsv") for name in written)
    assert any(name.endswith(".pdf") for name in written)
    assert no_network == []


@pytest.mark.timeout(600)
def test_the_viewer_headless(no_network: list[str], qtbot, tiny_model: Path, tmp_path: Path) -> None:
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    settings = QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)
    window = MainWindow(None, settings, model_path=tiny_model)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=120000)
    assert window.controller.models.model is not None, window.controller.models.model_error
    window.controller.models.set_settings(device="cpu", steps=1)
    assert window.open_scan(SAMPLE_IXI)
    assert window.open_brain_mask(SAMPLE_IXI_MASK)
    with qtbot.waitSignal(window.controller.scheduler.analysis_done, timeout=300000):
        window.controller.scheduler.request_analysis("slice")
    assert window.state.result is not None
    written = window.export_results(tmp_path / "export")
    assert written
    assert all(Path(p).exists() for p in written.values())
    assert window.controller.exports.save_report(tmp_path / "report") is not None
    assert window.errors == []
    assert no_network == []

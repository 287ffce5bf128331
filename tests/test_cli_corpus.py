"""The bad-input corpus (tests/bad_inputs.py) through ``condiff-engine infer``.

An error case exits with status 1 and prints exactly one line, ``condiff-engine: error: <path>: <problem>``, with no
traceback and nothing left in the output folder; a warning case runs to the end, says what it did in one logged
line, and writes its outputs; the input is never changed. Outputs that cannot be written (a file where the folder
should be, a folder that refuses writes, a full disk) are simulated and end the same way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.cli import main
from tests.bad_inputs import MODEL_CASES, SCAN_CASES, by_name, head, make_model_folder, save_nifti
from tests.conftest import REPO_ROOT
from tests.engine.test_bad_input_corpus import snapshot

SCANS = by_name(SCAN_CASES)
MODELS = by_name(MODEL_CASES)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-preset model with untrained members: enough to run the whole command quickly."""
    return make_model_folder(tmp_path_factory.mktemp("cli-corpus") / "model")


def infer(scan: Path, model: Path, out: Path) -> int:
    return main(["infer", str(scan), "--model", str(model), "--out", str(out), "--threshold", "0.5", "--steps", "1",
                 "--device", "cpu", "--threads", "1"])


def the_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("condiff-engine: error: "), lines[0]
    return lines[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SCANS))
def test_infer_on_a_scan_case(tmp_path: Path, model: Path, name: str, capsys: pytest.CaptureFixture[str],
                              caplog: pytest.LogCaptureFixture) -> None:
    case = SCANS[name]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = case.build(inputs)
    before = snapshot(inputs)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="engine"):
        status = infer(path, model, out)
    if case.outcome == "error":
        assert status == 1
        line = the_error_line(capsys)
        assert line.startswith(f"condiff-engine: error: {path}: ")
        assert case.says in line.lower()
        assert not out.exists() or not any(out.iterdir())
    else:
        assert status == 0, capsys.readouterr().err
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if case.outcome == "warning":
            assert any(case.says in w.lower() and w.startswith(str(path)) for w in warnings), warnings
        sidecar = json.loads(next(out.glob("*_desc-anomaly_mask.json")).read_text())
        assert sidecar["Threshold"] == 0.5
        if case.outcome == "warning":  # the sidecar keeps what the loader said about the input
            assert any(case.says in w.lower() for w in sidecar["InputWarnings"])
            assert any(case.says in w.lower() for w in sidecar["Warnings"])  # and so does the result (the report)
            assert sum(case.says in w.lower() for w in warnings) == 1  # logged once, not again by the analysis
        else:
            assert sidecar["InputWarnings"] == []
        assert not list(out.glob(".*.tmp"))
    assert snapshot(inputs) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_infer_with_a_model_case(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    case = MODELS[name]
    scan = save_nifti(tmp_path / "scan.nii.gz", head())
    model = case.build(tmp_path)
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    assert infer(scan, model, out) == 1
    line = the_error_line(capsys)
    assert line.startswith(f"condiff-engine: error: {model}")
    assert case.says in line.lower()
    assert not out.exists()
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------ outputs
def _refuse_temporary_files(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def refuse(*_args: object, **_kwargs: object) -> tuple[int, str]:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _fill_the_disk_after(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    """Writes succeed for the first ``allowed`` bytes of each file, then fail as on a full disk (ENOSPC)."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh: object) -> None:
            self.fh = fh
            self.written = 0

        def write(self, data: bytes) -> int:
            room = allowed - self.written
            if len(data) > room:
                self.fh.write(data[:max(room, 0)])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.fh.write(data)

        def __getattr__(self, name: str) -> object:
            return getattr(self.fh, name)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))


OUTPUT_CASES = ["out_is_a_file", "folder_unwritable", "disk_full_at_once", "disk_full_midway"]


def break_output(name: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``out`` an output that cannot be written, as the corpus case ``name`` says (simulated where root could
    write anyway): a file in the way, no permission, or a disk full at once or after a header's worth of bytes."""
    if name == "out_is_a_file":
        out.write_text("precious")
    else:
        out.mkdir()
    if name == "folder_unwritable":
        _refuse_temporary_files(monkeypatch, errno.EACCES)  # as root, chmod would not stop us: simulate
    elif name == "disk_full_at_once":
        _fill_the_disk_after(monkeypatch, 0)
    elif name == "disk_full_midway":
        _fill_the_disk_after(monkeypatch, 400)  # a header's worth, then no room


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_infer_into_an_output_that_cannot_be_written(tmp_path: Path, model: Path, name: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    scan = save_nifti(tmp_path / "scan.nii.gz", head())
    out = tmp_path / "out"
    break_output(name, out, monkeypatch)
    before = snapshot(tmp_path)
    assert infer(scan, model, out) == 1
    line = the_error_line(capsys)
    assert str(out) in line
    assert snapshot(tmp_path) == before  # no partial file, no temporary file, the scan and the file untouched


# ------------------------------------------------------------------------------------------------ a real process
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO_ROOT, check=False)


@pytest.mark.timeout(300)
def test_a_label_image_warns_and_a_bad_file_is_one_line_in_a_real_process(tmp_path: Path, model: Path) -> None:
    mask = SCANS["binary_mask_as_scan"].build(tmp_path)
    done = _run("infer", str(mask), "--model", str(model), "--out", str(tmp_path / "out"), "--threshold", "0.5",
                "--steps", "1", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "looks like a label image" in done.stderr
    png = SCANS["png_named_nifti"].build(tmp_path)
    failed = _run("infer", str(png), "--model", str(model), "--out", str(tmp_path / "out2"), "--threshold", "0.5")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"condiff-engine: error: {png}: is not gzip-compressed though its name ends in .gz (it looks like a PNG image)"]
    assert not (tmp_path / "out2").exists()

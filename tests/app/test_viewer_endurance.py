"""Endurance: the viewer on the real engine goes through many analyse/cancel cycles without hanging or leaking.

A cycle opens each of two scans (the bundled IXI sample with its brain mask, and a synthetic head), and for each
starts a whole-volume analysis with a fresh seed (so the cache never already holds it) and cancels it, at once or after
its first chunk has landed; then one slice analysis runs to the end. After every cycle the test records the resident
memory (after a garbage collection and ``malloc_trim``) and the number of OS threads. The result cache keeps at most
four results, all filled in the first cycle, so from then on memory should stay flat.

Checked: every cycle ends idle within its timeout; the thread count never grows past the first cycle's; resident
memory after the last cycle is within 10 % of what it was after the first.

``CONDIFF_ENDURANCE_CYCLES=200`` runs a longer cycle count locally; ``CONDIFF_ENDURANCE_LOG=<file>`` writes the
memory and thread curve there as JSON.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.bad_inputs import head, save_nifti
from tests.conftest import SAMPLE_IXI, SAMPLE_IXI_MASK

CYCLES = int(os.environ.get("CONDIFF_ENDURANCE_CYCLES", "20"))
LOG = os.environ.get("CONDIFF_ENDURANCE_LOG")
MAX_GROWTH = 0.10


def _rss_mb() -> float:
    with Path("/proc/self/status").open() as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _os_threads() -> int:
    return sum(1 for _ in Path("/proc/self/task").iterdir())


def _settle(qtbot) -> None:  # noqa: ANN001
    """Let queued signals and deferred deletes run, then give freed memory back to the system."""
    from PySide6.QtCore import QCoreApplication, QEvent

    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qtbot.wait(20)
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory and threads from /proc (Linux)")
@pytest.mark.slow
@pytest.mark.timeout(max(900, CYCLES * 60))
def test_analyse_and_cancel_cycles(qtbot, settings, tiny_model: Path, tmp_path: Path) -> None:
    from app.main_window import MainWindow

    synthetic = save_nifti(tmp_path / "synthetic_T1w.nii.gz", head((60, 70, 50)))
    scans = [(SAMPLE_IXI, SAMPLE_IXI_MASK), (synthetic, None)]
    window = MainWindow(None, settings, model_path=tiny_model)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(window.controller.scheduler.is_idle, timeout=120000)
    controller = window.controller
    assert controller.models.model is not None, controller.models.model_error
    controller.models.set_settings(device="cpu", steps=1)
    # Analyses that ran, by kind: a plan job finishes whatever happens, so it proves nothing and is not counted.
    jobs: dict[str, int] = {"chunks_finished": 0, "chunks_cancelled": 0, "slices_finished": 0}

    def count(outcome: str, job: object) -> None:
        kind = type(getattr(job, "task", None)).__name__
        key = {"VolumeChunk": "chunks", "Analysis": "slices"}.get(kind)
        if key is not None and f"{key}_{outcome}" in jobs:
            jobs[f"{key}_{outcome}"] += 1

    controller.scheduler.runner.finished.connect(lambda job, *_: count("finished", job))
    controller.scheduler.runner.cancelled.connect(lambda job: count("cancelled", job))

    curve: list[dict[str, float]] = []
    seed = 0
    for cycle in range(CYCLES):
        start = time.monotonic()
        for scan, mask in scans:
            assert window.open_scan(scan)
            if mask is not None:
                assert window.open_brain_mask(mask)
            for wait_for_a_chunk in (False, True):
                seed += 1
                # Enough sampler steps that the volume run is still working when the cancel arrives, on a fast
                # idle machine too (with one step the tiny model finished most runs before they could be cancelled).
                controller.models.set_settings(seed=seed, steps=25)
                controller.scheduler.request_analysis("volume")
                if wait_for_a_chunk:
                    qtbot.waitUntil(lambda: window.state.result is not None, timeout=120000)
                controller.scheduler.cancel_analysis()
                qtbot.waitUntil(controller.scheduler.is_idle, timeout=60000)  # a hang fails here
        controller.models.set_settings(steps=1)
        with qtbot.waitSignal(controller.scheduler.analysis_done, timeout=120000):
            controller.scheduler.request_analysis("slice")
        assert controller.scheduler.is_idle()
        assert window.errors == [], window.errors
        _settle(qtbot)
        curve.append({"cycle": cycle + 1, "rss_mb": round(_rss_mb(), 1), "os_threads": _os_threads(),
                      "python_threads": threading.active_count(), "seconds": round(time.monotonic() - start, 2)})

    if LOG:
        Path(LOG).write_text(json.dumps({"jobs": jobs, "curve": curve}, indent=1))
    # Real work ran and was stopped: each waited-for volume run finished a chunk and had the next one cancelled,
    # and every cycle's slice analysis finished.
    assert jobs["chunks_finished"] >= 2 * CYCLES, jobs
    assert jobs["chunks_cancelled"] >= 2 * CYCLES, jobs
    assert jobs["slices_finished"] == CYCLES, jobs
    first, last = curve[0], curve[-1]
    peak_threads = max(point["os_threads"] for point in curve)
    assert peak_threads <= first["os_threads"], curve
    assert max(point["python_threads"] for point in curve) <= first["python_threads"], curve
    growth = (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"]
    assert growth < MAX_GROWTH, f"resident memory grew {growth:.1%} after the first cycle: {curve}"

"""Probe (issue 21): ten members' five network calls, one member at a time on two threads against two members at once
on one thread each, with the bundled model's cached ONNX Runtime sessions (run the model once first, e.g.
``make setup``, so they are exported).

Usage (idle machine)::

    python tests/benchmarks/probe_member_threads.py

Not a test: it prints times.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.runtimes import cache_folder  # noqa: E402


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> int:
    files = sorted(cache_folder().glob("*.onnx"))[:10]
    if not files:
        print(f"no exported member under {cache_folder()}")  # noqa: T201
        return 1
    two = [_session(f, 2) for f in files]
    one = [_session(f, 1) for f in files]
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        feed = {"x": rng.random((batch, 2, 64, 64), dtype=np.float32), "t": np.full(batch, 799, np.int64)}

        def member(session: ort.InferenceSession, feed: dict = feed) -> None:
            for _ in range(5):
                session.run(None, feed)

        for _ in range(3):
            start = time.perf_counter()
            for session in two:
                member(session)
            sequential = time.perf_counter() - start
            start = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(member, one))
            side_by_side = time.perf_counter() - start
            print(f"batch {batch}: one member at a time on 2 threads {sequential:.3f} s, "  # noqa: T201
                  f"two at once on 1 thread each {side_by_side:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Probe (issue 21): how long the viewer's first map takes, the centre slice of ``bench``'s synthetic BraTS-size
volume analysed alone by all ten members, in each runtime (three neighbouring planned slices, one call each).

Usage (idle machine; for AVX2 kernels in every library, run it under ``tests/benchmarks/avx2-only.sh``)::

    python tests/benchmarks/probe_first_map.py --threads 2

Not a test: it prints times.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.bench import _synthetic_brats_volume  # noqa: E402
from engine.ensemble import default_model_path, load_ensemble  # noqa: E402
from engine.results import AnalysisSettings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", default="onnxruntime,torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = _synthetic_brats_volume()
    for runtime in args.runtimes.split(","):
        ensemble = load_ensemble(args.model, device="cpu", runtime=runtime)
        settings = AnalysisSettings(sampler=ensemble.preset.default_sampler)
        plan = ensemble.plan_slices(volume, settings=settings)
        seconds = []
        for k in range(3):
            start = time.perf_counter()
            ensemble.analyse(volume, settings=settings, slices=[plan[len(plan) // 2 + k]])
            seconds.append(round(time.perf_counter() - start, 2))
        print(f"{torch.backends.cpu.get_cpu_capability()} {runtime}: first map {seconds} s")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``condiff-engine bench`` runs end to end on a tiny model and reports the keys the README's numbers come from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.bench import PAPER_STEPS, _synthetic_brats_volume, matmul_gflops, run_bench
from engine.ensemble import load_ensemble
from engine.results import AnalysisSettings


def test_bench_reports_speed_keys_on_a_tiny_model(tiny_model: Path) -> None:
    torch.set_num_threads(1)
    report = run_bench(preset="tiny", model=tiny_model, device="cpu", train_steps=1)
    for key in ("first_slice_seconds", "volume_seconds", "speedup_fast_vs_paper", "matmul_gflops", "unet_gflops",
                "unet_fraction_of_matmul", "train_s_per_step", "peak_rss_mb"):
        assert report[key] > 0, key
    assert report["members"] == 2
    assert report["first_slice_seconds"] < report["volume_seconds"]
    # The derived keys agree with the keys they are derived from (each recomputed here from its inputs).
    ensemble = load_ensemble(tiny_model, device="cpu")
    fast = AnalysisSettings(sampler=ensemble.preset.default_sampler)
    planned = ensemble.plan_slices(_synthetic_brats_volume(), settings=fast)
    assert report["fast_slices_analysed"] == len(planned)
    steps = ensemble.steps_for(fast)
    assert report["fast_sampler"] == f"ddim x {steps} steps"
    calls = len(planned) * steps * 2
    assert report["fast_ms_per_slice_step_member"] * calls / 1000 == pytest.approx(report["volume_seconds"], abs=0.06)
    fast_per_slice_step = report["fast_ms_per_slice_step_member"] * steps
    paper_per_slice = report["paper_ms_per_slice_step_member"] * PAPER_STEPS
    assert report["speedup_fast_vs_paper"] == pytest.approx(paper_per_slice / fast_per_slice_step, rel=0.05, abs=0.1)
    assert report["unet_fraction_of_matmul"] == pytest.approx(report["unet_gflops"] / report["matmul_gflops"],
                                                              rel=0.02, abs=0.002)
    # The tiny network costs next to nothing, so both samplers are dominated by fixed costs here; a real model's
    # ratio is in the README. What must hold: the paper's protocol was timed per slice, step and member.
    assert report["paper_ms_per_slice_step_member"] > 0
    assert 0 < report["unet_fraction_of_matmul"] < 2


def test_matmul_rate_is_measured() -> None:
    assert matmul_gflops(torch.device("cpu"), size=256, repeat=2) > 0.1


def test_bench_can_measure_what_an_avx2_machine_runs(tmp_path: Path) -> None:
    """``--isa avx2`` restricts PyTorch's kernels to AVX2 (reported as the CPU capability), in a fresh process."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    def run(isa: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "engine", "bench", "--preset", "tiny", "--no-volume",
                               "--train-steps", "1", "--threads", "1", "--isa", isa, "--json"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True)
        return json.loads(done.stdout)

    restricted = run("avx2")
    assert restricted["cpu_capability"] == "AVX2"
    assert restricted["onednn_max_cpu_isa"] == "AVX2"
    assert restricted["runtime"] == "torch"  # the one runtime the switches restrict
    native = run("native")
    assert native["onednn_max_cpu_isa"] == "native"
    assert native["cpu_capability"] in ("AVX2", "AVX512", "DEFAULT", "ZVECTOR", "VSX", "NEON", "SVE256")


def test_bench_refuses_to_time_onnxruntime_under_switches_that_do_not_restrict_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["bench", "--preset", "tiny", "--no-volume", "--isa", "avx2", "--runtime", "onnxruntime"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("condiff-engine: error: --isa avx2 restricts PyTorch's kernels only; to time onnxruntime as on an "
                   "AVX2-only CPU, run bench under tests/benchmarks/avx2-only.sh instead")

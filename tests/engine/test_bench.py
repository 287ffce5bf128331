"""``condiff-engine bench`` runs end to end on a tiny model and reports the keys the README's numbers come from."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.bench import matmul_gflops, run_bench


def test_bench_reports_speed_keys_on_a_tiny_model(tiny_model: Path) -> None:
    torch.set_num_threads(1)
    report = run_bench(preset="tiny", model=tiny_model, device="cpu", train_steps=1)
    for key in ("first_slice_seconds", "volume_seconds", "speedup_fast_vs_paper", "matmul_gflops", "unet_gflops",
                "unet_fraction_of_matmul", "train_s_per_step", "peak_rss_mb"):
        assert report[key] > 0, key
    assert report["members"] == 2
    assert report["volume_seconds"] == report["fast_volume_s"]
    assert report["first_slice_seconds"] < report["volume_seconds"]
    # The tiny network costs next to nothing, so both samplers are dominated by fixed costs here; a real model's
    # ratio is in the README. What must hold: the paper's protocol was timed per slice, step and member.
    assert report["paper_ms_per_slice_step_member"] > 0
    assert 0 < report["unet_fraction_of_matmul"] < 2


def test_matmul_rate_is_measured() -> None:
    assert matmul_gflops(torch.device("cpu"), size=256, repeat=2) > 0.1

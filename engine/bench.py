"""``condiff-engine bench``: speed and memory of a preset (and of a model) on this machine.

Measured, not estimated: parameters and FLOPs per network call, forward time per slice, training steps per second,
sampler time per slice and step (the network calls in the runtime an analysis uses, ``--runtime``), and the wall time
of analysing a whole BraTS-size volume with the fast sampler and with the paper's 50-step sampler (the latter on a
subset of slices, scaled to the volume and marked as such). A preset without trained weights is timed with randomly
initialised members: speed does not depend on the weights.
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.config import get_preset
from engine.devices import resolve_device
from engine.diffusion import draw_timesteps_and_noise, make_train_scheduler, training_loss
from engine.ensemble import Ensemble, load_ensemble
from engine.network import build_unet, count_parameters
from engine.readers import load_volume
from engine.results import AnalysisSettings
from engine.runtimes import RuntimeName, in_runtime, resolve_runtime
from engine.samplers import PAPER_STEPS
from engine.volumes import Volume

MEMBERS = 10


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _synthetic_brats_volume() -> Volume:
    """A 240 x 240 x 155, 1 mm LPS volume with an ellipsoidal "brain" of BraTS size."""
    import nibabel as nib  # noqa: PLC0415

    shape = (240, 240, 155)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    centre = np.array([120, 125, 70], dtype=np.float32)
    radii = np.array([68, 85, 65], dtype=np.float32)
    inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1
    rng = np.random.default_rng(0)
    data = np.where(inside, 400 + 100 * rng.standard_normal(shape).astype(np.float32), 0).astype(np.float32)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    return Volume(np.clip(data, 0, None), affine, header, None, "nifti")


def _random_ensemble(preset_name: str, device: torch.device, members: int, runtime: RuntimeName) -> Ensemble:
    preset = get_preset(preset_name)
    meta = {"name": f"random-{preset_name}", "version": "0", "preset": preset.to_dict(), "modality": "t1",
            "expects_skull_stripped": True, "ssim_convention": "standard", "calibration": None}
    models = []
    for fold in range(members):
        torch.manual_seed(fold)
        net = build_unet(preset.unet, preset.preprocess.size).to(device).eval()
        models.append((fold, in_runtime(net, runtime, preset)))  # random weights: exported in memory, not cached
    return Ensemble(Path(tempfile.gettempdir()), meta, models, device, runtime)


def _time(fn: Any, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def matmul_gflops(device: torch.device, size: int = 1024, repeat: int = 5,
                  dtype: torch.dtype = torch.float32) -> float:
    """This machine's measured matrix-multiply rate (GFLOP/s) in ``dtype`` with torch's current thread count."""
    a = torch.rand(size, size, device=device).to(dtype)
    b = torch.rand(size, size, device=device).to(dtype)

    def run() -> None:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 2 * size**3 / _time(run, repeat) / 1e9


def run_bench(*, preset: str = "small", model: Path | None = None, scan: Path | None = None, device: str = "auto",
              train_steps: int = 5, volume: bool = True, runtime: str = "auto") -> dict[str, Any]:
    """Run the measurements and return them as a flat dictionary."""
    spec = get_preset(preset)
    dev = resolve_device(device)
    chosen_runtime = resolve_runtime(runtime, dev)
    size = spec.preprocess.size
    net = build_unet(spec.unet, size).to(dev)
    out: dict[str, Any] = {"preset": preset, "device": dev.type, "runtime": chosen_runtime,
                           "threads": torch.get_num_threads(),
                           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
                           "parameters": count_parameters(net),
                           "input": f"{size}x{size} at {spec.preprocess.spacing_mm} mm"}
    x = torch.rand(1, 2, size, size, device=dev)
    t = torch.zeros(1, dtype=torch.long, device=dev)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    gflop = counter.get_total_flops() / 1e9
    out["gflop_per_call"] = round(gflop, 3)
    net.eval()
    call = in_runtime(net, chosen_runtime, spec, threads=torch.get_num_threads())  # one call, on every thread
    # Inference runs under bf16 autocast on CUDA (as the ensemble does) and in fp32 on the CPU.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for batch in (1, 32):
            xb = torch.rand(batch, 2, size, size, device=dev)
            tb = torch.zeros(batch, dtype=torch.long, device=dev)
            seconds = _time(lambda xb=xb, tb=tb: call(xb, tb), repeat=3)
            out[f"forward_ms_per_slice_batch{batch}"] = round(1000 * seconds / batch, 2)
    # How close the network runs to the machine's matmul rate (batch 32, the analysis batch size's order).
    peak = matmul_gflops(dev, size=4096 if dev.type == "cuda" else 1024,
                         dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    achieved = gflop / (out["forward_ms_per_slice_batch32"] / 1000)
    out["matmul_dtype"] = "bf16" if dev.type == "cuda" else "fp32"
    out["matmul_gflops"] = round(peak, 1)
    out["unet_gflops"] = round(achieved, 1)
    out["unet_fraction_of_matmul"] = round(achieved / peak, 3)

    if train_steps > 0:
        net.train()
        scheduler = make_train_scheduler(spec.diffusion)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
        batch = spec.train.batch_size
        clean = torch.rand(batch, 1, size, size, device=dev)
        ts, noise = draw_timesteps_and_noise((1, size, size), list(range(batch)), spec.diffusion)

        def step() -> None:
            loss = training_loss(net, clean, clean, scheduler, spec.diffusion, ts, noise).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        seconds = _time(step, repeat=train_steps)
        out["train_batch"] = batch
        out["train_steps_per_s"] = round(1.0 / seconds, 3)
        out["train_s_per_step"] = round(seconds, 3)

    if volume:
        start = time.perf_counter()
        ensemble = (load_ensemble(model, device=device, runtime=chosen_runtime) if model
                    else _random_ensemble(preset, dev, MEMBERS, chosen_runtime))
        out["model_load_seconds"] = round(time.perf_counter() - start, 2)  # with an ONNX export, unless cached
        out["members"] = ensemble.info.members
        vol = load_volume(scan) if scan else _synthetic_brats_volume()
        out["volume"] = str(scan) if scan else "synthetic 240x240x155 1 mm"
        fast = AnalysisSettings(sampler=ensemble.preset.default_sampler if ensemble.preset.default_sampler != "paper"
                                else "ddim")
        # What the viewer waits for first: the centre slice, analysed by every member.
        plan = ensemble.plan_slices(vol, settings=fast)
        start = time.perf_counter()
        ensemble.analyse(vol, settings=fast, slices=[plan[len(plan) // 2]])
        out["first_slice_seconds"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        result = ensemble.analyse(vol, settings=fast)
        seconds = time.perf_counter() - start
        analysed = int(result.analysed.sum())
        out["fast_sampler"] = f"ddim x {result.steps} steps"
        out["fast_volume_s"] = round(seconds, 1)
        out["volume_seconds"] = out["fast_volume_s"]
        out["fast_slices_analysed"] = analysed
        out["fast_slices_covered"] = int(result.covered.sum())
        calls = analysed * result.steps * ensemble.info.members
        out["fast_ms_per_slice_step_member"] = round(1000 * seconds / max(calls, 1), 2)
        subset = np.flatnonzero(result.analysed)[: max(2, min(8, analysed))]
        start = time.perf_counter()
        ensemble.analyse(vol, settings=AnalysisSettings(sampler="paper"), slices=subset.tolist())
        paper = time.perf_counter() - start
        per_slice = paper / len(subset)
        out["paper_ms_per_slice_step_member"] = round(1000 * per_slice / (PAPER_STEPS * ensemble.info.members), 2)
        out["paper_volume_s_scaled"] = round(per_slice * analysed, 1)
        # Same members and slices: the paper's 50 DDPM steps against the default few-step sampler, per slice.
        out["speedup_fast_vs_paper"] = round(per_slice / (seconds / max(analysed, 1)), 1)
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out

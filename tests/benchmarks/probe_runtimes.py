"""Probe (issue 21): which CPU runtime runs the bundled UNet fastest, per call and batched, on this machine's ISA.

Candidates, all from the same member-0 weights of the bundled model: torch eager (the shipped path), torch eager in
channels-last memory format, ``torch.compile`` (inductor), ONNX Runtime and OpenVINO (both from one ONNX export
of the network). Each is checked against eager on a real slice pair (the bundled sample's middle slice, in model
space, at the first timestep the 5-step sampler visits): the largest absolute difference of the network output is
reported beside its time.

Two ways to run it as an AVX2-only machine would:

* ``tests/benchmarks/avx2-only.sh`` masks the AVX-512 bits of CPUID for the whole process, so every runtime (ONNX
  Runtime's MLAS and OpenVINO's CPU plugin too, which choose their kernels from CPUID alone) runs its AVX2 kernels;
* ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (what ``bench --isa avx2`` sets) restricts only torch; the
  rows of the other runtimes are then native, and marked so.

``--volume`` also times what a user waits for, eager against ONNX Runtime: ``bench``'s synthetic BraTS-size volume
(its centre slice first, then the whole volume) with all ten members, each member exported once and run by its own
ONNX Runtime session inside the shipped sampler loop; the largest difference between the two anomaly maps is reported.

Usage::

    python tests/benchmarks/probe_runtimes.py --threads 2 --json runtimes-native.json
    tests/benchmarks/avx2-only.sh python tests/benchmarks/probe_runtimes.py --threads 2 --json runtimes-avx2.json

Not a test; ONNX Runtime and OpenVINO are not condiff dependencies (``pip install onnxruntime openvino onnx``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.ensemble import NETWORK_BATCH, load_ensemble  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402


class _Net(torch.nn.Module):
    """The UNet as a plain tensor function (diffusers returns an output object)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def _time(fn: Any, repeat: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def real_input(model: Path, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` copies of the sample's middle brain slice pair (noised image, condition) and timestep."""
    ensemble = load_ensemble(model, device="cpu", folds=[0])
    samples = ROOT / "resources/samples"
    volume = load_volume(samples / "IXI056-HH-1327_T1.nii.gz")
    mask = load_mask(samples / "IXI056-HH-1327_brainmask.nii.gz", volume)
    ms = ensemble.to_model_space(volume, mask)
    condition = ms.slices[len(ms) // 2][None, None].astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(condition.shape).astype(np.float32)
    x = np.concatenate([noise, condition], axis=1).repeat(batch, axis=0)
    steps = ensemble.preset.diffusion.num_train_timesteps
    t = np.full(batch, steps - 1, dtype=np.int64)
    return x, t


class _OrtUNet:
    """An ONNX Runtime session called the way :func:`engine.network.denoise` calls the diffusers UNet."""

    def __init__(self, net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, threads: int, path: Path) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        torch.onnx.export(_Net(net), (x, t), str(path), dynamo=False, input_names=["x", "t"], output_names=["out"],
                          opset_version=17, dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "out": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Any:
        out = self.session.run(None, {"x": x.numpy(), "t": t.numpy()})[0]
        return type("Output", (), {"sample": torch.from_numpy(out)})


def volume_times(model: Path, threads: int, tmp: Path) -> dict[str, Any]:
    """First slice and whole volume, eager and with every member run by ONNX Runtime (``bench``'s volume)."""
    from engine.bench import _synthetic_brats_volume  # noqa: PLC0415
    from engine.results import AnalysisSettings  # noqa: PLC0415

    volume = _synthetic_brats_volume()
    ensemble = load_ensemble(model, device="cpu")
    settings = AnalysisSettings(sampler=ensemble.preset.default_sampler)
    plan = ensemble.plan_slices(volume, settings=settings)
    centre = [plan[len(plan) // 2]]
    size = ensemble.preset.preprocess.size
    width = NETWORK_BATCH["cpu"]
    x, t = torch.zeros(width, 2, size, size), torch.zeros(width, dtype=torch.long)
    out: dict[str, Any] = {"members": ensemble.info.members}
    maps = {}
    for name in ("eager", "onnxruntime"):
        if name == "onnxruntime":
            start = time.perf_counter()
            members = ensemble._members  # noqa: SLF001 - the probe swaps the networks themselves
            ensemble._members = [(fold, _OrtUNet(net, x, t, threads, tmp / f"member-{fold}.onnx"))  # noqa: SLF001
                                 for fold, net in members]
            out["onnx_export_and_load_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        ensemble.analyse(volume, settings=settings, slices=centre)
        out[f"{name}_first_slice_seconds"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        maps[name] = ensemble.analyse(volume, settings=settings).anomaly_map
        out[f"{name}_volume_seconds"] = round(time.perf_counter() - start, 1)
    out["max_abs_map_diff"] = float(np.abs(maps["eager"] - maps["onnxruntime"]).max())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--runtimes", default="eager,channels_last,compile,onnxruntime,openvino")
    parser.add_argument("--volume", action="store_true", help="also time bench's whole volume, eager and ONNX Runtime")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ensemble = load_ensemble(args.model, device="cpu", folds=[0])
    net = _Net(ensemble._members[0][1].float().eval())  # noqa: SLF001 - the probe needs the network itself
    masked = "avx2_only" in os.environ.get("LD_PRELOAD", "")  # tests/benchmarks/avx2-only.sh: every runtime
    isa = "avx2 (CPUID masked)" if masked else os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    report: dict[str, Any] = {"threads": args.threads, "isa": isa,
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "rows": {}}
    inputs = {b: real_input(args.model, b) for b in (1, NETWORK_BATCH["cpu"], 32)}  # 4: what an analysis sends
    with torch.no_grad():
        reference = {b: net(torch.from_numpy(x), torch.from_numpy(t)).numpy() for b, (x, t) in inputs.items()}
    tmp = Path(tempfile.mkdtemp())
    onnx_path = tmp / "unet.onnx"
    wanted = args.runtimes.split(",")

    def record(name: str, run: Any, *, restricted: bool) -> None:
        row: dict[str, Any] = {"follows_isa_setting": restricted}
        for batch, (x, t) in inputs.items():
            out = run(x, t)
            row[f"max_abs_diff_batch{batch}"] = float(np.abs(out - reference[batch]).max())
            row[f"ms_per_slice_batch{batch}"] = round(1000 * _time(lambda x=x, t=t: run(x, t), args.repeat) / batch,
                                                      3)
        report["rows"][name] = row
        print(name, row, flush=True)

    with torch.no_grad():
        if "eager" in wanted:
            record("torch eager", lambda x, t: net(torch.from_numpy(x), torch.from_numpy(t)).numpy(), restricted=True)
        if "channels_last" in wanted:
            cl = _Net(copy.deepcopy(net.unet)).to(memory_format=torch.channels_last)
            record("torch channels-last", lambda x, t: cl(torch.from_numpy(x).contiguous(
                memory_format=torch.channels_last), torch.from_numpy(t)).contiguous().numpy(), restricted=True)
        if "compile" in wanted:
            try:
                compiled = torch.compile(net)
                record("torch.compile", lambda x, t: compiled(torch.from_numpy(x), torch.from_numpy(t)).numpy(),
                       restricted=True)
            except Exception as error:  # a missing compiler or an inductor failure is a result too
                report["rows"]["torch.compile"] = {"error": f"{type(error).__name__}: {error}"[:300]}
        if "onnxruntime" in wanted or "openvino" in wanted:
            x, t = inputs[1]
            torch.onnx.export(net, (torch.from_numpy(x), torch.from_numpy(t)), str(onnx_path), dynamo=False,
                              input_names=["x", "t"], output_names=["out"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "out": {0: "batch"}})
    if "onnxruntime" in wanted:
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        report["onnxruntime_version"] = ort.__version__
        record("onnxruntime", lambda x, t: session.run(None, {"x": x, "t": t})[0], restricted=masked)
    if "openvino" in wanted:
        import openvino as ov  # noqa: PLC0415

        core = ov.Core()
        compiled_ov = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                                 "INFERENCE_PRECISION_HINT": "f32"})
        report["openvino_version"] = ov.__version__
        record("openvino", lambda x, t: compiled_ov({"x": x, "t": t})[0], restricted=masked)
    if args.volume:
        report["volume"] = volume_times(args.model, args.threads, tmp)
        print("volume", report["volume"], flush=True)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

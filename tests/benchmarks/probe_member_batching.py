"""Probe (issue 21, item 4): is it faster to run the ensemble's members together in one network call?

A whole-volume analysis calls each member's UNet on batches of :data:`engine.ensemble.NETWORK_BATCH` slices, member
after member. The alternative is one call for all members at once: the members' weights stacked
(``torch.func.stack_module_state``) and the network vectorised over them (``torch.func.vmap`` of
``torch.func.functional_call``), which turns each convolution into one grouped convolution over the members.
Both are timed on the same real input (the bundled sample's middle slices in model space, at the first timestep the
5-step sampler visits), per sampler step of the whole ensemble, and their outputs are compared.

On torch 2.13 (CPU) the vectorised call does not run: ``group_norm`` under ``vmap`` raises "NYI: querying
is_contiguous inside of vmap for memory_format other than torch.contiguous_format" (pytorch/pytorch PR #186414 makes
``native_group_norm`` accept such inputs), so the probe reports the looped time and that reason.
``--plain-group-norm`` swaps in a group norm written with plain tensor operations for the vectorised call only, to
time what the batching would give.

Usage::

    python tests/benchmarks/probe_member_batching.py --threads 2 [--members 10] [--width 4] [--json OUT]

Not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from probe_runtimes import _time as median_time  # noqa: E402

from engine.ensemble import NETWORK_BATCH, load_ensemble  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402


def _group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Group normalisation from plain tensor operations (which ``vmap`` can batch), for ``--plain-group-norm``."""
    grouped = x.reshape(x.shape[0], num_groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.var(-1, unbiased=False, keepdim=True)
    out = ((grouped - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--width", type=int, default=NETWORK_BATCH["cpu"], help="slices per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plain-group-norm", action="store_true",
                        help="run the vectorised call with group norm written in plain tensor operations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ensemble = load_ensemble(args.model, device="cpu", folds=list(range(args.members)))
    nets = [model for _, model in ensemble._members]  # noqa: SLF001 - the probe times the members' networks
    sample = ROOT / "resources/samples/IXI056-HH-1327_T1.nii.gz"
    volume = load_volume(sample)
    ms = ensemble.to_model_space(volume, load_mask(sample.with_name("IXI056-HH-1327_brainmask.nii.gz"), volume))
    middle = len(ms) // 2
    condition = torch.from_numpy(ms.slices[middle: middle + args.width]).float()[:, None]
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(condition.shape, generator=generator)
    inputs = torch.cat([x_t, condition], dim=1)
    t = torch.full((args.width,), 799, dtype=torch.long)

    def looped() -> torch.Tensor:
        with torch.inference_mode():
            return torch.stack([net(inputs, t).sample for net in nets])

    params, buffers = torch.func.stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(base, (p, b), (x, t)).sample

    batched_fn = torch.func.vmap(one, in_dims=(0, 0, None))
    native_group_norm = torch.nn.functional.group_norm

    def batched() -> torch.Tensor:
        torch.nn.functional.group_norm = _group_norm if args.plain_group_norm else native_group_norm
        try:
            with torch.inference_mode():
                return batched_fn(params, buffers, inputs)
        finally:
            torch.nn.functional.group_norm = native_group_norm

    reference = looped()
    out: dict[str, Any] = {"threads": args.threads, "members": args.members, "width": args.width,
                           "torch": torch.__version__,
                           "looped_s_per_step": round(median_time(looped, args.repeat), 4)}
    try:
        together = batched()
    except RuntimeError as error:  # torch 2.13 on CPU: group_norm is not supported under vmap
        out["vmapped"] = f"unavailable: {' '.join(str(error).split())[:200]}"
    else:
        out["vmapped_s_per_step"] = round(median_time(batched, args.repeat), 4)
        out["max_abs_difference"] = float((reference - together).abs().max())
        out["speedup"] = round(out["looped_s_per_step"] / out["vmapped_s_per_step"], 3)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Probe: which part of 1 - SSIM raises the false alarms far from the tumour on BraTS (issue 19)?

SSIM is the product of a luminance term ``l`` (local means), a contrast term ``c`` (local standard deviations) and a
structure term ``s`` (the local correlation). For each member's restoration of the healthy test scans and the BraTS
dev cases (model space, on the slices a whole-volume analysis restores, restorations cached as ``probe_transfer.py``
caches them), this reports per region (healthy brain; dev brain farther than 10 mm from the tumour; dev tumour) and
for the flagged pixels in it (members' mean map above ``--threshold``): the mean of ``1 - l``, ``1 - c``, ``1 - s``,
the restoration minus the input, and the local standard deviations of input and restoration.

``--windows`` also scores every dev and test pixel with a wider Gaussian window (sigma 2.5 and 3.5 pixels against the
paper's 1.5) and a larger structure constant, and gives, threshold-free, each variant's AP over the dev brain pixels,
the far share flagged where the dev sensitivity is 0.40, and at the threshold flagging 1 % of the test scans' brain
the dev sensitivity, precision and far share. Model space, 5 of the test scans: a diagnostic, not a calibration.

Usage::

    python tests/benchmarks/probe_ssim_terms.py --model resources/models/condiff-t1-small --members 0,1,2,3,4 \\
        --cache /work/probe-cache/terms [--windows]

Not a test: it needs the shared data and about 4 CPU minutes for the restorations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

import probe_transfer as pt  # noqa: E402

from engine.anomaly import _gaussian_window  # noqa: E402
from engine.data import find_scans  # noqa: E402
from engine.ensemble import load_ensemble  # noqa: E402
from engine.evaluation import find_cases  # noqa: E402
from engine.metrics import average_precision  # noqa: E402
from engine.preprocess import foreground_mask, native_to_model  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402
from engine.results import AnalysisSettings  # noqa: E402
from engine.transfer import far_from  # noqa: E402

C1, C2 = 0.01**2, 0.03**2  # the "standard" convention's constants (data range 1)


def _window(sigma: float) -> tuple[torch.Tensor, int]:
    """The engine's Gaussian SSIM window, widened to 3.5 sigma (at least the paper's 11 pixels)."""
    radius = max(5, int(round(3.5 * sigma)))
    return _gaussian_window(2 * radius + 1, sigma, device=torch.device("cpu"))[None, None], radius


def local_terms(restored: np.ndarray, inputs: np.ndarray, sigma: float = 1.5) -> dict[str, np.ndarray]:
    """Local SSIM terms of each member's restoration against the input, shape (members, N, H, W) each."""
    shape = restored.shape
    x = torch.from_numpy(np.broadcast_to(inputs, shape).reshape(-1, 1, *shape[2:]).copy())
    r = torch.from_numpy(np.ascontiguousarray(restored, np.float32).reshape(-1, 1, *shape[2:]))
    kernel, pad = _window(sigma)

    def smooth(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=pad)

    mx, mr = smooth(x), smooth(r)
    vx = (smooth(x * x) - mx * mx).clamp(min=0)
    vr = (smooth(r * r) - mr * mr).clamp(min=0)
    cov = smooth(x * r) - mx * mr
    sx, sr = vx.sqrt(), vr.sqrt()
    out = {"l": (2 * mx * mr + C1) / (mx * mx + mr * mr + C1), "c": (2 * sx * sr + C2) / (vx + vr + C2),
           "s": (cov + C2 / 2) / (sx * sr + C2 / 2), "cs": (2 * cov + C2) / (vx + vr + C2), "sx": sx, "sr": sr,
           "s_const_0.005": (cov + 0.005) / (sx * sr + 0.005)}
    return {k: v.reshape(shape).numpy() for k, v in out.items()}


def region_rows(name: str, restored: np.ndarray, inputs: np.ndarray, brain: np.ndarray,
                regions: dict[str, np.ndarray], threshold: float) -> None:
    t = local_terms(restored, inputs)
    amap = np.clip(1 - t["l"] * t["cs"], 0, 1).mean(0)
    diff = restored.mean(0) - inputs
    for region, where in regions.items():
        where = where & brain
        hot = where & (amap > threshold)
        if not where.any():
            continue

        def mean(a: np.ndarray, sel: np.ndarray) -> float:
            return float(a[sel].mean()) if sel.any() else float("nan")

        terms = {k: t[k].mean(0) for k in ("l", "c", "s", "sx", "sr")}
        print(f"{name[:24]:24s} {region:6s} flagged {100 * hot.sum() / where.sum():5.1f}% | region: "
              f"1-l {mean(1 - terms['l'], where):.3f} 1-c {mean(1 - terms['c'], where):.3f} "
              f"1-s {mean(1 - terms['s'], where):.3f} r-x {mean(diff, where):+.3f} | flagged: "
              f"1-l {mean(1 - terms['l'], hot):.3f} 1-c {mean(1 - terms['c'], hot):.3f} "
              f"1-s {mean(1 - terms['s'], hot):.3f} r-x {mean(diff, hot):+.3f} "
              f"sd input {mean(terms['sx'], hot):.3f} sd restored {mean(terms['sr'], hot):.3f}", flush=True)


def variant_maps(restored: np.ndarray, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Members' mean map for each comparison variant."""
    out = {}
    for sigma in (1.5, 2.5, 3.5):
        t = local_terms(restored, inputs, sigma)
        out[f"window sigma {sigma}"] = np.clip(1 - t["l"] * t["cs"], 0, 1).mean(0)
        if sigma == 1.5:
            out["structure constant 0.005"] = np.clip(1 - t["l"] * t["c"] * t["s_const_0.005"], 0, 1).mean(0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--members", default="0,1,2,3,4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=None, help="default: the model's calibrated threshold")
    parser.add_argument("--windows", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    ensemble = load_ensemble(args.model, device="cpu", folds=[int(f) for f in args.members.split(",")])
    threshold = args.threshold if args.threshold is not None else ensemble.info.calibration.threshold
    settings = AnalysisSettings(sampler=ensemble.info.default_sampler, batch_size=64)
    healthy, dev = [], []
    test = [s for s in find_scans(args.data / "ixi-t1/val") if not s.image.name.startswith(pt.SAMPLE_IDS)][:5]
    for scan in test:
        volume = load_volume(scan.image)
        ms, chosen, restored = pt.restorations(ensemble, volume, load_mask(scan.mask, volume), settings,
                                               args.cache / "test" / f"{scan.image.name}.npz")
        brain = ms.brain[chosen]
        region_rows(scan.image.name, restored, ms.slices[chosen], brain, {"brain": brain}, threshold)
        if args.windows:
            healthy.append({k: v[brain] for k, v in variant_maps(restored, ms.slices[chosen]).items()})
    for case in find_cases(args.data / "brats2018-dev", "t1"):
        volume = load_volume(case.image)
        label = load_mask(case.label, volume)
        fg = foreground_mask(np.asarray(volume.data))
        ms, chosen, restored = pt.restorations(ensemble, volume, fg, settings, args.cache / "dev" / f"{case.name}.npz")
        far = native_to_model(far_from(label, volume.zooms) & fg, ms)[chosen] > 0.5
        lesion = native_to_model(label, ms)[chosen] > 0.4
        brain = ms.brain[chosen]
        region_rows(case.name, restored, ms.slices[chosen], brain, {"far": far, "tumour": lesion}, threshold)
        if args.windows:
            maps = variant_maps(restored, ms.slices[chosen])
            dev.append({k: (v[brain], lesion[brain], far[brain]) for k, v in maps.items()})
    for name in dev[0] if dev else ():
        score = np.concatenate([d[name][0] for d in dev])
        lesion = np.concatenate([d[name][1] for d in dev])
        far = np.concatenate([d[name][2] for d in dev])
        at_40 = np.quantile(score[lesion], 0.60)
        at_healthy = np.quantile(np.concatenate([h[name] for h in healthy]), 0.99)
        hot = score > at_healthy
        print(f"{name:26s} dev AP {average_precision(lesion, score):.3f} | at dev sensitivity 0.40: far flagged "
              f"{100 * (score[far] > at_40).mean():4.1f}% | at 1 % of test brain: sensitivity "
              f"{hot[lesion].mean():.2f} precision {hot[lesion].sum() / max(hot.sum(), 1):.2f} far flagged "
              f"{100 * hot[far].mean():4.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

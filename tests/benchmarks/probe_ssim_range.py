"""Probe: 1 - SSIM with larger SSIM constants (data range R: C1 = (0.01 R)^2, C2 = (0.03 R)^2), which tolerate more
mismatch in flat tissue, scored on the restorations ``probe_transfer.py`` cached (run it first with the same members).

Usage (README, issue 19 lever study)::

    python tests/benchmarks/probe_ssim_range.py /work/probe-cache/v2A --members 1,4,7 --ranges 2,4

Prints per data range: the threshold at 1 % of the calibration role's brain, the held-out healthy share flagged, and
on the BraTS dev cases sensitivity, precision, non-lesion and far (> 10 mm) flagged and AP_p over brain voxels.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import engine.anomaly as anomaly  # noqa: E402
from engine.calibration import threshold_for_fpr  # noqa: E402
from engine.data import find_scans, split_roles  # noqa: E402
from engine.ensemble import load_ensemble  # noqa: E402
from engine.evaluation import find_cases  # noqa: E402
from engine.metrics import average_precision  # noqa: E402
from engine.preprocess import foreground_mask  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402
from engine.results import AnalysisSettings  # noqa: E402
from engine.transfer import TransferCounts  # noqa: E402


def range_maps(member_restored: np.ndarray, slices: np.ndarray, brain: np.ndarray, data_range: float) -> np.ndarray:
    """Mean over members of clamp(1 - SSIM) with constants for ``data_range``, zero outside the brain."""
    anomaly._DATA_RANGE["probe"] = data_range  # a probe-only convention name
    x = torch.from_numpy(slices)[:, None]
    b = torch.from_numpy(brain)[:, None]
    maps = [torch.clamp(1 - anomaly.ssim_map(torch.from_numpy(r)[:, None], x, convention="probe"), 0, 1)
            for r in member_restored]
    return torch.where(b, torch.stack(maps).mean(0), torch.zeros(()))[:, 0].numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--members", default="1,4,7")
    parser.add_argument("--ranges", default="2,4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ensemble = load_ensemble(args.model, device="cpu", folds=[int(f) for f in args.members.split(",")])
    settings = AnalysisSettings(sampler=ensemble.info.default_sampler)
    ranges = [float(r) for r in args.ranges.split(",")]

    def native(volume, brain, cache_file: Path) -> dict[float, np.ndarray]:
        ms = ensemble.to_model_space(volume, brain)
        chosen = ensemble.stride_choice(volume, ms, settings)
        restored = np.load(cache_file)["restored"]
        base = ensemble.score_restorations(restored, ms.slices[chosen], ms.brain[chosen])
        out = {}
        for r in ranges:
            partial = replace(base, mean_map=range_maps(restored, ms.slices[chosen], ms.brain[chosen], r))
            out[r] = ensemble.native_result(volume, ms, partial, chosen, settings, brain).anomaly_map
        return out

    roles = split_roles(find_scans(args.data / "ixi-t1/train"))
    values: dict[float, list[np.ndarray]] = {r: [] for r in ranges}
    for scan in roles["calibration"]:
        volume = load_volume(scan.image)
        brain = load_mask(scan.mask, volume)
        for r, amap in native(volume, brain, args.cache / "calibration" / f"{scan.image.name}.npz").items():
            values[r].append(amap[brain])
    thresholds = {r: threshold_for_fpr(np.concatenate(v), 0.01) for r, v in values.items()}
    healthy = {r: TransferCounts(t) for r, t in thresholds.items()}
    for scan in find_scans(args.data / "ixi-t1/val"):
        if scan.image.name.startswith("IXI056"):
            continue
        volume = load_volume(scan.image)
        brain = load_mask(scan.mask, volume)
        for r, amap in native(volume, brain, args.cache / "test-asis" / f"{scan.image.name}.npz").items():
            healthy[r].add(amap, brain, None, volume.zooms)
    dev = {r: TransferCounts(t) for r, t in thresholds.items()}
    scores: dict[float, list[np.ndarray]] = {r: [] for r in ranges}
    labels = []
    for case in find_cases(args.data / "brats2018-dev", "t1"):
        volume = load_volume(case.image)
        fg = foreground_mask(np.asarray(volume.data))
        label = np.asarray(load_volume(case.label).data) > 0
        for r, amap in native(volume, fg, args.cache / "dev" / f"{case.name}.npz").items():
            dev[r].add(amap, fg, label, volume.zooms)
            scores[r].append(amap[fg])
        labels.append(label[fg])
    pooled = np.concatenate(labels)
    for r in ranges:
        d = dev[r].result()
        print(f"data range {r:g}: threshold {thresholds[r]:.3f}, healthy test {healthy[r].result().brain_flagged:.2%}"
              f" | sensitivity {d.sensitivity:.2f} precision {d.precision:.2f} non-lesion {d.nonlesion_flagged:.2%} "
              f"far {d.far_flagged:.2%} AP_p {average_precision(pooled, np.concatenate(scores[r])):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Probe (issue 21): held-out healthy scans flagged per scan, under one simulated acquisition, for two model folders
(each at its own default sampler steps and calibrated threshold), and a paired bootstrap over the scans of the pooled
difference. It says whether a difference in ``evaluate --healthy --shifts`` is larger than the spread between scans.

Usage (numbers in the README come from this command; the first folder is the reference)::

    python tests/benchmarks/probe_shift_per_scan.py --shift noise \\
        --models FIVE_STEP_COPY resources/models/condiff-t1-small

Not a test: it needs the shared data and takes minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import analysis_brain, load_ensemble, load_mask, load_volume  # noqa: E402
from engine.data import find_scans  # noqa: E402
from engine.transfer import SHIFTS, shifted_healthy  # noqa: E402


def flagged_per_scan(model: Path, scans: list, shift: str | None, threads: int) -> np.ndarray:
    """``(flagged voxels, brain voxels)`` per scan, on the map a user gets, at the model's calibrated threshold."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    ensemble = load_ensemble(model, device="cpu")
    if ensemble.info.calibration is None:
        raise SystemExit(f"{model}: no calibration")
    threshold = ensemble.info.calibration.threshold
    rows = []
    for scan in scans:
        volume = load_volume(scan.image)
        mask = load_mask(scan.mask, volume) if scan.mask else None
        if shift is not None:
            volume, mask = shifted_healthy(volume, analysis_brain(volume, mask), shift)
        brain = analysis_brain(volume, mask)
        result = ensemble.analyse(volume, brain_mask=mask)
        rows.append((int((result.anomaly_map[brain] > threshold).sum()), int(brain.sum())))
    return np.asarray(rows, dtype=np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs=2, required=True, help="reference folder, then the other")
    parser.add_argument("--shift", choices=["none", *SHIFTS], default="noise")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ixi-t1" / "val")
    parser.add_argument("--exclude", default="IXI056", help="scan names starting with this are left out (the sample)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=10000)
    args = parser.parse_args()
    scans = [s for s in find_scans(args.data) if not s.image.name.startswith(args.exclude)]
    shift = None if args.shift == "none" else args.shift
    a, b = (flagged_per_scan(m, scans, shift, args.threads) for m in args.models)
    for model, rows in zip(args.models, (a, b), strict=True):
        print(model, "per scan %:", " ".join(f"{100 * f / n:.3f}" for f, n in rows))  # noqa: T201

    def pooled(rows: np.ndarray, pick: np.ndarray) -> float:
        return float(rows[pick, 0].sum() / rows[pick, 1].sum())

    rng = np.random.default_rng(0)
    everyone = np.arange(len(scans))
    picks = (rng.integers(0, len(scans), len(scans)) for _ in range(args.resamples))
    diffs = np.array([pooled(b, p) - pooled(a, p) for p in picks])
    low, high = np.percentile(diffs, [2.5, 97.5]) * 100
    higher = int(((b[:, 0] / b[:, 1]) > (a[:, 0] / a[:, 1])).sum())
    print(f"pooled {100 * pooled(a, everyone):.3f} % -> {100 * pooled(b, everyone):.3f} %; difference 95 % interval "  # noqa: T201
          f"{low:+.3f} to {high:+.3f} points (paired bootstrap over {len(scans)} scans); higher on {higher} of "
          f"{len(scans)} scans")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

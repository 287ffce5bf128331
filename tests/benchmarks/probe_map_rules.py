"""Probe: does a per-scan rule on the map, rather than a better map, separate tumour from far-away brain? (issue 19)

Uses the member restorations ``probe_transfer.py`` cached (same ``--cache``, ``--model`` and ``--members``), so no
network runs here. For the calibration role, the held-out test scans and the BraTS dev cases it builds the plain
native-grid map once (kept under ``<cache>-maps``), then compares per-scan rules:

* ``plain``: the map as it is; ``z``: (map - median) / (1.4826 MAD) over the scan's brain; ``ratio``: map / median;
  ``shift``: map - median; ``q75scale``: (map - median) / (q75 - median); ``q90ratio``: map / q90.

For each rule: the threshold that flags 1 % of the calibration role's brain and what it gives on the test scans and
the dev cases (sensitivity, precision, far > 10 mm flagged), and, whatever the threshold, the precision and far share
where the dev sensitivity is 0.40 (the rule's separation). ``--where`` also says where the dev false alarms far from
the tumour lie (depth below the brain's surface, intensity class).

Usage::

    python tests/benchmarks/probe_map_rules.py --model resources/models/condiff-t1-small-3.0 --members 0,1,2,3,4 \\
        --cache /work/probe-cache/v3-5m --where

Not a test: it needs the shared data and the probe's cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

import probe_transfer as pt  # noqa: E402

from engine.calibration import threshold_for_fpr  # noqa: E402
from engine.config import MapScoring  # noqa: E402
from engine.data import find_scans, split_roles  # noqa: E402
from engine.ensemble import load_ensemble  # noqa: E402
from engine.evaluation import find_cases  # noqa: E402
from engine.preprocess import foreground_mask  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402
from engine.results import AnalysisSettings  # noqa: E402
from engine.transfer import far_from  # noqa: E402


def rules(amap: np.ndarray) -> dict[str, np.ndarray]:
    med = float(np.median(amap))
    mad = float(np.median(np.abs(amap - med))) * 1.4826 or 1e-6
    q75, q90 = (float(q) for q in np.percentile(amap, [75, 90]))
    return {"plain": amap, "z": (amap - med) / mad, "ratio": amap / med, "shift": amap - med,
            "q75scale": (amap - med) / max(q75 - med, 1e-6), "q90ratio": amap / max(q90, 1e-6)}


def build_maps(args: argparse.Namespace, out: Path) -> None:
    pt.SCORINGS.clear()
    pt.SCORINGS["plain"] = MapScoring()
    folds = [int(f) for f in args.members.split(",")] if args.members else None
    ensemble = load_ensemble(args.model, device="cpu", folds=folds)
    settings = AnalysisSettings(sampler=ensemble.info.default_sampler, batch_size=64)
    roles = split_roles(find_scans(args.data / "ixi-t1/train"))
    test = [s for s in find_scans(args.data / "ixi-t1/val") if not s.image.name.startswith(pt.SAMPLE_IDS)]
    for folder, scans in (("calibration", roles["calibration"]), ("test-asis", test)):
        for scan in scans:
            target = out / folder / f"{scan.image.name}.npz"
            if target.exists():
                continue
            volume = load_volume(scan.image)
            brain = load_mask(scan.mask, volume)
            amap = pt.native_maps(ensemble, volume, brain, settings, args.cache / folder / target.name)["plain"]
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(target, map=amap[brain])
    for case in find_cases(args.data / "brats2018-dev", "t1"):
        target = out / "dev" / f"{case.name}.npz"
        if target.exists():
            continue
        volume = load_volume(case.image)
        label = load_mask(case.label, volume)
        fg = foreground_mask(np.asarray(volume.data))
        amap = pt.native_maps(ensemble, volume, fg, settings, args.cache / "dev" / f"{case.name}.npz")["plain"]
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(target, map=amap[fg], label=label[fg], far=far_from(label, volume.zooms)[fg])


def where(args: argparse.Namespace, out: Path, threshold: float) -> None:
    """Where the far false alarms of the plain map lie, per dev case."""
    for case in find_cases(args.data / "brats2018-dev", "t1"):
        z = np.load(out / "dev" / f"{case.name}.npz")
        volume = load_volume(case.image)
        data = np.asarray(volume.data, dtype=np.float32)
        fg = foreground_mask(data)
        amap = np.zeros(fg.shape, np.float32)
        amap[fg] = z["map"]
        far = np.zeros_like(fg)
        far[fg] = z["far"]
        depth = ndimage.distance_transform_edt(fg, sampling=volume.zooms)
        alarms = (amap >= threshold) & far
        lo, hi = np.percentile(data[fg], [2, 98])
        level = (data - lo) / (hi - lo)
        n = max(int(alarms.sum()), 1)
        by_depth = [(alarms & (depth > a) & (depth <= b)).sum() / n for a, b in ((0, 3), (3, 10), (10, 1e9))]
        by_level = [(alarms & (level >= a) & (level < b)).sum() / n for a, b in ((-9, 0.3), (0.3, 0.6), (0.6, 9))]
        print(f"{case.name:22s} far flagged {alarms.sum() / max(far.sum(), 1):6.2%}; depth 0-3 / 3-10 / >10 mm "
              + " / ".join(f"{v:.0%}" for v in by_depth) + "; dark / mid / bright "
              + " / ".join(f"{v:.0%}" for v in by_level))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--members", default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--where", action="store_true", help="also locate the far false alarms of the plain map")
    args = parser.parse_args()
    out = args.cache.with_name(args.cache.name + "-maps")
    build_maps(args, out)

    def load(folder: str) -> list[dict[str, np.ndarray]]:
        return [dict(np.load(f)) for f in sorted((out / folder).glob("*.npz"))]

    cal, test, dev = load("calibration"), load("test-asis"), load("dev")
    labels = np.concatenate([z["label"] for z in dev])
    far = np.concatenate([z["far"] for z in dev])
    plain_threshold = None
    print(f"{'rule':9s} {'thr':>7s} {'test':>6s} | {'sens':>5s} {'prec':>5s} {'far':>6s} | at sensitivity 0.40: "
          "precision, far, calibration brain flagged")
    for name in rules(cal[0]["map"]):
        calv = np.concatenate([rules(z["map"])[name] for z in cal])
        threshold = threshold_for_fpr(calv, args.fpr)
        if name == "plain":
            plain_threshold = threshold
        testv = np.concatenate([rules(z["map"])[name] for z in test])
        devv = np.concatenate([rules(z["map"])[name] for z in dev])
        flagged = devv >= threshold
        sens, prec, far_share = labels[flagged].sum() / labels.sum(), labels[flagged].mean(), flagged[far].mean()
        at40 = devv >= np.quantile(devv[labels], 0.60)
        print(f"{name:9s} {threshold:7.3f} {np.mean(testv >= threshold):6.2%} | {sens:5.2f} {prec:5.2f} "
              f"{far_share:6.2%} | {labels[at40].mean():.2f}, {at40[far].mean():6.2%}, "
              f"{np.mean(calv >= np.quantile(devv[labels], 0.60)):6.2%}")
    if args.where and plain_threshold is not None:
        where(args, out, plain_threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

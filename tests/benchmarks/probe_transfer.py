"""Probe: which scoring and geometry levers make the calibrated threshold transfer to other scanners (issue 19).

For a model folder (a subset of its members), each scan of four disjoint sets is restored once on the slices a
whole-volume analysis restores (the user's map), and every member's restoration is kept on disk; then every scoring
variant is applied to the same restorations:

* calibration: the ``calibration`` role of ``ixi-t1/train`` (threshold at 1 % of healthy brain, native grid);
* test: ``ixi-t1/val`` without the shipped sample, as it is and shifted (1 mm, bias field, contrast);
* dev: the BraTS 2018 dev cases (T1 against seg > 0): sensitivity, precision, non-lesion and far (> 10 mm) flagged,
  AP_p over brain voxels on the native grid.

Usage (numbers in the README come from this command)::

    python tests/benchmarks/probe_transfer.py --model resources/models/condiff-t1-small --members 1,4,7 \\
        --cache /work/probe-cache/v2 --json probe-v2.json

Not a test: it needs the shared data and takes tens of CPU minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.calibration import threshold_for_fpr  # noqa: E402
from engine.config import MapScoring  # noqa: E402
from engine.data import find_scans, split_roles  # noqa: E402
from engine.ensemble import load_ensemble  # noqa: E402
from engine.evaluation import find_cases  # noqa: E402
from engine.metrics import average_precision  # noqa: E402
from engine.preprocess import foreground_mask  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402
from engine.results import AnalysisSettings  # noqa: E402
from engine.transfer import TransferCounts, far_from, shifted_healthy  # noqa: E402

SAMPLE_IDS = ("IXI056",)
EQUAL_SENSITIVITY = 0.40
"""Dev sensitivity at which each variant's precision and far-flagged share are also reported (the issue's bar)."""
ALL_SCORINGS = {
    "plain": MapScoring(),
    "mask": MapScoring(mask_restoration=True),
    "mask+blur0.5": MapScoring(mask_restoration=True, input_blur_px=0.5),
    "mask+blur0.75": MapScoring(mask_restoration=True, input_blur_px=0.75),
    "mask+blur1": MapScoring(mask_restoration=True, input_blur_px=1.0),
    "debias": MapScoring(noise_debias="input"),
    "debias-r": MapScoring(noise_debias="restoration"),
    "debias-both": MapScoring(noise_debias="both"),
    "meanrest": MapScoring(),
    "both-blur0.75": MapScoring(mask_restoration=True, input_blur_px=0.75, blur_restoration=True),
    "both-blur1": MapScoring(mask_restoration=True, input_blur_px=1.0, blur_restoration=True),
    "both-blur1.5": MapScoring(mask_restoration=True, input_blur_px=1.5, blur_restoration=True),
    "meanrest+blur1": MapScoring(mask_restoration=True, input_blur_px=1.0, blur_restoration=True),
    "meanrest+debias-r": MapScoring(noise_debias="restoration"),
}
SCORINGS = dict(ALL_SCORINGS)


def robust_z(amap: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Per-scan normalisation: (map - median) / (1.4826 MAD) over the scan's brain voxels."""
    values = amap[brain]
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826 or 1e-6
    return np.where(brain, (amap - med) / mad, -1e9).astype(np.float32)


def restorations(ensemble, volume, brain, settings, cache: Path):
    """Model space, chosen slices and the members' restorations of one scan (cached)."""
    ms = ensemble.to_model_space(volume, brain)
    chosen = ensemble.stride_choice(volume, ms, settings)
    if cache.is_file():
        with np.load(cache) as z:
            return ms, chosen, z["restored"]
    res = ensemble.analyse_model_space(ms.slices[chosen], ms.brain[chosen], ms.native_index[chosen], settings,
                                       keep_members=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, restored=res.member_restored)
    return ms, chosen, res.member_restored


def native_maps(ensemble, volume, brain, settings, cache: Path) -> dict[str, np.ndarray]:
    ms, chosen, member_restored = restorations(ensemble, volume, brain, settings, cache)
    out = {}
    for name, scoring in SCORINGS.items():
        members = member_restored.mean(axis=0, keepdims=True) if name.startswith("meanrest") else member_restored
        partial = ensemble.score_restorations(members, ms.slices[chosen], ms.brain[chosen], scoring)
        result = ensemble.native_result(volume, ms, partial, chosen, replace(settings, scoring=scoring), brain)
        out[name] = result.anomaly_map
        out[name + "+z"] = robust_z(result.anomaly_map, brain)
    return out


def synthetic_part(ensemble, roles, settings, cache: Path) -> dict[str, dict[str, float]]:
    """The synthetic benchmark (all five tasks) on the selection role, every scoring variant on one restoration."""
    from engine.data import HealthySlices  # noqa: PLC0415
    from engine.synthetic import make_synthetic_set, score_synthetic  # noqa: PLC0415

    slices = HealthySlices(roles["selection"], ensemble.preset.preprocess)
    sset = make_synthetic_set(slices, (0, 1, 2, 3, 4), seed=0)
    if cache.is_file():
        with np.load(cache) as z:
            member_restored = z["restored"]
    else:
        res = ensemble.analyse_model_space(sset.condition, sset.brain, sset.index, settings, keep_members=True)
        member_restored = res.member_restored
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, restored=member_restored)
    out = {}
    for name, scoring in SCORINGS.items():
        members = member_restored.mean(axis=0, keepdims=True) if name.startswith("meanrest") else member_restored
        scored = ensemble.score_restorations(members, sset.condition, sset.brain, scoring)
        result = score_synthetic(sset, scored.restored, scored.mean_map, seed=0)
        det = result.detection.scores
        out[name] = {"ap_pixel": det.ap_pixel, "max_dice": det.max_dice, "ap_image": det.ap_image,
                     "auroc_image": det.auroc_image, "healthy_dssim": result.removal.healthy_dssim,
                     "chance_ap_pixel": result.detection.random.ap_pixel}
        print(f"synthetic {name:16s} AP_p {det.ap_pixel:.3f} max Dice {det.max_dice:.3f} AP_i {det.ap_image:.3f} "
              f"AUROC {det.auroc_image:.3f} healthy 1-SSIM {result.removal.healthy_dssim:.3f}", flush=True)
    return out


def calibration_part(ensemble, roles, settings, args, cal_shifts, t0) -> dict[str, float]:
    """Thresholds per scoring variant from the calibration role (and, as ``<variant>@shifts``, across shifts)."""
    values: dict[str, dict[str, list[np.ndarray]]] = {}
    for scan in roles["calibration"]:
        volume = load_volume(scan.image)
        brain = load_mask(scan.mask, volume)
        for kind in ("asis", *cal_shifts):
            vol, br = (volume, brain) if kind == "asis" else shifted_healthy(volume, brain, kind, seed=1)
            folder = "calibration" if kind == "asis" else f"calibration-{kind}"
            for name, amap in native_maps(ensemble, vol, br, settings,
                                          args.cache / folder / f"{scan.image.name}.npz").items():
                values.setdefault(name, {}).setdefault(kind, []).append(amap[br])
        print(f"[{time.monotonic() - t0:6.0f}s] calibration {scan.image.name}", flush=True)
    thresholds = {name: threshold_for_fpr(np.concatenate(v["asis"]), args.fpr) for name, v in values.items()}
    if cal_shifts:
        for name, v in values.items():
            per_kind = {kind: threshold_for_fpr(np.concatenate(x), args.fpr) for kind, x in v.items()}
            print(f"{name}: per-acquisition thresholds {per_kind}", flush=True)
            thresholds[name + "@shifts"] = max(per_kind.values())

    return thresholds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--members", default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--slice-spacing", type=float, default=None,
                        help="override the model's through-plane spacing (the geometry lever on an older model)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--scorings", default=",".join(ALL_SCORINGS), help="scoring variants to compare")
    parser.add_argument("--shifts", default="1mm,bias,contrast", help="shifted-healthy variants of the test scans")
    parser.add_argument("--calibration-shifts", default="",
                        help="also calibrate across these shifted variants of the calibration scans: the threshold "
                        "is then the highest of the per-variant thresholds (at most --fpr on every acquisition)")
    parser.add_argument("--synthetic-only", action="store_true",
                        help="only the synthetic benchmark on the selection role (all five tasks)")
    args = parser.parse_args()
    SCORINGS.clear()
    SCORINGS.update({k: ALL_SCORINGS[k] for k in args.scorings.split(",")})
    shifts = [k for k in args.shifts.split(",") if k]
    cal_shifts = [k for k in args.calibration_shifts.split(",") if k]
    import torch  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    folds = [int(f) for f in args.members.split(",")] if args.members else None
    ensemble = load_ensemble(args.model, device="cpu", folds=folds)
    if args.slice_spacing is not None:
        spec = replace(ensemble.preset.preprocess, slice_spacing_mm=args.slice_spacing)
        ensemble.preset = replace(ensemble.preset, preprocess=spec)
    settings = AnalysisSettings(sampler=ensemble.info.default_sampler, batch_size=64)
    t0 = time.monotonic()

    roles = split_roles(find_scans(args.data / "ixi-t1/train"))
    test = [s for s in find_scans(args.data / "ixi-t1/val") if not s.image.name.startswith(SAMPLE_IDS)]
    cases = find_cases(args.data / "brats2018-dev", "t1")
    if args.synthetic_only:
        synthetic = synthetic_part(ensemble, roles, settings, args.cache / "synthetic-selection.npz")
        if args.json:
            args.json.write_text(json.dumps({"model": str(args.model), "members": ensemble.info.folds,
                                             "synthetic": synthetic}, indent=1, default=float))
        return 0

    thresholds = calibration_part(ensemble, roles, settings, args, cal_shifts, t0)

    # 2. held-out healthy, as it is and shifted
    healthy = {kind: {n: TransferCounts(t) for n, t in thresholds.items()} for kind in ("asis", *shifts)}
    for scan in test:
        volume = load_volume(scan.image)
        brain = load_mask(scan.mask, volume)
        for kind in ("asis", *shifts):
            vol, br = (volume, brain) if kind == "asis" else shifted_healthy(volume, brain, kind, seed=0)
            maps = native_maps(ensemble, vol, br, settings, args.cache / f"test-{kind}" / f"{scan.image.name}.npz")
            for name, counts in healthy[kind].items():
                counts.add(maps[name.split("@")[0]], br, None, vol.zooms)
        print(f"[{time.monotonic() - t0:6.0f}s] test {scan.image.name}", flush=True)

    # 3. dev lesions
    dev = {n: TransferCounts(t) for n, t in thresholds.items()}
    scores: dict[str, list[np.ndarray]] = {}
    labels_all: list[np.ndarray] = []
    far_all: list[np.ndarray] = []
    for case in cases:
        volume = load_volume(case.image)
        label = load_mask(case.label, volume)
        fg = foreground_mask(np.asarray(volume.data))
        maps = native_maps(ensemble, volume, fg, settings, args.cache / "dev" / f"{case.name}.npz")
        for name, counts in dev.items():
            counts.add(maps[name.split("@")[0]], fg, label, volume.zooms)
        for name, amap in maps.items():
            scores.setdefault(name, []).append(amap[fg])
        labels_all.append(label[fg])
        far_all.append(far_from(label, volume.zooms)[fg])
        print(f"[{time.monotonic() - t0:6.0f}s] dev {case.name}", flush=True)
    labels = np.concatenate(labels_all)
    far = np.concatenate(far_all)

    report = {"model": str(args.model), "members": ensemble.info.folds, "slice_spacing": args.slice_spacing,
              "calibration_scans": len(roles["calibration"]), "test_scans": len(test), "dev_cases": len(cases),
              "seconds": round(time.monotonic() - t0), "variants": {}}
    print(f"{'variant':24s} {'thr':>7s} " + " ".join(f"{k[:6]:>6s}" for k in healthy)
          + f" | {'sens':>5s} {'prec':>5s} {'nonles':>6s} {'far':>6s} {'AP_p':>6s} | {'p@.4':>5s} {'far@.4':>6s}")
    for name, thr in thresholds.items():
        d = dev[name].result()
        pooled = np.concatenate(scores[name.split("@")[0]])
        ap = average_precision(labels, pooled)
        # The map's own separation, whatever the threshold: precision and far-flagged where it catches 40 %.
        at40 = pooled >= np.quantile(pooled[labels], 1.0 - EQUAL_SENSITIVITY)
        p40, far40 = float(labels[at40].mean()), float(at40[far].mean())
        h = {kind: healthy[kind][name].result().brain_flagged for kind in healthy}
        report["variants"][name] = {"threshold": thr, "healthy_flagged": h, "dev": asdict(d), "dev_ap_p": ap,
                                    "precision_at_equal_sensitivity": p40, "far_at_equal_sensitivity": far40}
        print(f"{name:24s} {thr:7.3f} " + " ".join(f"{v:6.2%}" for v in h.values())
              + f" | {d.sensitivity:5.2f} {d.precision:5.2f} {d.nonlesion_flagged:6.2%} {d.far_flagged:6.2%} {ap:6.3f}"
              f" | {p40:5.2f} {far40:6.2%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: scans per hour of ``condiff-engine infer`` on a cohort, and what the cohort machinery costs (issue 22).

Three runs over the same scans (healthy IXI T1 with their brain masks, from a CSV manifest), each into a fresh folder:

* ``cohort 1x2``: one process with 2 torch threads (``infer manifest.csv``);
* ``cohort 2x1``: two processes with 1 thread each (``torchrun --nproc_per_node 2 -m engine infer ... --threads 1``);
* ``single``: one ``condiff-engine infer scan --brain-mask mask`` call per scan, 2 threads, one after another (what
  a user's own loop would do).

The cohort overhead is the 1x2 cohort's wall time against the sum of the single calls' (negative: the cohort is
faster, as it loads the model once). Only speed is measured; the scans' roles do not matter.

Usage (numbers in the README come from this command, on an otherwise idle machine)::

    python tests/benchmarks/bench_cohort.py --scans 20 --work /tmp/bench-cohort --json bench-cohort.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def scans(data: Path, count: int) -> list[tuple[Path, Path]]:
    """``count`` T1 scans with brain masks: the validation folder first, then the training folder."""
    found = []
    for folder in (data / "ixi-t1" / "val", data / "ixi-t1" / "train"):
        for image in sorted(folder.glob("*_T1.nii.gz")):
            mask = image.with_name(image.name.replace("_T1.nii.gz", "_brainmask.nii.gz"))
            if mask.is_file():
                found.append((image, mask))
    if len(found) < count:
        raise SystemExit(f"only {len(found)} scans with masks under {data / 'ixi-t1'}")
    return found[:count]


def write_manifest(chosen: list[tuple[Path, Path]], path: Path) -> Path:
    """The CSV manifest (image, brain_mask) of the chosen scans: what every run here, and gpu-check.sh, analyses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "brain_mask"])
        writer.writerows([str(i), str(m)] for i, m in chosen)
    return path


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("CONDIFF_DATA_DIR", ROOT.parent / "shared/data")))
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--work", type=Path, help="scratch folder (emptied first)")
    parser.add_argument("--manifest-only", type=Path, metavar="CSV",
                        help="only write the manifest of the chosen scans there (packaging/gpu-check.sh uses it)")
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--runs", default="1x2,2x1,single")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    chosen = scans(args.data, args.scans)
    if args.manifest_only is not None:
        write_manifest(chosen, args.manifest_only)
        return 0
    if args.work is None:
        parser.error("--work is required (or --manifest-only)")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    manifest = write_manifest(chosen, args.work / "cohort.csv")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    engine = [str(BIN / "condiff-engine")]
    common = ["--model", str(args.model), "--device", "cpu"]
    results: dict[str, float] = {}
    runs = args.runs.split(",")
    if "1x2" in runs:
        results["cohort_1x2_s"] = timed(engine + ["infer", str(manifest), "--out", str(args.work / "1x2"),
                                                  "--threads", "2", *common], env)
    if "2x1" in runs:
        results["cohort_2x1_s"] = timed([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
                                         "engine", "infer", str(manifest), "--out", str(args.work / "2x1"),
                                         "--threads", "1", *common], env)
    if "single" in runs:
        total = 0.0
        for image, mask in chosen:
            total += timed(engine + ["infer", str(image), "--brain-mask", str(mask), "--out",
                                     str(args.work / "single"), "--threads", "2", *common], env)
        results["single_calls_s"] = total
    report: dict[str, object] = {"scans": len(chosen), "cpu_count": os.cpu_count(), **{k: round(v, 1) for k, v in
                                                                                       results.items()}}
    for key, seconds in results.items():
        report[key.replace("_s", "_scans_per_hour")] = round(3600 * len(chosen) / seconds, 1)
    if "cohort_1x2_s" in results and "single_calls_s" in results:
        report["cohort_overhead_vs_single_calls"] = round(results["cohort_1x2_s"] / results["single_calls_s"] - 1, 4)
    # The cohort's own per-scan seconds (analysis and writing), from its table: what the machinery adds around them.
    table = args.work / "1x2" / "cohort.json"
    if table.is_file():
        rows = json.loads(table.read_text())["scans"]
        inside = sum(r["seconds"] for r in rows)
        report["cohort_1x2_scan_seconds_sum"] = round(inside, 1)
        report["cohort_1x2_outside_scans_share"] = round(results["cohort_1x2_s"] / inside - 1, 4)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

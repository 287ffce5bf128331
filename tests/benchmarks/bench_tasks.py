"""Time each synthetic anomaly task per 128x128 slice (not collected by pytest; run it as a script).

Usage: ``OMP_NUM_THREADS=1 python tests/benchmarks/bench_tasks.py [--samples N] [--size S]``

It uses real skull-stripped IXI T1 axial slices from ``../shared/data/ixi-t1/val`` and prints, per task, the mean
and median milliseconds per corrupted slice (every call draws 1-4 anomalies, as in training) and the mean number of
anomalies per call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from skimage.transform import resize

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.tasks import TASK_NAMES, ArraySource, build_tasks, default_external_source  # noqa: E402

IXI_VAL = ROOT / ".." / "shared" / "data" / "ixi-t1" / "val"


def load_slices(size: int, count: int = 6) -> list[np.ndarray]:
    """Skull-stripped axial slices around the middle of the first validation subjects, divided by their max."""
    scans = sorted(IXI_VAL.glob("*_T1.nii.gz"))[:2]
    slices = []
    for scan_path in scans:
        mask_path = scan_path.with_name(scan_path.name.replace("_T1", "_brainmask"))
        volume = np.asarray(nib.as_closest_canonical(nib.load(scan_path)).dataobj, dtype=np.float32)
        brain = np.asarray(nib.as_closest_canonical(nib.load(mask_path)).dataobj) > 0
        volume = volume * brain
        middle = volume.shape[2] // 2
        for k in np.linspace(middle - 15, middle + 15, count // len(scans)).astype(int):
            image = resize(volume[:, :, k], (size, size), order=1, preserve_range=True).astype(np.float32)
            slices.append(image / image.max())
    return slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="corrupted slices per task")
    parser.add_argument("--size", type=int, default=128, help="slice side in pixels")
    args = parser.parse_args()

    slices = load_slices(args.size)
    same = ArraySource(slices, [s > s.min() for s in slices])
    tasks = build_tasks(tuple(TASK_NAMES), same_source=same, external_source=default_external_source(128))
    rng = np.random.default_rng(0)
    print(f"{args.samples} corruptions per task on {args.size}x{args.size} IXI slices")
    print(f"{'task':<22}{'mean ms':>9}{'median ms':>11}{'anomalies':>11}")
    for task_id, task in tasks.items():
        times, counts = [], []
        for i in range(args.samples):
            image = slices[i % len(slices)]
            start = time.perf_counter()
            result = task(image, None, rng)
            times.append((time.perf_counter() - start) * 1e3)
            counts.append(len(result.params))
        print(f"{task_id} {task.name:<20}{np.mean(times):>9.2f}{np.median(times):>11.2f}{np.mean(counts):>11.2f}")


if __name__ == "__main__":
    main()

"""Benchmark of pooled pixel metrics on a synthetic test set of realistic structure (a script, not a pytest module).

Streams ``--pixels`` pixels of 128x128 slices into :class:`engine.metrics.PixelAccumulator`: background exactly 0
(as zeroed anomaly maps), a brain disk of varying size with small scores, and a lesion in half the slices with
higher scores. Reports the time spent adding, the time of ``result()``, the bytes kept, and the peak resident memory
of the process (``resource.getrusage``), which includes the chunk being generated.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_metrics.py --pixels 1e8 [--mode binned]
        [--dense] [--check]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.metrics import PixelAccumulator  # noqa: E402

SIZE = 128


def synthetic_chunk(
    rng: np.random.Generator, n_slices: int, *, dense: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (float32) and lesion masks (bool) for ``n_slices`` slices of SIZE x SIZE.

    With ``dense`` the background gets small non-zero scores too (no background zeroing): the worst case.
    """
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    r2 = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2
    radius = rng.uniform(0.0, 0.45 * SIZE, size=(n_slices, 1, 1)).astype(np.float32)  # brain ~ 0-64% of a slice
    brain = r2[None] < radius**2
    maps = np.zeros((n_slices, SIZE, SIZE), dtype=np.float32)
    maps[brain] = rng.gamma(2.0, 0.003, size=int(brain.sum())).astype(np.float32)
    centre = rng.uniform(SIZE / 2 - 20, SIZE / 2 + 20, size=(n_slices, 2, 1, 1)).astype(np.float32)
    lesion_r = rng.uniform(3, 12, size=(n_slices, 1, 1)).astype(np.float32)
    lesion_r[rng.random(n_slices) < 0.5] = 0
    masks = brain & ((yy[None] - centre[:, 0]) ** 2 + (xx[None] - centre[:, 1]) ** 2 < lesion_r**2)
    maps[masks] += rng.gamma(2.0, 0.006, size=int(masks.sum())).astype(np.float32)
    if dense:
        maps[~brain] = rng.random(int((~brain).sum()), dtype=np.float32) * 0.001 + 1e-6
    return maps, masks


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=float, default=1e8, help="total pixels (rounded to whole 128x128 slices)")
    parser.add_argument("--chunk-slices", type=int, default=256, help="slices per add() call")
    parser.add_argument("--mode", choices=["exact", "binned"], default="exact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense", action="store_true", help="non-zero background scores (worst case for memory)")
    parser.add_argument("--check", action="store_true", help="also run sklearn on the same data (small sizes only)")
    args = parser.parse_args()

    n_slices = max(1, round(args.pixels / SIZE**2))
    rng = np.random.default_rng(args.seed)
    acc = PixelAccumulator(exact=args.mode == "exact")
    print(f"start: peak RSS {peak_rss_mb():.0f} MiB; {n_slices} slices = {n_slices * SIZE**2:.3g} pixels")

    generate_s = add_s = 0.0
    kept_maps: list[np.ndarray] = []
    kept_masks: list[np.ndarray] = []
    for start in range(0, n_slices, args.chunk_slices):
        t0 = time.perf_counter()
        maps, masks = synthetic_chunk(rng, min(args.chunk_slices, n_slices - start), dense=args.dense)
        t1 = time.perf_counter()
        acc.add(maps, masks)
        add_s += time.perf_counter() - t1
        generate_s += t1 - t0
        if args.check:
            kept_maps.append(maps)
            kept_masks.append(masks)
    rss_after_add = peak_rss_mb()
    kept_mb = acc.nbytes / 2**20

    t0 = time.perf_counter()
    result = acc.result()
    result_s = time.perf_counter() - t0

    n = result.n_pixels
    print(f"pixels {n:.3g}, positive {result.n_positive} ({result.n_positive / n:.4%}), exact={result.exact}")
    print(f"AP {result.ap:.6f}, max Dice {result.max_dice:.6f} at threshold {result.best_threshold:.6g}")
    print(f"generate {generate_s:.2f} s (not counted); add {add_s:.2f} s; result {result_s:.2f} s")
    print(f"kept {kept_mb:.0f} MiB ({acc.nbytes / n:.2f} B/pixel); peak RSS after add {rss_after_add:.0f} MiB, "
          f"after result {peak_rss_mb():.0f} MiB")

    if args.check:
        from sklearn.metrics import average_precision_score, precision_recall_curve

        labels = np.concatenate(kept_masks).ravel()
        scores = np.concatenate(kept_maps).ravel()
        t0 = time.perf_counter()
        ap = average_precision_score(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        with np.errstate(divide="ignore", invalid="ignore"):
            dice = np.nanmax(2 * precision * recall / (precision + recall))
        print(f"sklearn: AP {ap:.6f}, max Dice {dice:.6f} in {time.perf_counter() - t0:.1f} s; "
              f"|dAP| {abs(ap - result.ap):.2e}, |dDice| {abs(dice - result.max_dice):.2e}; "
              f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()

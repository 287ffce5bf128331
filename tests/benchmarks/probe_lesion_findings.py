"""Probe: how many of a scan's findings touch its lesion mask, and how many lie elsewhere (issue 19's MS target).

Runs ``condiff-engine infer`` on the scan (default: the bundled MS sample), then labels the written anomaly mask the
way the findings table does (26-connected regions of at least the minimum volume) and counts the findings that
overlap the lesion mask against those that do not, with each finding's volume.

Usage::

    python tests/benchmarks/probe_lesion_findings.py --model resources/models/condiff-t1-small --out /tmp/ms

Not a test: it runs the full model on a whole volume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.cli import main as engine_main  # noqa: E402
from engine.config import DEFAULT_MIN_VOLUME_ML  # noqa: E402
from engine.outputs import output_paths  # noqa: E402
from engine.readers import load_mask, load_volume  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scan", type=Path, default=ROOT / "resources/samples/patient07_T1.nii.gz")
    parser.add_argument("--lesion", type=Path, default=ROOT / "resources/samples/patient07_lesion.nii.gz")
    parser.add_argument("--model", type=Path, default=ROOT / "resources/models/condiff-t1-small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", default="2")
    args = parser.parse_args()
    status = engine_main(["infer", str(args.scan), "--model", str(args.model), "--out", str(args.out),
                          "--threads", args.threads, "--device", "cpu"])
    if status:
        return status
    volume = load_volume(args.scan)
    lesion = load_mask(args.lesion, volume)
    flagged = load_mask(output_paths(volume, args.out)["mask"], volume)
    voxel_ml = float(np.prod(volume.zooms)) / 1000.0
    regions, n = ndimage.label(flagged, structure=np.ones((3, 3, 3), bool))
    sizes = ndimage.sum_labels(np.ones_like(flagged), regions, index=np.arange(1, n + 1)) * voxel_ml
    touching = ndimage.maximum(lesion, regions, index=np.arange(1, n + 1)).astype(bool) if n else np.zeros(0, bool)
    keep = sizes >= DEFAULT_MIN_VOLUME_ML
    inside, outside = int((keep & touching).sum()), int((keep & ~touching).sum())
    caught = float((flagged & lesion).sum() / max(lesion.sum(), 1))
    print(f"findings touching the lesion mask: {inside} ({sizes[keep & touching].sum():.2f} mL); elsewhere: "
          f"{outside} ({sizes[keep & ~touching].sum():.2f} mL); lesion voxels flagged {caught:.1%}; "
          f"brain flagged outside the lesions {float((flagged & ~lesion).sum()) * voxel_ml:.2f} mL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

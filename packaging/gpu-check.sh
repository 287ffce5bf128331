#!/usr/bin/env bash
# The GPU path, measured (issue 12): on a machine with an NVIDIA GPU and a CUDA build of torch, time
#   1. the paper's network (preset "paper", 72.4 M parameters, random weights: speed does not depend on them) with
#      ten members under bf16 autocast: per-call time, the paper's 50-step protocol and the fast sampler on a
#      240x240x155 volume, and the achieved share of the GPU's bf16 matmul rate;
#   2. the bundled model (its own default sampler) on the same volume;
#   3. a cohort (issue 22): the bundled model over N scans (default 20, CONDIFF_COHORT_SCANS) as one process on one
#      GPU and as one torchrun rank per GPU (every GPU of the machine), in scans per hour. The scans are the shared
#      IXI T1 scans with their brain masks (CONDIFF_DATA_DIR, default ../shared/data); skipped when they are absent.
# Writes build/gpu-*.json and prints them. Usage: packaging/gpu-check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-.venv/bin/python}}
mkdir -p build
"$PY" - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu-check: no usable CUDA GPU (torch.cuda.is_available() is False)")
print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
"$PY" -m engine bench --preset paper --device cuda --train-steps 3 --json build/gpu-paper.json
"$PY" -m engine bench --model resources/models/condiff-t1-small --device cuda --train-steps 0 \
    --json build/gpu-bundled.json

DATA=${CONDIFF_DATA_DIR:-../shared/data}
SCANS=${CONDIFF_COHORT_SCANS:-20}
if [ -d "$DATA/ixi-t1" ]; then
    GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    "$PY" tests/benchmarks/bench_cohort.py --data "$DATA" --scans "$SCANS" --manifest-only build/gpu-cohort.csv
    rm -rf build/gpu-cohort-1 build/gpu-cohort-n
    t0=$EPOCHREALTIME
    "$PY" -m engine infer build/gpu-cohort.csv --out build/gpu-cohort-1 --device cuda >/dev/null
    t1=$EPOCHREALTIME
    "$(dirname "$PY")/torchrun" --standalone --nproc_per_node "$GPUS" -m engine infer build/gpu-cohort.csv \
        --out build/gpu-cohort-n --device cuda >/dev/null
    t2=$EPOCHREALTIME
    "$PY" - "$SCANS" "$GPUS" "$t0" "$t1" "$t2" <<'PY'
import json, sys
scans, gpus = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2 = map(float, sys.argv[3:6])
one, many = t1 - t0, t2 - t1
report = {"scans": scans, "gpus": gpus, "one_gpu_seconds": round(one, 1), "all_gpus_seconds": round(many, 1),
          "one_gpu_scans_per_hour": round(3600 * scans / one, 1),
          "all_gpus_scans_per_hour": round(3600 * scans / many, 1)}
open("build/gpu-cohort.json", "w").write(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
PY
else
    echo "gpu-check: no $DATA/ixi-t1; the cohort measurement is skipped"
fi

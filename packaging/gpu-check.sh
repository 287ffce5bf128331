#!/usr/bin/env bash
# The GPU path, measured (issue 12): on a machine with an NVIDIA GPU and a CUDA build of torch, time
#   1. the paper's network (preset "paper", 72.4 M parameters, random weights: speed does not depend on them) with
#      ten members under bf16 autocast: per-call time, the paper's 50-step protocol and the fast sampler on a
#      240x240x155 volume, and the achieved share of the GPU's bf16 matmul rate;
#   2. the bundled model (its own default sampler) on the same volume.
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

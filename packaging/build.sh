#!/usr/bin/env bash
# Build the condiff one-folder bundle: dist/condiff/{condiff-viewer,condiff-engine,_internal/}.
#
# Usage: packaging/build.sh [--venv DIR] [--no-install] [--no-strip] [--smoke]
#   --venv DIR     virtual environment to build from (default: $CONDIFF_VENV or <repo>/.venv; created if missing)
#   --no-install   do not pip-install the package and its [package] extra (pyinstaller) first
#   --no-strip     keep the symbol tables of torch's libraries (stripping them saves about 90 MB)
#   --smoke        after building, run the frozen programs: engine info, train (2 steps), infer with findings, report
#                  and DICOM SEG, and the viewer's headless screenshot and report
# Environment: CONDIFF_MODEL_DIR bundles another model folder as the default model; PYTHON picks the interpreter
# used to create a new venv (default python3). A venv without torch gets the CPU wheel first (CONDIFF_TORCH, default
# torch, from CONDIFF_TORCH_INDEX, default https://download.pytorch.org/whl/cpu): a CUDA torch makes the bundle GBs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CONDIFF_VENV:-$ROOT/.venv}"
INSTALL=1
SMOKE=0
STRIP=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --no-strip) STRIP=0; shift ;;
        --smoke) SMOKE=1; shift ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$ROOT"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "build.sh: creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$VENV/bin/python"

if [[ $INSTALL -eq 1 ]]; then
    if ! "$PY" -c "import torch" 2>/dev/null; then
        # CPU torch first, or the plain PyPI requirement below would bring the multi-GB CUDA build.
        TORCH_INDEX="${CONDIFF_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
        "$PY" -m pip install "${CONDIFF_TORCH:-torch}" --index-url "$TORCH_INDEX"
    fi
    "$PY" -m pip install -e ".[package]"
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "build.sh: no PyInstaller in $VENV (run without --no-install, or: pip install -e '.[package]')" >&2
    exit 1
fi
if "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
    echo "build.sh: torch is the CPU build"
else
    echo "build.sh: WARNING: torch in $VENV is a CUDA build; the bundle will be several GB" >&2
fi

# The icon is drawn by a script; draw it if a checkout lacks it.
[[ -f resources/icons/condiff.png ]] || "$PY" packaging/make_icon.py

START=$(date +%s)
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build" "$ROOT/packaging/condiff.spec"
END=$(date +%s)

BUNDLE="$ROOT/dist/condiff"
# torch's wheels ship their libraries with full symbol tables (libtorch_cpu.so: 434 MB, 345 MB without). Only the
# static symbol tables go; the dynamic symbols that loading and linking use stay.
if [[ $STRIP -eq 1 ]] && command -v strip >/dev/null; then
    for lib in "$BUNDLE"/_internal/torch/lib/libtorch*.so "$BUNDLE"/_internal/torch/lib/libc10.so; do
        if [[ -f "$lib" ]]; then strip --strip-unneeded "$lib"; fi
    done
fi
cp resources/condiff.desktop resources/icons/condiff.png "$BUNDLE/"
echo "build.sh: built $BUNDLE in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
echo "build.sh: bundle size $(du -sh "$BUNDLE" | cut -f1) ($(find "$BUNDLE" -type f | wc -l) files)"

if [[ $SMOKE -eq 1 ]]; then
    "$BUNDLE/condiff-engine" info --preset paper --json >/dev/null
    "$BUNDLE/condiff-engine" info --model "$BUNDLE/_internal/resources/models/condiff-t1-small" --json >/dev/null
    echo "build.sh: frozen condiff-engine info (preset and bundled model): ok"
    # Every output path of infer on the frozen program: maps, mask, findings and the PDF report; with the members
    # exported to ONNX and run by ONNX Runtime, asked for by name so that a failure is not hidden by the fallback.
    OUTS="$ROOT/build/frozen-infer"
    rm -rf "$OUTS" "$ROOT/build/frozen-cache"
    CONDIFF_CACHE_DIR="$ROOT/build/frozen-cache" "$BUNDLE/condiff-engine" infer \
        "$BUNDLE/_internal/resources/samples/patient07_T1.nii.gz" --out "$OUTS" --steps 1 --report \
        --runtime onnxruntime >/dev/null
    ls "$OUTS"/*_report.pdf "$OUTS"/*_desc-anomaly_mask.nii.gz "$OUTS"/*_findings.tsv >/dev/null
    grep -Eq '"Runtime": *"onnxruntime"' "$OUTS"/*_desc-anomaly_mask.json
    echo "build.sh: frozen condiff-engine infer with findings, --report and onnxruntime: ok"
    # DICOM in, DICOM SEG out: a part of the MS sample written as a DICOM series by the tests' factory.
    SERIES="$ROOT/build/frozen-dicom/series"
    rm -rf "$ROOT/build/frozen-dicom" "$OUTS-dicom"
    (cd "$ROOT" && "$PY" - "$BUNDLE/_internal/resources/samples/patient07_T1.nii.gz" "$SERIES" <<'PYEOF'
import sys
from pathlib import Path
import nibabel as nib
import numpy as np
from tests.dicom_factory import write_series
image = nib.load(sys.argv[1])
block = np.asarray(image.dataobj, dtype=np.float32)[40:140, 50:180, 60:110]
affine = image.affine.copy()
affine[:3, 3] = (image.affine @ [40, 50, 60, 1])[:3]
write_series(block, affine, Path(sys.argv[2]))
PYEOF
    )
    "$BUNDLE/condiff-engine" infer "$SERIES" --out "$OUTS-dicom" --steps 1 --dicom-seg >/dev/null
    ls "$OUTS-dicom"/series_desc-anomaly_seg.dcm >/dev/null
    echo "build.sh: frozen condiff-engine infer of a DICOM series with --dicom-seg: ok"
    # Training: two steps of a tiny member on the bundled healthy sample and its brain mask.
    TRAIN_DATA="$ROOT/build/frozen-train-data"
    rm -rf "$TRAIN_DATA" "$ROOT/build/frozen-train"
    mkdir -p "$TRAIN_DATA"
    cp "$BUNDLE"/_internal/resources/samples/IXI056-HH-1327_T1.nii.gz \
        "$BUNDLE"/_internal/resources/samples/IXI056-HH-1327_brainmask.nii.gz "$TRAIN_DATA/"
    "$BUNDLE/condiff-engine" train --data "$TRAIN_DATA" --val-data "$TRAIN_DATA" --preset tiny --max-steps 2 \
        --fold 0 --threads 1 --out "$ROOT/build/frozen-train" >/dev/null
    ls "$ROOT/build/frozen-train/member-0.safetensors" >/dev/null
    echo "build.sh: frozen condiff-engine train (tiny, 2 steps): ok"
    # The MS sample, analysed on one slice: the frozen torch, the bundled model and the overlay all take part.
    SCAN="$BUNDLE/_internal/resources/samples/patient07_T1.nii.gz"
    SHOT="$ROOT/build/frozen-viewer.png"
    if [[ -f "$SCAN" ]]; then
        rm -f "$SHOT"
        QT_QPA_PLATFORM=offscreen "$BUNDLE/condiff-viewer" "$SCAN" --analyze slice --slice 96 --screenshot "$SHOT"
        # A render that came out black (nothing drawn) fails the smoke test.
        "$PY" - "$SHOT" <<'PYEOF'
import sys
import numpy as np
from PIL import Image
grey = np.asarray(Image.open(sys.argv[1]).convert("L"))
lit = float((grey > 40).mean())
if lit < 0.02:
    sys.exit(f"build.sh: frozen viewer screenshot {sys.argv[1]} is nearly black ({lit:.1%} of pixels lit)")
print(f"build.sh: frozen viewer screenshot: {sys.argv[1]} ({lit:.0%} of pixels lit)")
PYEOF
        # The viewer's own report (File > Save report), headless.
        rm -rf "$ROOT/build/frozen-viewer-report"
        QT_QPA_PLATFORM=offscreen "$BUNDLE/condiff-viewer" "$SCAN" --analyze slice --slice 96 \
            --report "$ROOT/build/frozen-viewer-report"
        ls "$ROOT"/build/frozen-viewer-report/*_report.pdf >/dev/null
        echo "build.sh: frozen viewer report: ok"
    else
        echo "build.sh: no sample scan bundled; viewer screenshot skipped"
    fi
fi

#!/usr/bin/env bash
# Install the workstation half and run the main job on the shared example photos:
# train on the standard split's 398 training dogs, export int8, then evaluate the int8 model on the
# 170 held-out dogs against every no-dog photo.
# Usage: bash scripts/demo.sh [DATA_DIR]   (default ../shared/data/dev)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/dev}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[train,device,dev]'

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/dog" "$WORK/heldout"
# The standard split (see ../shared/data/README.md): files are numbered after a seeded shuffle.
for f in "$DATA"/dog/*.jpg; do
  n=$(basename "$f" .jpg)
  if [ "$((10#$n))" -le 397 ]; then ln -s "$(realpath "$f")" "$WORK/dog/"; else ln -s "$(realpath "$f")" "$WORK/heldout/"; fi
done
.venv/bin/train-edge "$WORK/dog" --out ./dog-model
.venv/bin/eval-edge ./dog-model/model.tflite --positives "$WORK/heldout" --negatives "$DATA/nodog" \
  --json ./dog-model/eval.json --plot ./dog-model/eval.png
echo "model, report and evaluation in ./dog-model/ (open ./dog-model/report.html)"

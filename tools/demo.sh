#!/usr/bin/env bash
# The built-in demo, from nothing: set up .venv, train a tiny CLIP from
# scratch with the CMA loss on generated shapes (tools/train.py), then
# evaluate ID accuracy and OoD detection (tools/test.py). About 2-3 minutes
# on 2 CPU cores once the environment exists.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
PY=${VENV:-$ROOT/.venv}/bin/python
CONFIG=configs/demo/cma_clip-tiny-rn_1xb64_shapes.py
WORK_DIR=${WORK_DIR:-work_dirs/demo}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
"$PY" tools/test.py "$CONFIG" "$WORK_DIR/epoch_20.pth" --work-dir "$WORK_DIR"
echo "Results (JSON, ROC curves, histograms): $(ls -td "$WORK_DIR"/*/ | head -1)"

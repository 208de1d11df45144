#!/usr/bin/env bash
# Create (or update) the project virtualenv in .venv and install cma_ood
# with its test dependencies, editable. Idempotent: does nothing when the
# requirements have not changed since the last successful run.
#   bash tools/setup_env.sh            # uses python3 from PATH
#   bash tools/setup_env.sh --dry-run  # only say what would be installed
#   PYTHON=python3.12 VENV=/path/env TORCH_SPEC="torch torchvision" bash tools/setup_env.sh
# PyPI's Linux x86_64 torch wheels are CUDA builds (about 5 GB with their
# nvidia-* packages, also on machines without a GPU; .venv is about 6 GB in
# all). Where PyTorch's own CPU wheel index can be reached, a CPU-only
# machine can use its CPU build instead (about 1 GB):
#   TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu" \
#       bash tools/setup_env.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
DEFAULT_TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
# torch 2.14.1 / torchvision 0.29.1 are the tested pair; override for other
# builds, e.g. TORCH_SPEC="torch torchvision --index-url ..."
TORCH_SPEC=${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}
DRY_RUN=0
case "${1:-}" in
    --dry-run) DRY_RUN=1 ;;
    "") ;;
    *) echo "usage: bash tools/setup_env.sh [--dry-run]" >&2; exit 2 ;;
esac

# What is about to be installed, and roughly how big it is.
torch_size_class() {
    case "$TORCH_SPEC" in
        *whl/cpu*|*+cpu*) echo "CPU build, about 1 GB" ;;
        "$DEFAULT_TORCH_SPEC")
            echo "CUDA build from PyPI, about 5 GB (torch plus ~16 nvidia-* packages; a CPU-only machine installs it too: see README \"Install\" for TORCH_SPEC and PyTorch's CPU index)" ;;
        *) echo "size depends on the build TORCH_SPEC selects" ;;
    esac
}
plan() {
    echo "cma_ood setup: virtualenv $VENV (python: $PYTHON)"
    echo "  torch: $TORCH_SPEC -- $(torch_size_class)"
    echo "  then: cma_ood (editable) with requirements/runtime.txt and tests.txt: mmpretrain, mmengine, mmcv-lite, openai-clip, scikit-learn, open_clip_torch and timm (the tests cover both optional backbone sources), ... (about 1 GB)"
}

"$PYTHON" - <<'PY' || { echo "cma_ood needs Python >= 3.10" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

stamp_of() {
    cat "$ROOT/setup.py" "$ROOT"/requirements/*.txt
    echo "$TORCH_SPEC"
}
STAMP="$VENV/.cma_ood_setup"
if [ "$DRY_RUN" = 1 ]; then
    plan
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of | sha256sum)" ]; then
        echo "  (already set up: nothing would be installed)"
    fi
    exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of | sha256sum)" ]; then
    exit 0
fi
plan >&2
echo "Setting up $VENV (first run takes a few minutes) ..." >&2
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools>=77,<81" wheel
# shellcheck disable=SC2086
"${PIP[@]}" install -q $TORCH_SPEC
"${PIP[@]}" install -q --no-build-isolation -e "$ROOT[tests]"
stamp_of | sha256sum > "$STAMP"

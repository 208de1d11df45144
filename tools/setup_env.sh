#!/usr/bin/env bash
# Create (or update) the project virtualenv in .venv and install cma_ood
# with its test dependencies, editable. Idempotent: does nothing when the
# requirements have not changed since the last successful run.
#   bash tools/setup_env.sh            # uses python3 from PATH
#   PYTHON=python3.12 VENV=/path/env TORCH_SPEC="torch torchvision" bash tools/setup_env.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
# torch 2.14.1 / torchvision 0.29.1 are the tested pair; override for other
# CUDA builds, e.g. TORCH_SPEC="torch torchvision --index-url ..."
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

"$PYTHON" - <<'PY' || { echo "cma_ood needs Python >= 3.10" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

stamp_of() {
    cat "$ROOT/setup.py" "$ROOT"/requirements/*.txt
    echo "$TORCH_SPEC"
}
STAMP="$VENV/.cma_ood_setup"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of | sha256sum)" ]; then
    exit 0
fi
echo "Setting up $VENV (first run takes a few minutes) ..." >&2
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools>=77,<81" wheel
# shellcheck disable=SC2086
"${PIP[@]}" install -q $TORCH_SPEC
"${PIP[@]}" install -q --no-build-isolation -e "$ROOT[tests]"
stamp_of | sha256sum > "$STAMP"

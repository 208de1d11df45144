#!/usr/bin/env bash
# Set up .venv if needed and run the whole test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest tests "$@"

#!/usr/bin/env bash
# Set up .venv if needed and run the whole test suite, in as many
# pytest-xdist worker processes as there are CPUs (about 10 minutes on 2
# cores); extra arguments go to pytest, e.g. `-n 0` to run in one process
# or `-k decode` to select tests.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest -n auto tests "$@"

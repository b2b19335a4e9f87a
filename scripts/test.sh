#!/usr/bin/env bash
# Set up the environment, lint, then run the test suite. Extra args go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
echo "[test] ruff check ."
.venv/bin/ruff check .
echo "[test] pytest $*"
.venv/bin/python -m pytest "$@"

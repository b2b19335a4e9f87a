#!/usr/bin/env bash
# The GPU path, every step, one table (benchmarks/gpu_check.py). On a GPU machine:
#   bash scripts/gpu_check.sh --markdown docs/results/gpu_check.md --json benchmarks/results/gpu_check.json
# Without a GPU (CI): bash scripts/gpu_check.sh --dry-run   (same steps on CPU, tiny sizes)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -x .venv/bin/python ]] || bash scripts/setup.sh
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
exec timeout 600 .venv/bin/python benchmarks/gpu_check.py "$@"

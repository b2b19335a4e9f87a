#!/usr/bin/env bash
# Set up the environment and run the default short meta-training. Extra args are config
# overrides (e.g. run.steps=50) or flags for ray_jobs/train.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
echo "[run] ray_jobs/train.py --config configs/experiments/default.yaml $*"
.venv/bin/python ray_jobs/train.py --config configs/experiments/default.yaml "$@"

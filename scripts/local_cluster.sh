#!/usr/bin/env bash
# A local multi-node Ray cluster on this machine, and the training job run across it:
#   ray start --head (1 CPU) + ray start --address 127.0.0.1:<port> (1 CPU, own temp dir)
#   -> wait for 2 alive nodes -> ray job submit --runtime-env infra/ray/runtime_env.yaml
#   --working-dir . -- python ray_jobs/train.py ... with one Ray Train worker per node
#   (SPREAD) and the run directory as the nodes' shared storage -> print which node each
#   worker ran on -> stop exactly the processes it started (also on failure or Ctrl-C).
# Options (before the overrides): --config <yaml>, --out <shared dir> (default
# runs/local-cluster), --nodes N, --s3 (signal store on a local moto S3 server),
# --placement-json <file>. Extra arguments are config overrides (run.steps=20).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
    bash scripts/setup.sh
    PY="$ROOT/.venv/bin/python"
fi
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# The Python side traps its own exit: every `ray start` runs in its own session and is
# ended by session id in a finally block; SIGINT/SIGTERM become exceptions so that it runs.
exec "$PY" -m pipelines.cluster.local_run "$@"

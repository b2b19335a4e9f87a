#!/usr/bin/env bash
# Set up the environment and run the default short meta-training. Extra args are config
# overrides (e.g. run.steps=50) or flags for ray_jobs/train.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
# tcmalloc keeps large activation buffers mapped between iterations (PERF_NOTES: 10-25% faster).
for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
    if [[ -f "$lib" && -z "${MIA_NO_TCMALLOC:-}" ]]; then export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"; break; fi
done
echo "[run] ray_jobs/train.py --config configs/experiments/default.yaml $*"
.venv/bin/python ray_jobs/train.py --config configs/experiments/default.yaml "$@"

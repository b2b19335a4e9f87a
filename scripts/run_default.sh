#!/usr/bin/env bash
# The embedded default, end to end on a fresh machine:
#   set up .venv -> start a local Ray head (unless one is running) -> submit the
#   meta-training job with `ray job submit` (it builds the synthetic store, trains with
#   Ray Train, reports the selected checkpoint on the validation split and logs everything
#   to a local MLflow store) -> print the results table and how to open the MLflow UI.
# Safe to run twice: a second run resumes from the finished run's last checkpoint; pass
# --no-resume for a fresh run. Extra arguments go to ray_jobs/train.py (config overrides
# like run.steps=50, or flags). It stops the Ray head it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
# tcmalloc keeps large activation buffers mapped between iterations (PERF_NOTES: 10-25% faster).
for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
    if [[ -f "$lib" && -z "${MIA_NO_TCMALLOC:-}" ]]; then export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"; break; fi
done

OUT="$ROOT/runs"
mkdir -p "$OUT"
DASH="http://127.0.0.1:8265"
ray_sid=""
# Stop only the head this script started: its processes share the session of `setsid ray
# start` (`ray stop` would stop every Ray instance on the machine).
stop_ray() {
    if [[ -n "$ray_sid" ]]; then
        echo "[run] stopping the Ray head this script started"
        pkill -TERM -s "$ray_sid" 2>/dev/null || true
        for _ in $(seq 10); do pgrep -s "$ray_sid" >/dev/null || break; sleep 1; done
        pkill -KILL -s "$ray_sid" 2>/dev/null || true
    fi
}
trap stop_ray EXIT
if curl -sf "$DASH/api/version" >/dev/null 2>&1; then
    echo "[run] using the Ray cluster already running at $DASH"
else
    echo "[run] starting a local Ray head (2 CPUs, dashboard $DASH)"
    # A background child is no process-group leader, so setsid keeps its pid as the sid.
    # Free ports for the node's agents, so another Ray instance on the machine (holding the
    # defaults) cannot leave the head without a job agent.
    free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    # RAY_ADDRESS: Ray's helpers (Train's placement-group cleaner) find this head by it.
    gcs_port="$(free_port)"
    RAY_ADDRESS="127.0.0.1:$gcs_port" setsid ray start --head --num-cpus=2 \
        --dashboard-host=127.0.0.1 --dashboard-port=8265 \
        --port="$gcs_port" --dashboard-agent-listen-port="$(free_port)" \
        --dashboard-agent-grpc-port="$(free_port)" --runtime-env-agent-port="$(free_port)" \
        --metrics-export-port="$(free_port)" \
        --temp-dir=/tmp/mia-ray --disable-usage-stats >/dev/null &
    ray_sid=$!
    wait "$ray_sid"
    for _ in $(seq 60); do curl -sf "$DASH/api/version" >/dev/null 2>&1 && break; sleep 1; done
fi

# `ray job submit --no-wait`, then the job's own output, whole, as it runs
# (pipelines/cluster/follow_job.py): without the packaging, "next steps", address and
# status lines that `ray job submit` / `ray job logs --follow` print around it. Those go to
# a file, shown if the submission fails.
job_id="mia-default-$(date +%Y%m%d-%H%M%S)-$$"
submit_log="$(mktemp)"
echo "[run] ray job submit -- python ray_jobs/train.py --config configs/experiments/default.yaml $* (job $job_id)"
if ! ray job submit --address "$DASH" --submission-id "$job_id" --no-wait --log-color false \
    --working-dir . --runtime-env-json '{"excludes": [".venv", "runs", ".git", "*.zarr"]}' \
    -- env MIA_GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null)" \
    python ray_jobs/train.py --config configs/experiments/default.yaml "run.out_dir=$OUT" "$@" \
    >"$submit_log" 2>&1; then
    cat "$submit_log" >&2
    exit 1
fi
rm -f "$submit_log"
python -m pipelines.cluster.follow_job --address "$DASH" "$job_id" || exit 1
echo "[run] job $job_id succeeded"

echo
echo "[run] validation results: $OUT/default/results_val.md (figures in $OUT/default/figures_val)"
echo "[run] the final test report: mia-inr evaluate --run-dir $OUT/default --split test"
echo "[run] MLflow UI: $ROOT/.venv/bin/mlflow ui --backend-store-uri sqlite:///$OUT/mlflow.db --port 5000"

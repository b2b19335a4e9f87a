"""Regridding cost of the ERA5 builder: sparse weights and the same-grid copy vs dense einsums.

The builder's conservative regrid used to apply dense ``(n_t, n_s)`` overlap matrices with
two einsums per variable (values and the valid mask); the matrices are banded (a cell
overlaps a few neighbours), and at the input's own grid they are the identity. This script
times one time step of 4 variables (random values with NaN holes) three ways:

* same grid, 721 x 1440 (0.25 degrees): the former dense regrid against the builder's
  copy (``era5_grid.same_grid_index`` and an index take, what ``_regrid_block`` does);
* coarsening 721 x 1440 -> 181 x 360 and refining 181 x 360 -> 721 x 1440 (conservative
  forced): the former dense weights and einsums against ``regrid.conservative_dataset``
  (sparse weights, built and applied one axis at a time), weights construction included.

It prints seconds, the speed-up and the largest relative difference of the outputs (they
must agree to ~1e-6). For the coarsening and refining cases it also runs ``xarray-regrid``'s
conservative regrid on the same inputs (``_regrid_compare.py``: interleaved medians, the
differences from the builder on valid points, near the NaN holes, at the poles and at the
longitude wrap) and writes ``benchmarks/results/regrid.json`` and the page
``docs/results/regrid.md`` with a verdict (``_regrid_report.py``). ``--small`` runs at 1/4 of
the size (181 x 360 and 46 x 90) and writes files only where ``--json``/``--docs`` say.
About 1-2 min on 2 cores::

    .venv/bin/python benchmarks/regrid_bench.py
    .venv/bin/python benchmarks/regrid_bench.py --small --json /tmp/r.json --docs /tmp/r.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _regrid_compare, _regrid_report  # noqa: E402
from benchmarks._timing import load_note  # noqa: E402
from mia_core.runtime import cpu_name  # noqa: E402
from pipelines.data.builders import era5_grid, regrid  # noqa: E402

JSON_PATH, DOCS_PATH = "benchmarks/results/regrid.json", "docs/results/regrid.md"
SMALL = ("181x360", "46x90")  # 1/4 of the default size, poles included


def dense_overlap(t: np.ndarray, s: np.ndarray, shifts: tuple[float, ...]) -> np.ndarray:
    """The former dense ``(n_t, n_s)`` overlap lengths."""
    out = np.zeros((t.size - 1, s.size - 1))
    for k in shifts:
        lo = np.maximum(t[:-1, None], s[None, :-1] + k)
        hi = np.minimum(t[1:, None], s[None, 1:] + k)
        out += np.clip(hi - lo, 0.0, None)
    return out


def dense_regrid(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """The former implementation (periodic, ascending target longitudes): dense einsums."""
    sin = [np.sin(np.radians(regrid.cell_bounds(c, -90.0, 90.0))) for c in (lat, ds.latitude)]
    w_lat = dense_overlap(*sin, (0.0,))
    src_lon = regrid.cell_bounds(ds["longitude"].values)
    w_lon = dense_overlap(regrid.cell_bounds(lon), src_lon, (-360.0, 0.0, 360.0))
    out = {}
    for name, da in ds.data_vars.items():
        values = da.values.astype(float)
        ok = np.isfinite(values)
        num = np.einsum("ij,...jk,lk->...il", w_lat, np.where(ok, values, 0.0), w_lon,
                        optimize=True)  # fmt: skip
        den = np.einsum("ij,...jk,lk->...il", w_lat, ok.astype(float), w_lon, optimize=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = np.where(den > 1e-12 * den.max(initial=1.0), num / den, np.nan)
        out[name] = res.astype(np.float32)
    return out


def field(nlat: int, nlon: int, n_var: int = 4, seed: int = 0) -> xr.Dataset:
    """One time step of ``n_var`` variables on a global grid (poles included), NaN holes."""
    rng = np.random.default_rng(seed)
    lat, lon = np.linspace(-90, 90, nlat), np.arange(nlon) * (360.0 / nlon)
    data = {}
    for v in range(n_var):
        a = rng.normal(size=(1, nlat, nlon))
        a[0, nlat // 3 : nlat // 3 + 5, : nlon // 10] = np.nan
        data[f"v{v}"] = (("time", "latitude", "longitude"), a)
    return xr.Dataset(data, coords={"time": [0], "latitude": lat, "longitude": lon})


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k], float), np.asarray(b[k], float)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        ok = np.isfinite(x)
        worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / (np.abs(y[ok]) + 1e-6))))
    return worst


def same_grid(ds: xr.Dataset) -> tuple[float, float, float]:
    """(dense s, copy s, max relative difference) at the input's own grid."""
    lat, lon = ds["latitude"].values, ds["longitude"].values
    dense_s, want = _timed(lambda: dense_regrid(ds, lat, lon))

    def copy() -> dict[str, np.ndarray]:
        ilat = era5_grid.same_grid_index(lat, lat, False)
        ilon = era5_grid.same_grid_index(lon, lon, True)
        out = ds.isel(latitude=ilat, longitude=ilon).astype(np.float32)
        return {k: out[k].values for k in out.data_vars}

    copy_s, got = _timed(copy)
    return dense_s, copy_s, _rel(got, want)


def regridded(ds: xr.Dataset, shape: tuple[int, int]) -> tuple[float, float, float]:
    """(dense s, sparse s, max relative difference) onto a global ``shape`` grid."""
    lat, lon = np.linspace(-90, 90, shape[0]), np.arange(shape[1]) * (360.0 / shape[1])
    dense_s, want = _timed(lambda: dense_regrid(ds, lat, lon))
    sparse_s, out = _timed(lambda: regrid.conservative_dataset(ds, lat, lon, lon, True))
    return dense_s, sparse_s, _rel({k: out[k].values for k in out.data_vars}, want)


def main(argv: list[str] | None = None) -> int:
    """Print one line per case; write the JSON and the page; 2 when xarray-regrid is missing."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fine", default="721x1440", help="fine grid NLATxNLON")
    p.add_argument("--coarse", default="181x360", help="coarse grid NLATxNLON")
    p.add_argument("--small", action="store_true", help=f"grids {' and '.join(SMALL)}")
    p.add_argument("--iters", type=int, default=3, help="timed calls per implementation")
    p.add_argument("--max-wait", type=float, default=None, help="s to wait for an idle CPU")
    p.add_argument("--json", default=None, help=f"write the numbers here ({JSON_PATH})")
    p.add_argument("--docs", default=None, help=f"write the page made from them ({DOCS_PATH})")
    args = p.parse_args(argv)
    try:
        version = metadata.version("xarray-regrid")
        import xarray_regrid  # noqa: F401
    except (ImportError, metadata.PackageNotFoundError):
        print("regrid_bench: the package xarray-regrid is not installed; run "
              "`bash scripts/setup.sh` (it installs the dev extras)", file=sys.stderr)  # fmt: skip
        return 2
    if args.small:
        args.fine, args.coarse = SMALL
    else:
        args.json, args.docs = args.json or JSON_PATH, args.docs or DOCS_PATH
    max_wait = args.max_wait if args.max_wait is not None else (0.0 if args.small else 30.0)
    fine = tuple(int(x) for x in args.fine.split("x"))
    coarse = tuple(int(x) for x in args.coarse.split("x"))
    big, small = field(*fine), field(*coarse)
    cases = [
        (f"coarsen {args.fine} -> {args.coarse}", big, coarse),
        (f"refine {args.coarse} -> {args.fine}", small, fine),
    ]
    rows = [(f"same grid {args.fine} (copy)", *same_grid(big))]
    rows += [(name, *regridded(ds, shape)) for name, ds, shape in cases]
    print(f"{'case (4 variables, 1 step)':40s} {'dense s':>9s} {'new s':>9s} {'speed-up':>9s} "
          f"{'max rel diff':>13s}")  # fmt: skip
    for name, dense_s, new_s, diff in rows:
        print(f"{name:40s} {dense_s:9.3f} {new_s:9.4f} {dense_s / new_s:8.1f}x {diff:13.2e}")
    compared = []
    for name, ds, shape in cases:
        row = {"case": name, **_regrid_compare.compare(ds, shape, args.iters, max_wait)}
        compared.append(row)
        worst = max(r["max_rel"] for r in row["regions"].values())
        print(f"{name:40s} builder {row['builder_s']:.4f} s, xarray-regrid "
              f"{row['xarray_regrid_s']:.4f} s, max diff / RMS {worst:.2e}")  # fmt: skip
    result = {
        "command": "python benchmarks/regrid_bench.py " + " ".join(argv or sys.argv[1:]),
        "machine": load_note(),
        "cpu": cpu_name(),
        "fine": args.fine,
        "coarse": args.coarse,
        "variables": len(big.data_vars),
        "iters": args.iters,
        "xarray_regrid_version": version,
        "dense": [{"case": n, "dense_s": d, "new_s": s, "max_rel": m} for n, d, s, m in rows],
        "xarray_regrid": compared,
    }
    result["verdict"] = _regrid_report.verdict(result)
    v = result["verdict"]
    print(f"faster: {v['faster']} ({v['speed']}); same numbers: {v['agree']}; keep: {v['keep']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.docs:
        Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
        Path(args.docs).write_text(_regrid_report.render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

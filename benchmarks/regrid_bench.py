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
must agree to ~1e-6). ``xarray-regrid`` is not in the pinned set
(``infra/docker/constraints.txt``), so it is not measured here. About 30-60 s on 2 cores::

    .venv/bin/python benchmarks/regrid_bench.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr

from pipelines.data.builders import era5_grid, regrid


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


def main(argv: list[str] | None = None) -> None:
    """Print one line per case."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fine", default="721x1440", help="fine grid NLATxNLON")
    p.add_argument("--coarse", default="181x360", help="coarse grid NLATxNLON")
    args = p.parse_args(argv)
    fine = tuple(int(x) for x in args.fine.split("x"))
    coarse = tuple(int(x) for x in args.coarse.split("x"))
    big, small = field(*fine), field(*coarse)
    rows = [
        (f"same grid {args.fine} (copy)", *same_grid(big)),
        (f"coarsen {args.fine} -> {args.coarse}", *regridded(big, coarse)),
        (f"refine {args.coarse} -> {args.fine}", *regridded(small, fine)),
    ]
    print(f"{'case (4 variables, 1 step)':40s} {'dense s':>9s} {'new s':>9s} {'speed-up':>9s} "
          f"{'max rel diff':>13s}")  # fmt: skip
    for name, dense_s, new_s, diff in rows:
        print(f"{name:40s} {dense_s:9.3f} {new_s:9.4f} {dense_s / new_s:8.1f}x {diff:13.2e}")


if __name__ == "__main__":
    main()

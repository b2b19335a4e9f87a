"""The ERA5 builder's conservative regrid against ``xarray-regrid`` on the same inputs.

``regrid.conservative_dataset`` (sparse overlap weights, exact spherical areas: overlaps in
``sin`` latitude, cell bounds clipped at the poles) is the reference. ``xarray-regrid``'s
``ds.regrid.conservative`` (0.4.2) builds dense per-axis overlap matrices in degrees, pads
the longitudes by wrapping when the source is global, and corrects latitude by the band
area of each *whole* source cell at the median spacing, ``sin(phi + d/2) - sin(phi - d/2)``;
missing values are left out by renormalising with the valid weight (``skipna``). Both
outputs are compared as float32 (what the builder stores), per region of the target grid:

* ``poles``: rows within two grid spacings (the coarser of source and target) of a pole;
* ``holes``: cells whose source footprint holds a missing value, and their neighbours,
  away from the poles;
* ``seam``: columns within two spacings of the 0/360 E wrap of the longitudes, away from
  the poles and the holes;
* ``interior``: every other cell.

Each region also records where (latitude, longitude) its largest difference lies.

Differences are absolute and relative to the reference field's RMS (random values average
to near zero, so a pointwise ratio would only measure how close to zero they came). Two
diagnostic fields without holes, varying only in longitude or only in latitude, tell the
two axes' weights apart, and the builder's sparse code run with xarray-regrid's latitude
weights (``mimic``) shows whether those weights alone explain the differences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage, sparse

from pipelines.data.builders import regrid

REGIONS = ("interior", "holes", "poles", "seam")


def global_grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes -90..90 (poles included) and longitudes 0..360 (exclusive) of a global grid."""
    return np.linspace(-90, 90, nlat), np.arange(nlon) * (360.0 / nlon)


def builder(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> xr.Dataset:
    """The builder's conservative regrid (periodic source, ascending target longitudes)."""
    return regrid.conservative_dataset(ds, lat, lon, lon, True)


def xarray_regrid(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> xr.Dataset:
    """``xarray-regrid``'s conservative regrid onto the same grid, as float32."""
    import xarray_regrid  # noqa: F401  (registers the ``.regrid`` accessor)

    target = xr.Dataset(coords={"latitude": lat, "longitude": lon})
    out = ds.regrid.conservative(target, latitude_coord="latitude", skipna=True)
    return out.astype(np.float32)  # each variable keeps its own dimension order


def mimic(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> xr.Dataset:
    """The builder's sparse regrid with xarray-regrid's latitude weights, as float32.

    Those weights are the overlaps in degrees of unclipped cell bounds, times the band area of
    each whole source cell at the median spacing (``lat_weight``, which is 0 for a row at a
    pole); longitude weights and NaN handling stay the builder's.
    """
    from xarray_regrid.methods.conservative import lat_weight

    src = ds["latitude"].values
    w = regrid._overlap(regrid.cell_bounds(lat), regrid.cell_bounds(src)).toarray()
    w_lat = sparse.csr_array(w * lat_weight(src, float(np.median(np.diff(src))))[None, :])
    w_lon = regrid.longitude_weights(ds["longitude"].values, lon, True)
    out = {
        name: (da.dims, regrid.conservative(da.values.astype(float), w_lat, w_lon))
        for name, da in ds.data_vars.items()
    }
    return xr.Dataset(out, coords={"latitude": lat, "longitude": lon}).astype(np.float32)


def diagnostic_field(nlat: int, nlon: int) -> xr.Dataset:
    """Smooth fields without holes: one varies only in longitude, one only in latitude."""
    lat, lon = global_grid(nlat, nlon)
    ones = np.ones((1, nlat, nlon))
    lon_only = ones * (np.sin(np.radians(3 * lon)) + np.cos(np.radians(lon)))[None, None, :]
    lat_only = ones * np.sin(np.radians(3 * lat))[None, :, None]
    dims = ("time", "latitude", "longitude")
    return xr.Dataset(
        {"lon_only": (dims, lon_only), "lat_only": (dims, lat_only)},
        coords={"time": [0], "latitude": lat, "longitude": lon},
    )


def regions(ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``(n_lat, n_lon)`` masks of the target grid's regions (see module)."""
    src_lat, src_lon = ds["latitude"].values, ds["longitude"].values
    step_lat = max(float(np.median(np.diff(src_lat))), float(np.median(np.diff(lat))))
    step_lon = max(float(np.median(np.diff(src_lon))), float(np.median(np.diff(lon))))
    poles = np.broadcast_to((np.abs(lat) >= 90 - 2 * step_lat)[:, None], (lat.size, lon.size))
    wrap = (lon <= 2 * step_lon) | (lon >= 360 - 2 * step_lon)
    seam = np.broadcast_to(wrap[None, :], (lat.size, lon.size))
    ok = np.isfinite(next(iter(ds.data_vars.values())).values[0]).astype(float)
    w_lat = regrid.latitude_weights(src_lat, lat)
    w_lon = regrid.longitude_weights(src_lon, lon, True)
    frac = regrid.conservative(ok, w_lat, w_lon)
    holes = ndimage.binary_dilation(~(frac >= 1 - 1e-9), np.ones((3, 3), bool))
    holes &= ~poles
    seam = seam & ~poles & ~holes
    interior = ~(poles | seam | holes)
    return {"interior": interior, "holes": holes, "poles": poles.copy(), "seam": seam}


def differences(
    got: xr.Dataset, want: xr.Dataset, masks: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per region: points, largest absolute and RMS-relative difference (and where), NaNs."""
    lat, lon = np.meshgrid(want["latitude"].values, want["longitude"].values, indexing="ij")
    out: dict[str, dict[str, Any]] = {}
    for name, mask in masks.items():
        worst_abs, worst_rel, mismatched, where = 0.0, 0.0, 0, None
        for var in want.data_vars if mask.any() else ():
            x = np.asarray(got[var].values, float)[..., mask]
            y = np.asarray(want[var].values, float)[..., mask]
            scale = float(np.sqrt(np.nanmean(np.asarray(want[var].values, float) ** 2)))
            mismatched += int(np.sum(np.isnan(x) != np.isnan(y)))
            both = np.isfinite(x) & np.isfinite(y)
            if both.any():
                diff = np.where(both, np.abs(x - y), -1.0).reshape(-1, int(mask.sum()))
                d = float(diff.max())
                if d / max(scale, 1e-30) > worst_rel or where is None:
                    k = int(np.argmax(diff) % diff.shape[1])
                    where = [float(lat[mask][k]), float(lon[mask][k])]
                worst_abs = max(worst_abs, d)
                worst_rel = max(worst_rel, d / max(scale, 1e-30))
        out[name] = {
            "points": int(mask.sum()),
            "max_abs": worst_abs,
            "max_rel": worst_rel,
            "nan_mismatch": mismatched,
            "where": where,
        }
    return out


def compare(ds: xr.Dataset, shape: tuple[int, int], iters: int, max_wait: float) -> dict[str, Any]:
    """Seconds of both regrids (interleaved medians) and their differences, onto ``shape``."""
    from benchmarks._timing import paired_time

    lat, lon = global_grid(*shape)
    want, got = builder(ds, lat, lon), xarray_regrid(ds, lat, lon)
    masks = regions(ds, lat, lon)
    diag = diagnostic_field(ds.sizes["latitude"], ds.sizes["longitude"])
    diag_masks = {"all": np.ones((lat.size, lon.size), bool), "poles": masks["poles"]}
    diag_masks["away from poles"] = ~masks["poles"]
    diag_want, diag_got = builder(diag, lat, lon), xarray_regrid(diag, lat, lon)
    diagnostics = {
        var: differences(diag_got[[var]], diag_want[[var]], diag_masks) for var in diag.data_vars
    }
    everywhere = {"all": np.ones((lat.size, lon.size), bool)}
    explained = differences(got, mimic(ds, lat, lon), everywhere)["all"]
    fns = {
        "builder": lambda: builder(ds, lat, lon),
        "xarray-regrid": lambda: xarray_regrid(ds, lat, lon),
    }
    t = paired_time(fns, warmup=1, iters=iters, max_wait=max_wait)
    return {
        "builder_s": t["builder"].median,
        "xarray_regrid_s": t["xarray-regrid"].median,
        "samples_s": {k: t[k].samples for k in fns},
        "contended": any(t[k].contended for k in fns),
        "regions": differences(got, want, masks),
        "diagnostics": diagnostics,
        "mimic": explained,
    }


__all__ = ["REGIONS", "compare", "differences", "global_grid", "regions", "xarray_regrid"]

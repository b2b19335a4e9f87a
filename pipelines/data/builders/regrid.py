"""Conservative (area-weighted) regridding of lat/lon fields, for coarsening.

Point sampling (bilinear) a 0.25 deg field onto a 4 deg grid keeps one value in 256 and
aliases everything finer than the target spacing. A conservative regrid gives every
target cell the area-weighted mean of the source cells it overlaps, so the area
integral of a field is kept and sub-grid structure averages out. On a sphere the area
of a lat/lon cell is ``R^2 (sin phi_1 - sin phi_0) (lambda_1 - lambda_0)``, a product, so
the regrid is separable: ``out = W_lat @ field @ W_lon^T`` with row-normalised overlap
matrices. Cell bounds are the midpoints between centres (the outer cells extend half a
spacing, clipped at the poles); longitudes wrap when the source is periodic. Missing
source values (NaN) are left out of each mean; a target cell without a valid source
value is NaN.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def cell_bounds(
    centres: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """``(n + 1,)`` bounds of cells centred on ascending ``centres``, clipped to ``[lo, hi]``."""
    c = np.asarray(centres, float)
    mid = (c[1:] + c[:-1]) / 2
    b = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.clip(b, lo if lo is not None else -np.inf, hi if hi is not None else np.inf)


def _overlap(t: np.ndarray, s: np.ndarray, shifts: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """``(n_t, n_s)`` lengths of the overlaps of target cells ``t`` and source cells ``s``."""
    out = np.zeros((t.size - 1, s.size - 1))
    for k in shifts:
        lo = np.maximum(t[:-1, None], s[None, :-1] + k)
        hi = np.minimum(t[1:, None], s[None, 1:] + k)
        out += np.clip(hi - lo, 0.0, None)
    return out


def latitude_weights(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Overlap areas (in ``sin`` latitude) of target rows with source rows."""
    s = np.sin(np.radians(cell_bounds(src, -90.0, 90.0)))
    t = np.sin(np.radians(cell_bounds(tgt, -90.0, 90.0)))
    return _overlap(t, s)


def longitude_weights(src: np.ndarray, tgt: np.ndarray, periodic: bool) -> np.ndarray:
    """Overlap lengths (degrees) of target columns with source columns (both ascending)."""
    s, t = cell_bounds(src), cell_bounds(tgt)
    return _overlap(t, s, (-360.0, 0.0, 360.0) if periodic else (0.0,))


def conservative(values: np.ndarray, w_lat: np.ndarray, w_lon: np.ndarray) -> np.ndarray:
    """Regrid ``(..., lat, lon)`` ``values`` with overlap weights; NaN-aware (see module)."""
    ok = np.isfinite(values)
    filled = np.where(ok, values, 0.0)
    num = np.einsum("ij,...jk,lk->...il", w_lat, filled, w_lon, optimize=True)
    den = np.einsum("ij,...jk,lk->...il", w_lat, ok.astype(float), w_lon, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * den.max(initial=1.0), num / den, np.nan)


def conservative_dataset(
    ds: xr.Dataset, lat: np.ndarray, lon: np.ndarray, lon_frame: np.ndarray, periodic: bool
) -> xr.Dataset:
    """Every variable of ``ds`` (ascending ``latitude``/``longitude``) on ``(lat, lon)``.

    Args:
        ds: one block of the source, longitudes in the frame of ``lon_frame``.
        lat: target latitudes.
        lon: target longitudes as they are stored.
        lon_frame: the same longitudes wrapped into the source's frame.
        periodic: the source wraps around in longitude.
    """
    order = np.argsort(lon_frame)
    w_lat = latitude_weights(ds["latitude"].values, lat)
    w_lon = longitude_weights(ds["longitude"].values, lon_frame[order], periodic)
    w_lon = w_lon[np.argsort(order)]  # back to the target's own column order
    out = {}
    for name, da in ds.data_vars.items():
        lead = [d for d in da.dims if d not in ("latitude", "longitude")]
        arr = da.transpose(*lead, "latitude", "longitude").values.astype(float)
        out[name] = ([*lead, "latitude", "longitude"], conservative(arr, w_lat, w_lon), da.attrs)
    coords = {k: v for k, v in ds.coords.items() if k not in ("latitude", "longitude")}
    res = xr.Dataset(out, coords={**coords, "latitude": lat, "longitude": lon})
    return res.astype(np.float32)


def coarsens(src: np.ndarray, tgt: np.ndarray) -> bool:
    """Whether ``tgt``'s median spacing is at least ``src``'s (both ascending, >= 2 points)."""
    return float(np.median(np.diff(tgt))) >= float(np.median(np.diff(src))) * (1 - 1e-9)


__all__ = [
    "cell_bounds",
    "coarsens",
    "conservative",
    "conservative_dataset",
    "latitude_weights",
    "longitude_weights",
]

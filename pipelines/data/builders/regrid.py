"""Conservative (area-weighted) regridding of lat/lon fields, for coarsening.

Point sampling (bilinear) a 0.25 deg field onto a 4 deg grid keeps one value in 256 and
aliases everything finer than the target spacing. A conservative regrid gives every
target cell the area-weighted mean of the source cells it overlaps, so the area
integral of a field is kept and sub-grid structure averages out. On a sphere the area
of a lat/lon cell is ``R^2 (sin phi_1 - sin phi_0) (lambda_1 - lambda_0)``, a product, so
the regrid is separable: ``out = W_lat @ field @ W_lon^T`` with row-normalised overlap
matrices. The overlap matrices are banded (a cell overlaps a few neighbours), so they are
built and applied as ``scipy.sparse`` matrices, one axis at a time: the cost grows with the
number of points, not with its square. Cell bounds are the midpoints between centres (the
outer cells extend half a spacing, clipped at the poles); longitudes wrap when the source is
periodic. Missing source values (NaN) are left out of each mean; a target cell without a
valid source value is NaN.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import sparse


def cell_bounds(
    centres: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """``(n + 1,)`` bounds of cells centred on ascending ``centres``, clipped to ``[lo, hi]``."""
    c = np.asarray(centres, float)
    mid = (c[1:] + c[:-1]) / 2
    b = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.clip(b, lo if lo is not None else -np.inf, hi if hi is not None else np.inf)


def _overlap(t: np.ndarray, s: np.ndarray, shifts: tuple[float, ...] = (0.0,)) -> sparse.csr_array:
    """``(n_t, n_s)`` sparse lengths of the overlaps of target cells ``t`` and source cells ``s``.

    Both bound arrays ascend (non-decreasing), so the source cells that target cell ``i``
    may overlap form the index range found by two ``searchsorted``; only those pairs are
    evaluated and the non-zero lengths kept.
    """
    n_t, n_s = t.size - 1, s.size - 1
    rows, cols, vals = [], [], []
    for k in shifts:
        sk = s + k
        first = np.searchsorted(sk[1:], t[:-1], side="right")  # first j with s_{j+1} > t_i
        stop = np.searchsorted(sk[:-1], t[1:], side="left")  # j < stop: s_j < t_{i+1}
        count = np.maximum(stop - first, 0)
        i = np.repeat(np.arange(n_t), count)
        offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        j = np.repeat(first, count) + offset
        length = np.minimum(t[1:][i], sk[1:][j]) - np.maximum(t[:-1][i], sk[:-1][j])
        keep = length > 0
        rows.append(i[keep])
        cols.append(j[keep])
        vals.append(length[keep])
    coo = sparse.coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_t, n_s)
    )
    return coo.tocsr()  # duplicates (a cell seen under two shifts) are summed


def latitude_weights(src: np.ndarray, tgt: np.ndarray) -> sparse.csr_array:
    """Overlap areas (in ``sin`` latitude) of target rows with source rows (sparse)."""
    s = np.sin(np.radians(cell_bounds(src, -90.0, 90.0)))
    t = np.sin(np.radians(cell_bounds(tgt, -90.0, 90.0)))
    return _overlap(t, s)


def longitude_weights(src: np.ndarray, tgt: np.ndarray, periodic: bool) -> sparse.csr_array:
    """Overlap lengths (degrees) of target columns with source columns (both ascending; sparse)."""
    s, t = cell_bounds(src), cell_bounds(tgt)
    return _overlap(t, s, (-360.0, 0.0, 360.0) if periodic else (0.0,))


def _apply(values: np.ndarray, w_lat: sparse.csr_array, w_lon: sparse.csr_array) -> np.ndarray:
    """``w_lat @ values @ w_lon^T`` over the last two axes of ``values``, one axis at a time."""
    lead, (n_lat, n_lon) = values.shape[:-2], values.shape[-2:]
    flat = values.reshape(-1, n_lon)  # (lead * lat, lon)
    by_lon = (w_lon @ flat.T).T  # (lead * lat, tlon)
    by_lon = by_lon.reshape(-1, n_lat, w_lon.shape[0]).transpose(1, 0, 2)  # (lat, lead, tlon)
    out = w_lat @ by_lon.reshape(n_lat, -1)  # (tlat, lead * tlon)
    out = out.reshape(w_lat.shape[0], -1, w_lon.shape[0]).transpose(1, 0, 2)
    return np.ascontiguousarray(out.reshape(*lead, w_lat.shape[0], w_lon.shape[0]))


def conservative(
    values: np.ndarray, w_lat: sparse.csr_array, w_lon: sparse.csr_array
) -> np.ndarray:
    """Regrid ``(..., lat, lon)`` ``values`` with overlap weights; NaN-aware (see module)."""
    ok = np.isfinite(values)
    filled = np.where(ok, values, 0.0)
    num = _apply(filled, w_lat, w_lon)
    den = _apply(ok.astype(float), w_lat, w_lon)
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

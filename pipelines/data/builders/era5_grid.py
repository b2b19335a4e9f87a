"""Regridding ERA5-layout inputs onto the builder's target grid, one time block at a time.

:func:`plan` fixes the target (an even lat/lon grid, global or the input's extent, and the
method: conservative when coarsening both axes, else bilinear); :func:`regrid_blocks` loads
the input in time blocks of at most ``BLOCK_BYTES`` at native resolution and yields each
block regridded, so a build holds one block at a time (:mod:`pipelines.data.builders.era5`).
A target grid that is the input's own (the same latitudes and longitudes within a
thousandth of a spacing, in any order or longitude convention) is not regridded: the
values are copied, reordered onto the target's ascending axes (:func:`same_grid_index`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pipelines.data.builders.era5_changes import express
from pipelines.data.builders.regrid import coarsens, conservative_dataset
from pipelines.data.stores.field_stream import time_blocks

BLOCK_BYTES = 48 * 2**20  # native-resolution values (as float64) loaded at once (per input)


@dataclass
class Target:
    """Target grid (ascending latitudes and longitudes) and whether it wraps around."""

    lat: np.ndarray
    lon: np.ndarray
    periodic: bool
    method: str = "bilinear"
    copy: bool = False  # the target is the input's own grid: values copied, not regridded


def _wrap(lon: np.ndarray, offset: float) -> np.ndarray:
    return (np.asarray(lon, float) - offset) % 360.0 + offset


def _layout(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
    """Source grid facts.

    Returns:
        Sorted unique latitudes; longitudes in [0, 360); the offset (0 or -180) in which
        the longitudes are contiguous (a box across 0 E needs -180); periodic in longitude;
        near-global in latitude (the outer rows at most one spacing from the poles).
    """
    lat, lon = np.unique(np.asarray(lat, float)), np.unique(_wrap(lon, 0.0))
    if lat.size < 2 or lon.size < 2:
        raise ValueError(f"need at least 2 latitudes and longitudes, got {lat.size}x{lon.size}")
    dlat, dlon, gap = np.median(np.diff(lat)), np.median(np.diff(lon)), np.diff(lon).max()
    periodic = max(gap, 360.0 - (lon[-1] - lon[0])) <= 1.5 * dlon  # no gap around the circle
    near_global = lat[0] - 1.01 * dlat <= -90 and lat[-1] + 1.01 * dlat >= 90
    return lat, lon, 0.0 if gap <= 1.5 * dlon else -180.0, bool(periodic), bool(near_global)


def same_grid_index(src: np.ndarray, tgt: np.ndarray, circle: bool) -> np.ndarray | None:
    """Index of ``tgt``'s every point in ascending ``src`` when both are the same points.

    Points match within a thousandth of ``src``'s smallest spacing (float round-off, not a
    different grid); ``circle``: longitudes, compared modulo 360. None when the sizes differ
    or a point has no match.
    """
    src, tgt = np.asarray(src, float), np.asarray(tgt, float)
    if src.size != tgt.size or src.size < 2:
        return None
    tol = 1e-3 * float(np.min(np.diff(src)))
    if circle:  # into src's frame; round-off across the seam is matched modulo 360 below
        tgt = _wrap(tgt, float(src[0]))
    j = np.clip(np.searchsorted(src, tgt), 1, src.size - 1)
    cand = np.stack([j - 1, j, np.zeros_like(j), np.full_like(j, src.size - 1)])
    d = src[cand] - tgt
    if circle:
        d = (d + 180.0) % 360.0 - 180.0
    best = np.abs(d).argmin(0)
    cols = np.arange(tgt.size)
    idx = cand[best, cols]
    if not np.abs(d[best, cols]).max() <= tol or np.unique(idx).size != idx.size:
        return None
    return idx


def plan(
    ds: xr.Dataset,
    shape: tuple[int, ...] | None,
    domain: str,
    regrid: str = "auto",
    longitudes: str = "input",
) -> Target:
    """The target grid: the input's own, or global or the extent of ``ds`` (``--domain``).

    Args:
        ds: the first input (standardised).
        shape: ``(nlat, nlon)``; ``None``: the input's own grid (its very coordinates, so
            the values are copied, not regridded), unless ``domain`` is ``global``.
        domain: ``auto``, ``global`` or ``input``.
        regrid: ``auto`` resolves to conservative when the target coarsens both axes.
        longitudes: the convention of the stored longitudes (``input``, ``0-360``,
            ``180W-180E``; :func:`~pipelines.data.builders.era5_changes.express`).
    """
    src_lon = np.asarray(ds["longitude"].values, float)
    lat, lon, offset, periodic, near_global = _layout(ds["latitude"].values, src_lon)
    own = shape is None
    shape = (lat.size, lon.size) if own else shape
    if own and domain != "global":
        tlat, tlon = lat, np.sort(_wrap(lon, offset))
    else:
        if domain == "global" or (domain == "auto" and periodic):
            tlon = np.arange(shape[1]) * (360.0 / shape[1])
        else:
            src = np.sort(_wrap(lon, offset))
            tlon = np.linspace(src[0], src[-1], shape[1])
        glob_lat = domain == "global" or (domain == "auto" and near_global)
        tlat = np.linspace(*((-90.0, 90.0) if glob_lat else (lat[0], lat[-1])), shape[0])
    wraps = periodic and domain != "input" or domain == "global"
    tlon = express(tlon, wraps, longitudes, src_lon)
    src_sorted = np.sort(_wrap(lon, offset))
    if regrid == "auto":
        coarser = coarsens(lat, tlat) and coarsens(src_sorted, np.sort(_wrap(tlon, offset)))
        regrid = "conservative" if coarser else "bilinear"
    copy = same_grid_index(lat, tlat, False) is not None
    copy = copy and same_grid_index(src_sorted, _wrap(tlon, offset), True) is not None
    return Target(tlat, tlon, periodic and domain != "input", regrid, copy)


def _regrid_block(blk: xr.Dataset, t: Target) -> xr.Dataset:
    """Regrid one time block in (latitude, longitude) with ``t.method``.

    Bilinear: NaN outside the source, except near the poles. Conservative:
    :mod:`pipelines.data.builders.regrid`. The input's own grid: the values, copied.
    """
    lat, _, offset, periodic, near_global = _layout(blk["latitude"], blk["longitude"])
    blk = blk.assign_coords(longitude=_wrap(blk["longitude"].values, offset))
    blk = blk.drop_duplicates("longitude").sortby(["latitude", "longitude"])
    ilat = same_grid_index(blk["latitude"].values, t.lat, False)
    ilon = same_grid_index(blk["longitude"].values, _wrap(t.lon, offset), True)
    if ilat is not None and ilon is not None:
        out = blk.isel(latitude=ilat, longitude=ilon)
        return out.assign_coords(latitude=t.lat, longitude=t.lon).astype(np.float32)
    if t.method == "conservative":
        return conservative_dataset(blk, t.lat, t.lon, _wrap(t.lon, offset), periodic)
    if periodic:  # one column each side so targets past the last source column interpolate
        lon = blk["longitude"].values
        left = blk.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0])
        right = blk.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])
        blk = xr.concat([left, blk, right], "longitude")
    # cell-centred global grids: target rows between the outer row and a pole take its values
    qlat = np.clip(t.lat, lat[0], lat[-1]) if near_global else t.lat
    out = blk.interp(latitude=qlat, longitude=_wrap(t.lon, offset), method="linear")
    return out.assign_coords(latitude=t.lat, longitude=t.lon).astype(np.float32)


def regrid_blocks(ds: xr.Dataset, t: Target, align: int = 1) -> Iterator[xr.Dataset]:
    """Load ``ds`` in time blocks of at most ``BLOCK_BYTES`` and yield each regridded on ``t``.

    Blocks hold a multiple of ``align`` time steps where the budget allows (whole chunks of
    the store they are written to).
    """
    per_step = sum(8 * da.size // max(da.sizes["time"], 1) for da in ds.data_vars.values())
    for t0, t1 in time_blocks(ds.sizes["time"], per_step, align, BLOCK_BYTES):
        blk = ds.isel(time=slice(t0, t1)).load()
        if "expver" in blk.dims:  # ERA5 + ERA5T: first non-NaN along expver
            merged = blk.isel(expver=0)
            for k in range(1, blk.sizes["expver"]):
                merged = merged.fillna(blk.isel(expver=k))
            blk = merged.drop_vars("expver", errors="ignore")
        yield _regrid_block(blk, t)

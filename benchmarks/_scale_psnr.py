"""PSNR of decoded steps against the benchmark's source netCDF, overall, at seams, inside.

Per variable: ``10 log10(range^2 / MSE)``, the range being the variable's max - min over
the compared steps of the source; on lat/lon grids the MSE is area-weighted (weights
``cos(latitude)``), on volumes plain. The reported PSNR is the mean over variables of
those dB values. Seam points are those within 2 grid cells of a boundary between two
patches of ``data.patch`` (tiles counted from the store's first index along each axis, as
:mod:`pipelines.data.stores.patches` cuts them; longitude wraps around, so 0 and 360 - d
are a seam too); the others are interior. Steps are read one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

SEAM_CELLS = 2
MAX_DB = 300.0  # an exact reconstruction (JSON has no infinity)


def seam_mask_1d(n: int, patch: int, wrap: bool) -> np.ndarray:
    """Points within ``SEAM_CELLS`` of a boundary between tiles of ``patch`` along ``n``."""
    near = np.zeros(n, bool)
    for b in range(patch, n, patch):
        near[max(b - SEAM_CELLS, 0) : b + SEAM_CELLS] = True
    if wrap and n > patch:
        near[:SEAM_CELLS] = near[-SEAM_CELLS:] = True
    return near


def seam_mask(shape: Sequence[int], patch: Sequence[int], wrap_last: bool) -> np.ndarray:
    """Seam points of a grid (any axis near a tile boundary)."""
    mask = np.zeros(tuple(shape), bool)
    for ax, (n, p) in enumerate(zip(shape, patch, strict=True)):
        view = [1] * len(shape)
        view[ax] = n
        wrap = wrap_last and ax == len(shape) - 1
        mask |= seam_mask_1d(n, p, wrap).reshape(view)
    return mask


class _Acc:
    """Weighted squared errors of one variable, split by region."""

    def __init__(self) -> None:
        self.err = {"all": 0.0, "seam": 0.0, "interior": 0.0}
        self.w = dict.fromkeys(self.err, 0.0)
        self.lo, self.hi = math.inf, -math.inf

    def add(self, ref: np.ndarray, dec: np.ndarray, w: np.ndarray, seam: np.ndarray) -> None:
        ok = np.isfinite(ref) & np.isfinite(dec)
        if not ok.any():
            return
        self.lo, self.hi = min(self.lo, float(ref[ok].min())), max(self.hi, float(ref[ok].max()))
        e2 = np.where(ok, (dec.astype(np.float64) - ref) ** 2, 0.0) * w
        ww = np.where(ok, w, 0.0)
        for region, m in (("all", None), ("seam", seam), ("interior", ~seam)):
            self.err[region] += float(e2.sum() if m is None else e2[m].sum())
            self.w[region] += float(ww.sum() if m is None else ww[m].sum())

    def psnr(self, region: str) -> float | None:
        if self.w[region] <= 0 or not self.hi > self.lo:
            return None
        peak = (self.hi - self.lo) ** 2
        mse = max(self.err[region] / self.w[region], peak * 10.0 ** (-MAX_DB / 10.0))
        return 10.0 * math.log10(peak / mse)


def compare(
    decoded: Path, source: Path, family: str, first: int, patch: Sequence[int]
) -> dict[str, float | None | dict[str, float | None]]:
    """PSNR keys of a row: decoded steps ``first, first + 1, ...`` of the source.

    Args:
        decoded: the ``mia-inr decode`` netCDF (the store's grid and dims).
        source: the benchmark's input netCDF (ERA5 layout or ``time, z, y, x``).
        family: ``era5`` (area-weighted, longitude wraps) or ``volume``.
        first: source time index of the first decoded step.
        patch: ``data.patch`` of the run (seams).
    """
    with xr.open_dataset(decoded) as dec, xr.open_dataset(source, cache=False) as src:
        names = [v for v in dec.data_vars if v in src.data_vars]
        if not names:
            raise ValueError(f"{decoded}: no variable in common with {source}")
        spatial = dec[names[0]].dims[1:]
        shape = [dec.sizes[d] for d in spatial]
        if family == "era5":
            w = np.cos(np.deg2rad(dec["latitude"].values)).clip(0.0)[:, None] * np.ones(shape)
            src = src.sel(latitude=dec["latitude"], longitude=dec["longitude"], method="nearest")
        else:
            w = np.ones(shape)
        seam = seam_mask(shape, patch, family == "era5")
        accs = {v: _Acc() for v in names}
        for i in range(dec.sizes["time"]):
            for v in names:
                ref = src[v].isel(time=first + i).transpose(*spatial).values.astype(np.float64)
                accs[v].add(ref, dec[v].isel(time=i).values, w, seam)

    def mean(region: str) -> float | None:
        vals = [a.psnr(region) for a in accs.values()]
        vals = [x for x in vals if x is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "psnr_db": mean("all"),
        "seam_psnr_db": mean("seam"),
        "interior_psnr_db": mean("interior"),
        "psnr_per_variable_db": {v: a.psnr("all") for v, a in accs.items()},
    }

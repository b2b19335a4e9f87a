"""Write an xarray field store (climate fields, time-varying volumes) as Zarr v3.

Each data variable is normalised per channel (level) with statistics from the training
time steps, stored in the variable's ``mia_norm`` attribute so readers and decoders can
undo it; arrays are chunked along time only (whole spatial fields per chunk). An
optional ``split(time)`` int8 variable marks train (0) / val (1) / test (2) time steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.reader import LEVEL_DIMS, MEMBER_DIMS, TIME_DIMS
from pipelines.data.stores.writer import NORMALISATIONS, apply_norm, quiet_consolidation


def split_by_time(n_time: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> np.ndarray:
    """Contiguous split along time: first train, then val, then test (no leakage)."""
    split = np.zeros(n_time, np.int8)
    n_test = int(round(n_time * test_fraction))
    n_val = int(round(n_time * val_fraction))
    if n_test:
        split[n_time - n_test :] = 2
    if n_val:
        split[n_time - n_test - n_val : n_time - n_test] = 1
    return split


def _norm_stats(da: xr.DataArray, tdim: str, train: np.ndarray, how: str) -> dict[str, Any]:
    ldim = next((d for d in LEVEL_DIMS if d in da.dims), None)
    sub = da.isel({tdim: np.flatnonzero(train)}) if train.any() else da
    reduce = [d for d in sub.dims if d != ldim]
    with np.errstate(all="ignore"):
        if how == "zscore":
            return {
                "kind": how,
                "mean": np.atleast_1d(sub.mean(reduce, skipna=True).values).tolist(),
                "std": np.atleast_1d(sub.std(reduce, skipna=True).values).tolist(),
            }
        return {
            "kind": how,
            "min": np.atleast_1d(sub.min(reduce, skipna=True).values).tolist(),
            "max": np.atleast_1d(sub.max(reduce, skipna=True).values).tolist(),
        }


def normalised_attrs(attrs: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Attributes of a normalised variable: ``units: "1"``, the physical units kept.

    The values are dimensionless after normalisation; ``physical_units`` and ``mia_norm``
    say how to get back (:func:`pipelines.data.stores.writer.invert_norm`).
    """
    out = {k: v for k, v in attrs.items() if k != "units"}
    if stats.get("kind", "none") != "none":
        out["units"] = "1"
        if "units" in attrs:
            out["physical_units"] = attrs["units"]
    elif "units" in attrs:
        out["units"] = attrs["units"]
    return {**out, "mia_norm": stats}


def physical_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`normalised_attrs` for values brought back to physical units."""
    out = {k: v for k, v in attrs.items() if k not in ("mia_norm", "physical_units")}
    if "physical_units" in attrs:
        out["units"] = attrs["physical_units"]
    elif out.get("units") == "1" and "mia_norm" in attrs:
        out.pop("units")
    return out


def write_field_store(
    ds: xr.Dataset,
    location: StoreLocation,
    chunk_time: int = 16,
    split: np.ndarray | None = None,
    normalisation: str = "minmax01",
    attrs: dict[str, Any] | None = None,
) -> None:
    """Normalise and write ``ds`` (overwriting the destination).

    Args:
        ds: dataset whose data variables share a time dimension (see ``reader.py``).
        location: destination.
        chunk_time: time steps per chunk.
        split: ``(time,)`` split codes; train-only when omitted.
        normalisation: one of ``NORMALISATIONS`` (per variable and level).
        attrs: extra global attributes (source, builder arguments).
    """
    if normalisation not in NORMALISATIONS:
        raise StoreError(f"{location}: normalisation must be one of {NORMALISATIONS}")
    if not ds.data_vars:
        raise StoreError(f"{location}: refusing to write a field store without variables")
    tdim = next((d for d in TIME_DIMS if d in ds.dims), None)
    if tdim is None:
        raise StoreError(f"{location}: dataset has no time dimension (dims {dict(ds.sizes)})")
    n_time = ds.sizes[tdim]
    if n_time == 0:
        raise StoreError(f"{location}: refusing to write an empty store ({tdim!r} of length 0)")
    split = np.zeros(n_time, np.int8) if split is None else np.asarray(split, np.int8)
    # Zarr lists arrays alphabetically; the variable order is kept explicitly.
    out = xr.Dataset(
        coords=ds.coords,
        attrs={**ds.attrs, **(attrs or {}), "mia_variables": [str(v) for v in ds.data_vars]},
    )
    encoding = {}
    mdim = next((d for d in MEMBER_DIMS if d in ds.dims), None)
    signal_dims = [tdim, *([mdim] if mdim else [])]
    valid = xr.DataArray(np.ones([ds.sizes[d] for d in signal_dims], bool), dims=signal_dims)
    for name, da in ds.data_vars.items():
        if tdim not in da.dims:
            raise StoreError(
                f"{location}: variable {name!r} has no {tdim!r} dimension (dims {da.dims})"
            )
        stats = _norm_stats(da, tdim, split == 0, normalisation)
        ldim = next((d for d in LEVEL_DIMS if d in da.dims), None)
        arr = da.transpose(*[d for d in da.dims if d != ldim], *([ldim] if ldim else [])).values
        normed = apply_norm(
            arr.astype(np.float64) if ldim else arr[..., None].astype(np.float64), stats
        )
        normed = normed if ldim else normed[..., 0]
        dims = [d for d in da.dims if d != ldim] + ([ldim] if ldim else [])
        var = xr.DataArray(
            normed.astype(np.float32), dims=dims, attrs=normalised_attrs(da.attrs, stats)
        )
        out[name] = var.transpose(*da.dims)
        valid = valid & out[name].notnull().any([d for d in da.dims if d not in signal_dims])
        encoding[name] = {
            "chunks": tuple(min(chunk_time, n_time) if d == tdim else out.sizes[d] for d in da.dims)
        }
    out["split"] = xr.DataArray(split, dims=[tdim])
    encoding["split"] = {"chunks": (n_time,)}  # tiny, read whole by every open: one request
    out["valid"] = valid.transpose(*signal_dims).astype(np.uint8)
    out["valid"].attrs = {
        "long_name": "1 where every variable has a finite value (0: missing, skipped)"
    }
    encoding["valid"] = {"chunks": tuple(out.sizes[d] for d in signal_dims)}
    out.attrs["missing_signals"] = int(valid.size - int(valid.sum()))
    with quiet_consolidation():
        out.to_zarr(
            location.zarr_store("w"), mode="w", zarr_format=3, encoding=encoding, consolidated=True
        )

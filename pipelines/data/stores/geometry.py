"""Area weights and physical scale of store variables: how climate tools weigh errors.

On a regular latitude-longitude grid a cell's area is proportional to ``cos(latitude)``,
so every climate tool (CDO ``fldmean``, xarray ``weighted``, WeatherBench) weighs a
field's errors by it; a plain mean over grid points counts the polar rows, which hold
little area, as much as the equator. :func:`store_geometry` gives a variable's weights
(``cos(latitude)`` on lat-lon grids with a latitude coordinate, uniform on volumes,
``y, x`` grids and signal stores) together with the per-channel factor that turns a
normalised error into physical units and those units; :func:`point_weights` gives the
weights of each signal's points in the order the reader returns them (per patch for a
:class:`~pipelines.data.stores.patches.PatchStore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.field_attrs import physical_units
from pipelines.data.stores.patches import PatchStore
from pipelines.data.stores.writer import norm_affine

LAT_DIMS = ("latitude", "lat")  # first spatial dim of a lat-lon variable (store_base.SPATIAL_SETS)
COS_LAT = "cos(latitude)"
UNIFORM = "uniform"


@dataclass
class Geometry:
    """How one variable's errors are weighted and brought back to physical units.

    Attributes:
        weights: grid-shaped area weights (``cos(latitude)`` or ones).
        scale: ``(C,)`` physical units per normalised unit, per channel.
        units: physical units (``""`` when the store does not say).
        weighting: ``"cos(latitude)"`` or ``"uniform"`` and why.
    """

    weights: np.ndarray
    scale: np.ndarray
    units: str = ""
    weighting: str = UNIFORM


def latitude_weights(lat_deg: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """``cos(latitude)`` weights of a ``(lat, lon)`` grid (``lat_deg`` along the first axis).

    The equator's row weighs 1, 60 degrees 0.5, a pole 0.

    Raises:
        StoreError: latitudes outside [-90, 90] (not degrees) or the wrong length.
    """
    lat = np.asarray(lat_deg, np.float64)
    if lat.shape != (grid_shape[0],) or np.nanmax(np.abs(lat)) > 90.0 + 1e-6:
        raise StoreError(
            f"latitude coordinate of {lat.size} values in [{np.nanmin(lat):g}, "
            f"{np.nanmax(lat):g}] does not fit a grid of {tuple(grid_shape)} in degrees north; "
            "give the store a latitude coordinate in degrees"
        )
    w = np.clip(np.cos(np.deg2rad(lat)), 0.0, None)
    return np.broadcast_to(w.reshape(-1, *[1] * (len(grid_shape) - 1)), tuple(grid_shape)).copy()


def store_geometry(store: Any, var: str, strict: bool = True) -> Geometry:
    """Weights, per-channel physical scale and units of a store variable.

    Latitude is detected from the variable's spatial dims as the reader resolved them
    (``store.layout[var][3]``): a first spatial dim named ``latitude`` or ``lat`` with a
    coordinate array holds the latitudes in degrees (reversed when the reader flips it to
    ascending). Volumes (``z, y, x``), plain ``y, x`` grids, lat-lon grids without a
    latitude coordinate and signal stores get uniform weights (``weighting`` says which).
    The scale is the normalisation's (``writer.norm_affine``: ``max - min`` for
    ``minmax01``, ``std`` for ``zscore``, 1 for ``none``); the units those of
    :func:`~pipelines.data.stores.field_attrs.physical_units`. A patch store gives the
    geometry of its whole grid (:func:`point_weights` cuts it into patches).

    Args:
        store: an opened store.
        var: the variable (modality).
        strict: raise on a latitude coordinate that is not in degrees; ``False`` gives
            uniform weights instead, the reason in ``weighting`` (validation during
            training must not stop there).

    Raises:
        StoreError: ``strict`` and a latitude coordinate that is not in degrees (names
            store and variable).
    """
    base = store.base if isinstance(store, PatchStore) else store
    info = base.info[var]
    shape = tuple(info.grid_shape)
    _, scale = norm_affine(info.norm)
    scale = np.broadcast_to(np.asarray(scale, np.float64), (info.channels,)).copy()
    ds = getattr(base, "ds", None)
    units = physical_units(dict(ds[var].attrs)) if ds is not None and var in ds else ""
    layout = getattr(base, "layout", {})
    sdims = layout[var][3] if var in layout else ()
    weights, how = np.ones(shape), UNIFORM
    if sdims and sdims[0] in LAT_DIMS:
        lat_dim = sdims[0]
        if lat_dim in ds.coords:
            lat = np.asarray(ds[lat_dim].values, np.float64)
            lat = lat[::-1] if base.flipped.get(var) else lat
            try:
                weights, how = latitude_weights(lat, shape), COS_LAT
            except StoreError as err:
                if strict:
                    raise StoreError(f"{base.location}: variable {var!r}: {err}") from err
                how = f"{UNIFORM} ({err})"
        else:
            how = f"{UNIFORM} (no {lat_dim!r} coordinate)"
    return Geometry(weights, scale, units, how)


def point_weights(store: Any, var: str, geometry: Geometry | None = None) -> np.ndarray:
    """``(K, P)`` float64 area weights of each signal's points: signal ``i`` uses row ``i % K``.

    ``K`` is 1 for whole signals (row-major grid points, as the reader returns them) and
    the patches per step of a :class:`~pipelines.data.stores.patches.PatchStore` (the
    points of each patch; points past the grid's edge weigh 0).

    Args:
        store: an opened store.
        var: the variable (modality).
        geometry: :func:`store_geometry` of ``var`` when the caller has it.
    """
    geometry = geometry or store_geometry(store, var)
    w = np.asarray(geometry.weights, np.float64).reshape(1, -1)
    if isinstance(store, PatchStore):
        tiles = store.tiles(w[..., None].astype(np.float32))[..., 0]
        return np.nan_to_num(tiles.astype(np.float64), nan=0.0)
    return w


__all__ = [
    "COS_LAT",
    "LAT_DIMS",
    "UNIFORM",
    "Geometry",
    "latitude_weights",
    "point_weights",
    "store_geometry",
]

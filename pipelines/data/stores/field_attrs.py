"""CF attributes of normalised field variables, and how to get back to physical units.

Field stores hold normalised values (what training reads, unchanged). How their attributes
say so is chosen so that every CF tool reads the physical field:

- One channel (a variable without levels, the common case): the values are CF *packed*
  data. ``scale_factor`` and ``add_offset`` are the normalisation's inverse, so
  ``xr.open_zarr`` (and cf-xarray, MetPy, Panoply) returns kelvin, with the input's
  ``units`` and ``standard_name`` valid for what it returns.
- Several channels (levels normalised one by one): CF allows one scalar ``scale_factor``
  per variable, so the values stay normalised: ``units: "1"`` and no ``standard_name``
  (a physical name would be CF-invalid on dimensionless values); the physical ones are
  kept as ``mia_physical_units`` / ``mia_physical_standard_name``.

The statistics are flat attributes (``mia_norm_kind`` and one numeric list per statistic,
``mia_norm_min`` ...), valid in netCDF too, so ``xr.open_zarr(store).to_netcdf(...)``
works. Stores written before this layout (a ``mia_norm`` dict, ``physical_units``) are read
the same way (:func:`norm_from_attrs`, :func:`physical_attrs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

PACKING = ("scale_factor", "add_offset")
NORM_PREFIX = "mia_norm_"
PHYSICAL = {"units": "mia_physical_units", "standard_name": "mia_physical_standard_name"}
LEGACY = ("mia_norm", "physical_units")


def _affine(stats: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` per channel, as ``writer.norm_affine`` (zero spread counts 1)."""
    kind = stats["kind"]
    if kind == "zscore":
        std = np.asarray(stats["std"], np.float64)
        return np.asarray(stats["mean"], np.float64), np.where(std > 0, std, 1.0)
    lo, hi = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
    spread = np.where(hi > lo, hi - lo, 1.0)
    return (lo, spread) if kind == "minmax01" else (lo + spread / 2.0, spread / 2.0)


def normalised_attrs(attrs: Mapping[str, Any], stats: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes of a variable stored normalised with ``stats`` (see the module docstring).

    Args:
        attrs: the variable's physical attributes (``units``, ``standard_name`` ...).
        stats: per-channel statistics (``{"kind": ..., "min": [...], ...}``).
    """
    out = {k: v for k, v in physical_attrs(attrs).items() if k not in PACKING}
    flat = {NORM_PREFIX + k: v for k, v in stats.items()}
    if stats.get("kind", "none") == "none":
        return {**out, **flat}
    offset, scale = _affine(stats)
    if offset.size == 1:
        packing = {"scale_factor": float(scale[0]), "add_offset": float(offset[0])}
        return {**out, **packing, **flat}
    for key, kept in PHYSICAL.items():
        if key in out:
            out[kept] = out.pop(key)
    if "long_name" in out:
        out["long_name"] = f"{out['long_name']}, normalised per level"
    return {**out, "units": "1", **flat}


def norm_from_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The normalisation statistics of a stored variable (``{"kind": "none"}`` if none)."""
    if "mia_norm" in attrs:  # stores written before the flat layout
        return dict(attrs["mia_norm"])
    flat = {k[len(NORM_PREFIX) :]: v for k, v in attrs.items() if k.startswith(NORM_PREFIX)}
    if "kind" not in flat:
        return {"kind": "none"}
    return {k: (np.atleast_1d(v).tolist() if k != "kind" else str(v)) for k, v in flat.items()}


def physical_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The physical variable's attributes: normalisation and packing removed, names restored.

    Inverse of :func:`normalised_attrs` (and of the earlier ``mia_norm`` layout), for values
    brought back to physical units.
    """
    normalised = any(k in attrs for k in (*PHYSICAL.values(), *LEGACY))
    out = {
        k: v
        for k, v in attrs.items()
        if not k.startswith(NORM_PREFIX) and k not in (*PACKING, *LEGACY, *PHYSICAL.values())
    }
    if normalised and out.get("units") == "1":
        out.pop("units")
    for key, kept in (*PHYSICAL.items(), ("units", "physical_units")):
        if kept in attrs:
            out[key] = attrs[kept]
    if isinstance(out.get("long_name"), str):
        out["long_name"] = out["long_name"].removesuffix(", normalised per level")
    return out


def physical_units(attrs: Mapping[str, Any]) -> str:
    """The physical units of a stored variable (empty when unknown)."""
    return str(physical_attrs(attrs).get("units", ""))


__all__ = ["norm_from_attrs", "normalised_attrs", "physical_attrs", "physical_units"]

"""Which dimension of an input is time, member, level, latitude, longitude: by meaning.

Reanalysis files name their axes in many ways (``time``, ``valid_time``, ``timestep``,
``t``; ``lat``, ``y``, ``g0_lat_0``; ``isobaricInhPa``, ``plev``...). A dimension's role is
found, in this order:

1. the user's mapping (``--dims time=timestep,latitude=y``), which always wins;
2. a dimension already named after its role (``time``, ``latitude``...);
3. CF attributes of its coordinate: ``axis`` (``T``; ``Z``; ``X``/``Y`` only with degree
   units), ``standard_name`` (``time``, ``latitude``, ``longitude``, ``realization``, a
   vertical coordinate), ``units`` (``<unit> since <date>`` (kept in the encoding once
   xarray decodes it), ``degrees_north``, ``degrees_east``, pressure units), a datetime
   dtype, or ``positive: up|down``;
4. the known spellings of ``DIM_RENAMES`` (``valid_time``, ``lat``, ``number``).

A time axis without coordinate values gets the indices ``0 .. n-1``; integer time steps
with no units are kept as indices. A single-time file (a scalar ``valid_time`` or ``time``
coordinate, as one-file-per-hour GRIB downloads have) gets a time axis of length one, so
many such files given as one glob concatenate along time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import xarray as xr

ROLES = ("time", "member", "level", "latitude", "longitude")

# Dimension spellings -> the names the field store is written with.
DIM_RENAMES = {
    "valid_time": "time",
    "lat": "latitude",
    "lon": "longitude",
    "pressure_level": "level",
    "isobaricInhPa": "level",
    "plev": "level",
    "lev": "level",
    "number": "member",
    "ensemble": "member",
    "realization": "member",
}
_SINCE = re.compile(r"^\s*\w+\s+since\s+", re.IGNORECASE)
_NORTH = {"degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen"}
_EAST = {"degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"}
_VERTICAL = {
    "air_pressure",
    "height",
    "altitude",
    "depth",
    "model_level_number",
    "atmosphere_hybrid_sigma_pressure_coordinate",
    "atmosphere_sigma_coordinate",
}
_PRESSURE_UNITS = {"pa", "hpa", "mbar", "millibar", "millibars", "mb"}
_SCALAR_TIMES = ("valid_time", "time")


def parse_dims(text: str) -> dict[str, str]:
    """``"time=timestep,latitude=y"`` -> ``{"time": "timestep", "latitude": "y"}``.

    Raises:
        ValueError: a part without ``=``, an unknown role, or a role given twice.
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        role, sep, dim = (s.strip() for s in part.partition("="))
        if not sep or not dim or role not in ROLES:
            raise ValueError(
                f"--dims {text!r}: expected ROLE=DIM pairs with ROLE one of {list(ROLES)}, "
                f"got {part!r}"
            )
        if role in out:
            raise ValueError(f"--dims {text!r}: {role} is given twice")
        out[role] = dim
    return out


def cf_role(ds: xr.Dataset, dim: str) -> str | None:
    """The role CF metadata gives ``dim``'s coordinate, or ``None``."""
    if dim not in ds.coords:
        return None
    c = ds[dim]
    attrs = {**c.encoding, **c.attrs}
    axis = str(attrs.get("axis", "")).upper()
    std = str(attrs.get("standard_name", "")).lower()
    units = str(attrs.get("units", "")).strip()
    low = units.lower().replace(" ", "_")
    if std == "time" or axis == "T" or _SINCE.match(units) or np.issubdtype(c.dtype, np.datetime64):
        return "time"
    if std == "latitude" or low in _NORTH or (axis == "Y" and low.startswith("degree")):
        return "latitude"
    if std == "longitude" or low in _EAST or (axis == "X" and low.startswith("degree")):
        return "longitude"
    if std == "realization":
        return "member"
    if std in _VERTICAL or axis == "Z" or str(attrs.get("positive", "")).lower() in ("up", "down"):
        return "level"
    if low in _PRESSURE_UNITS and c.ndim == 1:
        return "level"
    return None


def find_axes(ds: xr.Dataset, dims: Mapping[str, str], name: str) -> dict[str, str]:
    """Role -> dimension of ``ds`` (only the roles found); see the module docstring.

    Raises:
        ValueError: a mapped dimension is not in ``ds``, or two dimensions qualify for one
            role by their metadata (name one with ``--dims``).
    """
    missing = {r: d for r, d in dims.items() if d not in ds.dims}
    if missing:
        raise ValueError(
            f"{name}: --dims names {missing}, but the input's dimensions are {dict(ds.sizes)}"
        )
    found = dict(dims)
    taken = set(found.values())
    for role in ROLES:
        if role not in found and role in ds.dims and role not in taken:
            found[role] = role
            taken.add(role)
    by_meaning: dict[str, list[str]] = {}
    for dim in ds.dims:
        role = cf_role(ds, str(dim))
        if role and role not in found and dim not in taken:
            by_meaning.setdefault(role, []).append(str(dim))
    for role, cands in by_meaning.items():
        if len(cands) > 1:
            raise ValueError(
                f"{name}: dimensions {cands} all look like {role} (CF attributes); "
                f"choose one with --dims {role}=<dim>"
            )
        found[role] = cands[0]
        taken.add(cands[0])
    for old, role in DIM_RENAMES.items():
        if role not in found and old in ds.dims and old not in taken:
            found[role] = old
            taken.add(old)
    return found


def standard_axes(ds: xr.Dataset, dims: Mapping[str, str], name: str) -> xr.Dataset:
    """``ds`` with its axes renamed to their roles and a time axis made explicit.

    Args:
        ds: an input as opened.
        dims: the user's role -> dimension mapping (may be empty).
        name: the input as it may be shown (redacted), for errors.
    """
    _refuse_unstructured(ds, name)
    axes = find_axes(ds, dims, name)
    if "time" not in axes:
        ds = _expand_scalar_time(ds)
        axes = find_axes(ds, dims, name)
    renames = {d: r for r, d in axes.items() if d != r}
    clash = [r for r in renames.values() if r in ds.variables and r not in renames]
    ds = ds.drop_vars(clash).rename(renames)
    if "time" in ds.dims and "time" not in ds.coords:
        ds = ds.assign_coords(time=np.arange(ds.sizes["time"]))
    return ds


def _expand_scalar_time(ds: xr.Dataset) -> xr.Dataset:
    """A time axis of length one from a scalar time coordinate (``valid_time`` first)."""
    scalar = [c for c in _SCALAR_TIMES if c in ds.coords and ds[c].ndim == 0]
    if not scalar:
        return ds
    keep = scalar[0]
    ds = ds.drop_vars([c for c in _SCALAR_TIMES if c in ds.coords and c != keep])
    ds = ds.expand_dims(keep)
    return ds.rename({keep: "time"}) if keep != "time" else ds


def _refuse_unstructured(ds: xr.Dataset, name: str) -> None:
    """Refuse a reduced Gaussian / unstructured grid (latitude and longitude on one dim)."""
    lat = next((ds[c] for c in ("latitude", "lat") if c in ds.variables), None)
    lon = next((ds[c] for c in ("longitude", "lon") if c in ds.variables), None)
    if lat is not None and lon is not None and lat.ndim == lon.ndim == 1 and lat.dims == lon.dims:
        raise ValueError(
            f"{name}: latitude and longitude both run along {lat.dims[0]!r}: a reduced "
            "Gaussian or unstructured grid. Regrid it to a regular latitude/longitude grid "
            "first (for example: cdo remapbil,r360x181 in.grib out.grib)"
        )


__all__ = ["DIM_RENAMES", "ROLES", "cf_role", "find_axes", "parse_dims", "standard_axes"]

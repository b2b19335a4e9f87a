"""ERA5 names: variables (short <-> long, aliases) and dimensions (one field-store layout).

Users hold ERA5 under several spellings: CDS netCDF and cfgrib use short names (``t``,
``t2m``), the ARCO-ERA5 Zarr uses long ones (``temperature``, ``2m_temperature``), GRIB
tables and CMIP-style files use others (``2t``, ``tas``). A requested name is matched
against a dataset's variables under all of them, case-insensitively. Dimension spellings
(``valid_time``, ``pressure_level``, ``isobaricInhPa``, ``lat``, ``number`` ...) are mapped
onto ``FIELD_DIMS`` by :mod:`pipelines.data.builders.axes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import xarray as xr

from pipelines.data.builders.axes import standard_axes

FIELD_DIMS = ("time", "member", "level", "latitude", "longitude")
"""Dims of a field-store variable, in order (member and level optional)."""

SHORT_TO_LONG = {
    "t": "temperature",
    "z": "geopotential",
    "q": "specific_humidity",
    "r": "relative_humidity",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "w": "vertical_velocity",
    "vo": "vorticity",
    "d": "divergence",
    "o3": "ozone_mass_mixing_ratio",
    "cc": "fraction_of_cloud_cover",
    "sp": "surface_pressure",
    "msl": "mean_sea_level_pressure",
    "t2m": "2m_temperature",
    "d2m": "2m_dewpoint_temperature",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "u100": "100m_u_component_of_wind",
    "v100": "100m_v_component_of_wind",
    "tp": "total_precipitation",
    "skt": "skin_temperature",
    "sst": "sea_surface_temperature",
    "tcwv": "total_column_water_vapour",
    "tcc": "total_cloud_cover",
    "blh": "boundary_layer_height",
    "lsm": "land_sea_mask",
    "ci": "sea_ice_cover",
    "ssrd": "surface_solar_radiation_downwards",
}
LONG_TO_SHORT = {long: short for short, long in SHORT_TO_LONG.items()}

# Other spellings of the same quantity (GRIB shortNames, CMIP names, NCEP reanalysis),
# tried after the short and long names. NCEP's ``air`` is surface air temperature in the
# ``air_temperature`` sample and temperature on levels elsewhere, so it serves both; the
# CF standard name ``air_temperature`` names the variable of CF files such as Iris's
# samples (1.5 m temperature there).
ALIASES: dict[str, tuple[str, ...]] = {
    "t2m": ("2t", "tas", "air", "air_temperature"),
    "t": ("ta", "air"),
    "d2m": ("2d",),
    "u10": ("10u", "uas"),
    "v10": ("10v", "vas"),
    "u100": ("100u",),
    "v100": ("100v",),
    "sp": ("ps", "pres"),
    "msl": ("psl", "mslp", "slp"),
    "tp": ("pr",),
    "q": ("hus",),
    "r": ("hur", "rhum"),
    "u": ("ua", "uwnd"),
    "v": ("va", "vwnd"),
    "skt": ("ts",),
}


def canonical(name: str) -> str | None:
    """The short name of ``name`` (short, long or alias), or ``None`` if unknown."""
    low = name.lower()
    if low in SHORT_TO_LONG:
        return low
    if low in LONG_TO_SHORT:
        return LONG_TO_SHORT[low]
    return next((s for s, alts in ALIASES.items() if low in alts), None)


def candidates(name: str) -> list[str]:
    """Names under which ``name`` may be stored, most specific first."""
    short = canonical(name)
    if short is None:
        return [name]
    out = [name, short, SHORT_TO_LONG[short], *ALIASES.get(short, ())]
    return list(dict.fromkeys(out))


def resolve(name: str, available: Iterable[str]) -> str | None:
    """The variable of ``available`` that ``name`` designates, or ``None``."""
    lowered = {a.lower(): a for a in available}
    return next((lowered[c.lower()] for c in candidates(name) if c.lower() in lowered), None)


def describe(name: str) -> str:
    """``name`` with its other spelling, e.g. ``t (temperature)``, for error messages."""
    short = canonical(name)
    if short is None:
        return name
    other = SHORT_TO_LONG[short] if name.lower() == short else short
    return f"{name} ({other})"


def standardise(ds: xr.Dataset, name: str, dims: Mapping[str, str] | None = None) -> xr.Dataset:
    """Dims renamed to ``FIELD_DIMS``, aux/scalar coords dropped, lat/lon variables kept.

    Args:
        ds: a dataset as opened (CDS netCDF, cfgrib, ARCO Zarr, NCEP).
        name: the input as it may be shown (redacted).
        dims: role -> dimension names given by the user (``--dims``); the other axes are
            found by meaning (:mod:`pipelines.data.builders.axes`).

    Raises:
        ValueError: no 1-D time, latitude and longitude coordinates.
    """
    ds = standard_axes(ds, dims or {}, name)
    ds = ds.reset_coords(drop=True)
    for d in ("time", "latitude", "longitude"):
        if d not in ds.dims or d not in ds.coords:
            raise ValueError(
                f"{name}: needs 1-D time, latitude and longitude coordinates "
                f"(a regular lat/lon grid); it has dims {dict(ds.sizes)}. Name the axes "
                "with --dims, e.g. --dims time=timestep,latitude=y,longitude=x"
            )
    ds = ds.squeeze([d for d, n in ds.sizes.items() if n == 1 and d not in FIELD_DIMS], drop=True)
    return ds[[v for v in ds.data_vars if {"latitude", "longitude"} <= set(ds[v].dims)]]


def select_variables(
    datasets: list[xr.Dataset], requested: str, shown: list[str]
) -> dict[str, str]:
    """Modality name -> source variable name.

    Args:
        datasets: the standardised inputs.
        requested: comma-separated names (any spelling); empty: every variable on the
            grid, each under its own name (nothing is left out unless asked).
        shown: the inputs as they may be printed (redacted), for errors.

    Raises:
        ValueError: a name matches no variable (the message lists those available) or
            two names designate the same variable.
    """
    available = list(dict.fromkeys(v for ds in datasets for v in ds.data_vars))
    names = [n.strip() for n in requested.split(",") if n.strip()]
    if not names:
        if not available:
            raise ValueError(f"no variable on a latitude/longitude grid in {', '.join(shown)}")
        return {v: v for v in available}
    mapping = {}
    for n in names:
        src = resolve(n, available)
        if src is None:
            listed = ", ".join(describe(a) for a in available) or "none on a lat/lon grid"
            raise ValueError(f"variable {n!r} not found in {', '.join(shown)}; available: {listed}")
        if src in mapping.values() or n in mapping:
            raise ValueError(f"--variables names {src!r} twice")
        mapping[n] = src
    return mapping

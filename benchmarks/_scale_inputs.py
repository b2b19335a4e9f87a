"""Inputs of the scale benchmark: ERA5-like and volume netCDF files, written step by step.

ERA5 layout (what ``mia-inr build era5`` reads from the CDS): dims ``time, latitude,
longitude``, latitude descending 90 to -90 (poles included), longitude ``0 .. 360 - d``,
six-hourly ``time`` in ``hours since``, CF ``units``/``standard_name``/``long_name``
attributes. Four variables, each a climatological latitude profile plus a spectral anomaly
(:class:`~benchmarks._spectral_fields.LatLonField`), clipped to a realistic range:

* ``t2m`` 220-310 K (warm tropics, cold poles), ``sp`` 50000-105000 Pa (about 1000 hPa,
  lows and highs), ``tcwv`` 0-70 kg m-2 (moist tropics), ``z500`` 48000-58000 m2 s-2.

Volumes (what ``mia-inr build volumes --input`` reads): dims ``time, z, y, x``, one
variable ``density`` (``1 + 0.2 f``, ``f`` a 3-D :class:`SpectralField` on the periodic
box). Both writers append one time step at a time to an unlimited ``time`` dimension
(netCDF4, one chunk per step), so a 256^3 x N input is never held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

from benchmarks._spectral_fields import LatLonField, SpectralField

ERA5_K_BREAK = 60.0  # cycles per 360 degrees: a wavelength of ~670 km
VOLUME_K_BREAK = 8.0  # cycles per box side
HOURS_PER_STEP = 6


@dataclass(frozen=True)
class Variable:
    """A lat/lon variable: ``lo + (hi - lo) (base + swing cos(lat)^power + spread f)``."""

    name: str
    units: str
    standard_name: str
    long_name: str
    lo: float
    hi: float
    base: float
    swing: float
    power: float
    spread: float

    def values(self, anomaly: np.ndarray, coslat: np.ndarray) -> np.ndarray:
        """Physical values of a unit-variance anomaly ``(nlat, nlon)``, clipped to the range."""
        frac = self.base + self.swing * coslat[:, None] ** self.power + self.spread * anomaly
        return np.clip(self.lo + (self.hi - self.lo) * frac, self.lo, self.hi).astype(np.float32)


VARIABLES = (
    Variable("t2m", "K", "air_temperature", "2 metre temperature",
             220.0, 310.0, 0.25, 0.55, 1.5, 0.07),
    Variable("sp", "Pa", "surface_air_pressure", "Surface pressure",
             50000.0, 105000.0, 0.84, 0.04, 2.0, 0.04),
    Variable("tcwv", "kg m**-2", "atmosphere_mass_content_of_water_vapor",
             "Total column vertically-integrated water vapour", 0.0, 70.0, 0.1, 0.5, 4.0, 0.07),
    Variable("z500", "m**2 s**-2", "geopotential", "Geopotential at 500 hPa",
             48000.0, 58000.0, 0.2, 0.65, 2.0, 0.06),
)  # fmt: skip


def _time_var(ds: netCDF4.Dataset) -> netCDF4.Variable:
    ds.createDimension("time", None)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2000-01-01 00:00:00"
    t.calendar = "proleptic_gregorian"
    t.standard_name = "time"
    t.axis = "T"
    return t


def era5_grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """ERA5's latitudes (90 to -90, poles included) and longitudes (0 to 360 - d)."""
    return np.linspace(90.0, -90.0, nlat), np.arange(nlon) * (360.0 / nlon)


def write_era5(path: Path, nlat: int, nlon: int, steps: int, seed: int = 0) -> int:
    """Write ``steps`` six-hourly steps of the four variables; returns bytes of values."""
    lat, lon = era5_grid(nlat, nlon)
    coslat = np.cos(np.deg2rad(lat))
    fields = [LatLonField(nlat, nlon, ERA5_K_BREAK, seed + i) for i in range(len(VARIABLES))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.7"
        ds.title = "synthetic ERA5-like fields (k^-3 / k^-5/3 spectra), benchmarks/scale_bench.py"
        t = _time_var(ds)
        for name, values, units in (("latitude", lat, "degrees_north"),
                                    ("longitude", lon, "degrees_east")):  # fmt: skip
            ds.createDimension(name, values.size)
            v = ds.createVariable(name, "f8", (name,))
            v[:] = values
            v.units, v.standard_name, v.long_name = units, name, name
        out = []
        for spec in VARIABLES:
            v = ds.createVariable(
                spec.name, "f4", ("time", "latitude", "longitude"), chunksizes=(1, nlat, nlon)
            )
            v.units, v.standard_name, v.long_name = spec.units, spec.standard_name, spec.long_name
            out.append(v)
        for i in range(steps):
            t[i] = i * HOURS_PER_STEP
            for spec, var, field in zip(VARIABLES, out, fields, strict=True):
                var[i] = spec.values(field.step(), coslat)
    return steps * nlat * nlon * len(VARIABLES) * 4


def write_volume(path: Path, n: int, steps: int, seed: int = 0) -> int:
    """Write ``steps`` frames of an ``n^3`` ``density`` volume; returns bytes of values."""
    field = SpectralField((n, n, n), VOLUME_K_BREAK, seed, drift=n / 64.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.title = "synthetic turbulent density (k^-3 / k^-5/3 spectrum), scale_bench.py"
        t = _time_var(ds)
        t.units = "seconds since 2000-01-01 00:00:00"
        for name in ("z", "y", "x"):
            ds.createDimension(name, n)
            c = ds.createVariable(name, "f8", (name,))
            c[:] = np.arange(n) / n
            c.units = "1"
        v = ds.createVariable("density", "f4", ("time", "z", "y", "x"), chunksizes=(1, n, n, n))
        v.units, v.long_name = "1", "density"
        for i in range(steps):
            t[i] = float(i)
            v[i] = (1.0 + 0.2 * field.field()).astype(np.float32)
            field.advance()
    return steps * n**3 * 4

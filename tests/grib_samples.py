"""GRIB files written by the tests with ecCodes (installed by setup with cfgrib)."""

import sqlite3  # noqa: F401  before ecCodes (see pipelines/__init__.py)
from pathlib import Path

import eccodes
import numpy as np

# ecCodes parameter ids of ERA5's temperature and geopotential.
PARAMS = {"t": (130, 280.0, 20.0), "z": (129, 5.0e4, 2.0e3)}


def write_grib(
    path: Path, times: int = 3, nlat: int = 19, nlon: int = 36, first_time: int = 0
) -> dict:
    """A GRIB2 file of t and z at 500 hPa on a regular global grid, 6-hourly.

    ``first_time`` (in 6-hour steps) offsets the analyses, for one file per time step.

    Returns:
        variable -> ``(times, nlat, nlon)`` float64 values written (north to south).
    """
    rng = np.random.default_rng(0)
    lat_step, lon_step = 180.0 / (nlat - 1), 360.0 / nlon
    written = {v: np.zeros((times, nlat, nlon)) for v in PARAMS}
    with open(path, "wb") as fh:
        for t in range(times):
            for name, (pid, base, amp) in PARAMS.items():
                gid = eccodes.codes_grib_new_from_samples("regular_ll_pl_grib2")
                for key, value in (
                    ("paramId", pid),
                    ("level", 500),
                    ("dataDate", 20200101),
                    ("dataTime", (first_time + t) * 600),
                    ("Ni", nlon),
                    ("Nj", nlat),
                    ("latitudeOfFirstGridPointInDegrees", 90.0),
                    ("latitudeOfLastGridPointInDegrees", -90.0),
                    ("longitudeOfFirstGridPointInDegrees", 0.0),
                    ("longitudeOfLastGridPointInDegrees", 360.0 - lon_step),
                    ("iDirectionIncrementInDegrees", lon_step),
                    ("jDirectionIncrementInDegrees", lat_step),
                ):
                    eccodes.codes_set(gid, key, value)
                values = base + amp * rng.standard_normal((nlat, nlon))
                eccodes.codes_set_values(gid, values.reshape(-1))
                eccodes.codes_write(gid, fh)
                eccodes.codes_release(gid)
                written[name][t] = values
    return written

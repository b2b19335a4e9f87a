"""Sample ERA5-like inputs and a builder runner for the ERA5 builder tests."""

import argparse

import numpy as np
import pandas as pd
import xarray as xr

from pipelines.data.builders import era5
from pipelines.data.stores import make_location, open_store

LEVELS = [500, 850]


def era5_grid(nlat=19, nlon=36, lat_desc=True, lon_offset=5.0):
    lat = np.linspace(90, -90, nlat) if lat_desc else np.linspace(-90, 90, nlat)
    lon = lon_offset + np.arange(nlon) * (360.0 / nlon)
    return lat, lon


def era5_dataset(nt=12, long_names=False, lat_desc=True, lon_offset=5.0, seed=0, nlat=19, nlon=36):
    """ERA5-like dataset: t on 2 levels (K) and sp (Pa), old CDS layout."""
    rng = np.random.default_rng(seed)
    lat, lon = era5_grid(nlat, nlon, lat_desc, lon_offset)
    time = pd.date_range("2020-01-01", periods=nt, freq="6h")
    t = (
        250
        + 30 * np.cos(np.deg2rad(lat))[None, None, :, None]
        + rng.normal(0, 2, (nt, 2, lat.size, lon.size))
    )
    t[:, 1] += 20
    sp = 1e5 + rng.normal(0, 500, (nt, lat.size, lon.size))
    names = ("temperature", "surface_pressure") if long_names else ("t", "sp")
    return xr.Dataset(
        {
            names[0]: (("time", "level", "latitude", "longitude"), t, {"units": "K"}),
            names[1]: (("time", "latitude", "longitude"), sp, {"units": "Pa"}),
        },
        coords={"time": time, "level": LEVELS, "latitude": lat, "longitude": lon},
    )


def build_args(inputs, out, *extra):
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--chunk", type=int, default=4)
    era5.add_arguments(p)
    argv = ["--out", str(out)]
    for i in inputs if isinstance(inputs, list) else [inputs]:
        argv += ["--input", str(i)]
    return p.parse_args(argv + list(extra))


def build_store(tmp_path, inputs, *extra, name="store.zarr"):
    out = tmp_path / name
    summary = era5.build(build_args(inputs, out, *extra), make_location(str(out)))
    return summary, open_store(make_location(str(out)))

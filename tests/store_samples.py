"""Sample data for the store tests: small signal stores, field datasets, leak-check keys."""

import numpy as np
import xarray as xr

from pipelines.data.stores import ModalityData, make_location, write_signal_store
from pipelines.data.stores.field_writer import write_field_store

# Distinctive credentials: any occurrence in a message, repr or stored byte is a leak.
KEY = "AKIAMIALEAKCHECK7Q2Z"
SECRET = "mia-secret-V9x!never-print-me"


def signal_data(n=10, seed=0, nan_signal=None):
    rng = np.random.default_rng(seed)
    grid = rng.normal(3.0, 2.0, size=(n, 4, 5, 2)).astype(np.float32)
    pts = rng.uniform(-7.0, 5.0, size=(n, 6, 1)).astype(np.float32)
    pts_shared_xy = rng.uniform(-1, 1, size=(6, 2)).astype(np.float32)
    pts2 = rng.normal(size=(n, 7, 3)).astype(np.float32)
    pts2_xy = rng.uniform(-1, 1, size=(n, 7, 1)).astype(np.float32)
    if nan_signal is not None:
        pts[nan_signal] = np.nan
    return {
        "img": ModalityData(grid, "grid", [[0.0, 3.0], [-2.0, 2.0]], normalisation="zscore"),
        "pts": ModalityData(pts, "points", coords=pts_shared_xy, normalisation="minmax11"),
        "cloud": ModalityData(pts2, "points", coords=pts2_xy, normalisation="minmax01"),
    }


def split_of(n):
    return np.array([0, 0, 1, 2] * (n // 4) + [0] * (n % 4), np.int8)


def write_signals(path, n=10, chunk=4, **kw):
    loc = make_location(str(path))
    data = signal_data(n, **kw)
    write_signal_store(
        loc, data, split_of(n), np.arange(1, n + 1), {"source": "unit"}, chunk_signals=chunk
    )
    return loc, data


def field_dataset(kind, n_time=10, lat_desc=True, seed=0):
    rng = np.random.default_rng(seed)
    lat = np.linspace(80.0, -80.0, 5) if lat_desc else np.linspace(-80.0, 80.0, 5)
    lon = np.arange(0.0, 360.0, 60.0)
    if kind == "level":
        return xr.Dataset(
            {
                "t": (("time", "level", "lat", "lon"), rng.normal(280, 10, (n_time, 3, 5, 6))),
                "sp": (("time", "lat", "lon"), rng.normal(1e5, 500, (n_time, 5, 6))),
            },
            coords={"time": np.arange(n_time), "level": [500, 700, 850], "lat": lat, "lon": lon},
        )
    if kind == "member":
        return xr.Dataset(
            {"tp": (("time", "member", "lat", "lon"), rng.gamma(2.0, 1.0, (n_time, 3, 5, 6)))},
            coords={"time": np.arange(n_time), "member": [0, 1, 2], "lat": lat, "lon": lon},
        )
    return xr.Dataset(
        {"rho": (("time", "z", "y", "x"), rng.normal(size=(n_time, 2, 3, 4)))},
        coords={"z": [0.0, 1.0], "y": [0.0, 0.5, 1.0], "x": [0.0, 1.0, 2.0, 3.0]},
    )


def air_field_store(path, n_time):
    """A small ``air`` field store (6 x 8 grid) with the last 4 steps as val / test."""
    rng = np.random.default_rng(0)
    lat, lon = np.linspace(-40, 40, 6), np.linspace(0, 350, 8)
    base = np.sin(np.deg2rad(lon))[None, None] * np.cos(np.deg2rad(lat))[None, :, None]
    data = 0.5 + 0.3 * base + 0.05 * rng.standard_normal((n_time, 6, 8))
    ds = xr.Dataset(
        {"air": (("time", "lat", "lon"), data.astype(np.float32))},
        coords={"time": np.arange(n_time), "lat": lat, "lon": lon},
    )
    split = np.zeros(n_time, np.int8)
    split[-4:-2], split[-2:] = 1, 2
    write_field_store(ds, make_location(str(path)), chunk_time=4, split=split, normalisation="none")
    return str(path)

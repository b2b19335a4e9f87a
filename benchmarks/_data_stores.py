"""The data benchmark's stores: a synthetic signal store and a field store, local and on S3.

* synthetic: the 1-D benchmark of the experiment config (4 modalities x 200 points),
  ``n`` signals, 90% train (10% of it validation), 64 signals per chunk;
* field: three smooth, drifting fields on a 46 x 90 latitude-descending global grid,
  ``n_time`` time steps, 16 per chunk, the first 80% for training (``split_by_time``).

The S3 copies go to a moto server (:func:`pipelines.cluster.local_run.moto_s3`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from mia_core.config import load_config
from pipelines.data.resolve import build_synthetic_store
from pipelines.data.stores import StoreLocation, make_location
from pipelines.data.stores.field_writer import split_by_time, write_field_store

STORES = ("synthetic", "field")


def write_synthetic(location: StoreLocation, config: str, num_functions: int, chunk: int) -> None:
    """The synthetic 1-D benchmark of ``config`` with ``num_functions`` signals, 90% train."""
    n_train = int(num_functions * 0.9)
    cfg = load_config(config, [f"data.num_functions={num_functions}", f"data.num_train={n_train}"])
    build_synthetic_store(cfg, location, chunk)


def field_dataset(n_time: int, seed: int = 0) -> xr.Dataset:
    """Three smooth, drifting fields ``(time, 46, 90)`` on a global grid (latitude descending)."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, 46)
    lon = np.arange(90) * 4.0
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    t = np.arange(n_time)[:, None, None]
    out = {}
    for k, name in enumerate(("t2m", "msl", "z500")):
        phase = rng.uniform(0, 2 * np.pi, 3)
        field = (
            np.cos(la)[None] * np.sin(lo[None] * (k + 1) + 0.05 * t + phase[0])
            + 0.5 * np.sin(2 * la[None] + 0.01 * t + phase[1])
            + 0.05 * rng.standard_normal((n_time, 46, 90))
        )
        out[name] = (("time", "lat", "lon"), field.astype(np.float32))
    return xr.Dataset(out, coords={"time": np.arange(n_time), "lat": lat, "lon": lon})


def store_locations(
    work: Path, s3: dict[str, str] | None, bucket: str
) -> dict[str, dict[str, StoreLocation]]:
    """``where -> store name -> location``: ``local`` under ``work``, ``s3`` when given.

    Args:
        work: local folder of the stores.
        s3: the AWS_* environment of the S3 server (as :func:`moto_s3` yields it), or None.
        bucket: the bucket of the S3 copies.
    """
    out = {"local": {name: make_location(str(work / f"{name}.zarr")) for name in STORES}}
    if s3 is not None:
        opts = {"key": s3["AWS_ACCESS_KEY_ID"], "secret": s3["AWS_SECRET_ACCESS_KEY"]}
        out["s3"] = {
            name: make_location(
                f"s3://{bucket}/{name}.zarr", opts, endpoint_url=s3["AWS_ENDPOINT_URL"]
            )
            for name in STORES
        }
    return out


def write_stores(
    locations: dict[str, dict[str, StoreLocation]], config: str, n_signals: int, n_time: int
) -> None:
    """Write both stores at every location of :func:`store_locations`.

    Args:
        locations: as :func:`store_locations` returns them.
        config: experiment config of the synthetic store (``data`` section).
        n_signals: synthetic signals.
        n_time: field time steps.
    """
    ds = field_dataset(n_time)
    for locs in locations.values():
        write_synthetic(locs["synthetic"], config, n_signals, chunk=64)
        write_field_store(ds, locs["field"], chunk_time=16, split=split_by_time(n_time))

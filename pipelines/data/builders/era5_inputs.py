"""Inputs of the era5 builder: expanding globs and URLs, opening netCDF, GRIB and Zarr.

netCDF and Zarr go through xarray (fsspec for URLs, ``--anon`` for public buckets), GRIB
through cfgrib (local files), and the offline samples through
:mod:`pipelines.data.builders.samples`.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import warnings

import fsspec
import xarray as xr

from pipelines.data.builders.grib_input import open_grib
from pipelines.data.builders.samples import is_sample, open_sample
from pipelines.data.stores.location import make_location, redact_url

GRIB_SUFFIXES = (".grib", ".grb", ".grib2", ".grb2")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")


def input_options(url: str, args: argparse.Namespace) -> dict:
    """Fsspec options of an input URL (``--anon``, ``--input-endpoint-url``)."""
    if url.startswith("s3://"):
        opts = {"anon": True} if args.anon else {}
        return make_location(url, opts, endpoint_url=args.input_endpoint_url).storage_options
    if url.startswith(("gs://", "gcs://")) and args.anon:
        return {"token": "anon"}
    return {}


def expand_inputs(inputs: list[str], args: argparse.Namespace) -> list[str]:
    """``--input`` values with globs expanded (local or remote), samples as they are.

    Raises:
        FileNotFoundError: a local input or glob that matches nothing.
    """
    out: list[str] = []
    for item in inputs:
        if is_sample(item):
            out.append(item)
        elif "://" in item and not item.startswith("file://"):
            if any(c in item for c in "*?["):
                fs, _ = fsspec.core.url_to_fs(item, **input_options(item, args))
                out += sorted(fs.unstrip_protocol(p) for p in fs.glob(item))
            else:
                out.append(item)
        else:
            path = item.removeprefix("file://")
            found = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
            missing = [f for f in found if not os.path.exists(f)]
            if not found or missing:
                raise FileNotFoundError(f"no input matches {item!r}")
            out += found
    return out


def open_input(src: str, args: argparse.Namespace) -> xr.Dataset:
    """Open one input lazily by its suffix: GRIB (cfgrib), netCDF, else Zarr or xarray's guess.

    Raises:
        ValueError: GRIB without cfgrib, or a remote GRIB file.
    """
    if is_sample(src):
        return open_sample(src)
    low = src.split("?", 1)[0].lower().rstrip("/")
    remote = "://" in src and not src.startswith("file://")
    if low.endswith(GRIB_SUFFIXES):
        if importlib.util.find_spec("cfgrib") is None:
            raise ValueError(
                f"GRIB input {redact_url(src)} needs the cfgrib engine (with eccodes)"
                ": pip install cfgrib, or convert the file to netCDF"
            )
        if remote:
            raise ValueError(f"GRIB input {redact_url(src)}: cfgrib reads local files only")
        path = src.removeprefix("file://")
        return open_grib(path, redact_url(src), getattr(args, "skip_corrupt", False))
    if low.endswith(NETCDF_SUFFIXES):
        if remote:
            return xr.open_dataset(fsspec.open(src, **input_options(src, args)).open(), chunks=None)
        return xr.open_dataset(src, chunks=None)
    if not remote and not os.path.isdir(src):
        return xr.open_dataset(src, chunks=None)  # unknown suffix: let xarray guess
    store = make_location(src, input_options(src, args)).zarr_store("r")
    with warnings.catch_warnings():  # consolidated metadata is tried first (ARCO has it)
        warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
        return xr.open_zarr(store, chunks=None, consolidated=None)


__all__ = ["expand_inputs", "input_options", "open_input"]

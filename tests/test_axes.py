"""Axes by meaning: CF attributes, known names, --dims, scalar and index time axes."""

import numpy as np
import pytest
import xarray as xr
from era5_samples import build_store, era5_dataset
from grib_samples import write_grib

from pipelines.data.builders.axes import find_axes, parse_dims, standard_axes


def renamed(ds: xr.Dataset, mapping: dict[str, str]) -> xr.Dataset:
    """``ds`` with its axes renamed and every attribute that could tell what they are removed."""
    out = ds.rename(mapping)
    for c in out.coords:
        out[c].attrs = {}
    return out


def test_cf_attributes_find_axes_whatever_their_names():
    ds = renamed(
        era5_dataset(nt=3), {"time": "step", "level": "p", "latitude": "y", "longitude": "x"}
    )
    ds["y"].attrs = {"standard_name": "latitude"}
    ds["x"].attrs = {"units": "degrees_east"}
    ds["p"].attrs = {"units": "hPa", "positive": "down"}
    ds["step"] = ("step", np.arange(3) * 6.0, {"units": "hours since 2020-01-01", "axis": "T"})
    assert find_axes(ds, {}, "in.nc") == {
        "time": "step",
        "level": "p",
        "latitude": "y",
        "longitude": "x",
    }
    decoded = xr.decode_cf(ds)  # units move into the encoding: still found
    assert find_axes(decoded, {}, "in.nc")["time"] == "step"
    out = standard_axes(decoded, {}, "in.nc")
    assert set(out.dims) == {"time", "level", "latitude", "longitude"}


def test_two_time_like_axes_need_a_choice():
    ds = xr.Dataset(
        {"v": (("a", "b"), np.zeros((2, 3)))},
        coords={"a": ("a", [0, 1], {"axis": "T"}), "b": ("b", [0, 1, 2], {"axis": "T"})},
    )
    with pytest.raises(ValueError, match=r"\['a', 'b'\] all look like time.*--dims time="):
        find_axes(ds, {}, "in.nc")
    assert find_axes(ds, {"time": "b"}, "in.nc")["time"] == "b"


def test_parse_dims_and_its_errors():
    assert parse_dims("time=timestep, latitude=y") == {"time": "timestep", "latitude": "y"}
    assert parse_dims("") == {}
    for bad in ("time", "colour=x", "time=a,time=b", "time="):
        with pytest.raises(ValueError, match="--dims"):
            parse_dims(bad)
    with pytest.raises(ValueError, match="--dims names .*'nope'"):
        find_axes(era5_dataset(nt=2), {"time": "nope"}, "in.nc")


def test_timestep_axis_without_attributes_builds_with_dims(tmp_path):
    """A reanalysis whose time axis is an unmarked integer 'timestep' (refused before)."""
    ds = renamed(era5_dataset(nt=6), {"time": "timestep"})
    ds = ds.drop_vars("timestep")  # no coordinate values at all: indices 0..5
    ds.to_netcdf(tmp_path / "in.nc")
    with pytest.raises(ValueError, match="--dims time=timestep"):
        build_store(tmp_path, tmp_path / "in.nc", "--variables", "sp", "--resolution", "10x20")
    summary, store = build_store(
        tmp_path,
        tmp_path / "in.nc",
        "--variables",
        "sp",
        "--resolution",
        "10x20",
        "--dims",
        "time=timestep",
    )
    assert summary["time_steps"] == 6 and summary["time_range"] == ["0", "5"]
    assert store.num_signals == 6


def test_single_time_grib_files_concatenate_along_time(tmp_path):
    """One GRIB file per analysis (a scalar time coordinate each), given as one glob."""
    for t in range(3):
        write_grib(tmp_path / f"era5_{t}.grib", times=1, first_time=t)
    summary, store = build_store(
        tmp_path,
        tmp_path / "era5_*.grib",
        "--variables",
        "t,z",
        "--resolution",
        "19x36",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0",
    )
    assert summary["time_steps"] == 3 and store.num_signals == 3
    assert summary["time_range"][0].startswith("2020-01-01T00")
    assert summary["time_range"][1].startswith("2020-01-01T12")


def test_reduced_gaussian_grid_is_refused_with_what_to_do():
    ds = xr.Dataset(
        {"t": (("time", "values"), np.zeros((2, 5)))},
        coords={
            "time": [0, 1],
            "latitude": ("values", np.linspace(-80, 80, 5)),
            "longitude": ("values", np.linspace(0, 300, 5)),
        },
    )
    with pytest.raises(ValueError, match="reduced Gaussian or unstructured.*cdo remapbil"):
        standard_axes(ds, {}, "rg.grib")

"""ERA5 builder: input layouts, names, selection, normalisation, splits, S3 output."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from era5_samples import LEVELS, build_args, build_store, era5_dataset
from grib_samples import write_grib

from pipelines.data.builders import __main__ as cli
from pipelines.data.builders import era5, era5_inputs
from pipelines.data.builders.era5_names import canonical, describe, resolve
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.field_attrs import physical_units


def test_netcdf_short_names_regrid_normalise_split(tmp_path):
    era5_dataset().to_netcdf(tmp_path / "era5.nc")
    summary, store = build_store(
        tmp_path,
        tmp_path / "era5.nc",
        "--variables",
        "t,sp",
        "--resolution",
        "10x20",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    )
    assert sorted(store.modalities) == ["sp", "t"]
    assert store.info["t"].grid_shape == (10, 20) and store.info["t"].channels == 2
    assert store.info["sp"].channels == 1 and store.num_signals == 12
    assert np.bincount(store.split).tolist() == [6, 3, 3]
    assert summary["split"] == {"train": 6, "val": 3, "test": 3} and summary["time_steps"] == 12
    assert summary["levels"] == LEVELS and summary["members"] is None
    assert summary["bytes_written"] > 0
    vals = store.read(0, 12)
    for m, v in vals.items():
        assert v.shape == (12, 200, store.info[m].channels)
        assert not np.isnan(v).any(), m
        train = v[:6]  # min-max statistics of the training steps: exactly [0, 1] there
        assert np.allclose(train.min((0, 1)), 0, atol=1e-6), m
        assert np.allclose(train.max((0, 1)), 1, atol=1e-6), m
        assert -0.3 < v.min() and v.max() < 1.3  # val/test: same scale, may step outside
    grid = vals["sp"].reshape(12, 10, 20)
    assert not np.isnan(grid[:, :, -1]).any() and not np.isnan(grid[:, :, 0]).any()
    ds = xr.open_zarr(store.location.zarr_store("r"), consolidated=False)
    assert (
        ds.sizes["latitude"] == 10 and float(ds.latitude[0]) == -90 and float(ds.latitude[-1]) == 90
    )
    assert np.allclose(ds.longitude.values, np.arange(20) * 18.0)
    assert ds.attrs["mia_builder"] == "era5" and ds["t"].attrs["source_name"] == "t"
    # t has two levels, normalised one by one: dimensionless, physical units kept aside;
    # sp has one channel: CF-packed, so xarray unpacks it to pascals
    assert (ds["t"].attrs["units"], ds["t"].attrs["mia_physical_units"]) == ("1", "K")
    assert "standard_name" not in ds["t"].attrs and ds["t"].attrs["mia_norm_kind"] == "minmax01"
    assert ds["sp"].attrs["units"] == "Pa" and "scale_factor" in ds["sp"].encoding
    raw = xr.open_dataset(tmp_path / "era5.nc")["sp"]  # regridded: the same range
    assert (
        float(raw.min()) - 1 < float(ds["sp"].min()) < float(ds["sp"].max()) < float(raw.max()) + 1
    )


def test_long_names_multiple_files_glob_and_default_variables(tmp_path):
    ds = era5_dataset(long_names=True)
    ds.isel(time=slice(0, 6)).to_netcdf(tmp_path / "part_a.nc")
    ds.isel(time=slice(6, 12)).to_netcdf(tmp_path / "part_b.nc")
    # short names asked, long names stored, two files joined along time
    summary, store = build_store(
        tmp_path, tmp_path / "part_*.nc", "--variables", "t,sp", "--resolution", "10x20"
    )
    assert store.num_signals == 12 and summary["variables"] == {
        "t": "temperature",
        "sp": "surface_pressure",
    }
    assert [s.rsplit("/", 1)[-1] for s in store.attrs["mia_inputs"]] == ["part_a.nc", "part_b.nc"]
    # no t2m: the first variables found are taken under their own names
    _, store = build_store(tmp_path, tmp_path / "part_a.nc", "--resolution", "10x20", name="d.zarr")
    assert sorted(store.modalities) == ["surface_pressure", "temperature"]


def _arco(nt=6):
    ds = era5_dataset(nt, long_names=True, lat_desc=True, lon_offset=0.0)
    ds["geopotential"] = ds["temperature"] * 100
    ds["2m_temperature"] = ds["surface_pressure"] / 400
    return ds


def test_arco_zarr_layout_levels_and_missing_level(tmp_path):
    _arco().to_zarr(tmp_path / "arco.zarr", zarr_format=3, consolidated=False)
    summary, store = build_store(
        tmp_path,
        tmp_path / "arco.zarr",
        "--variables",
        "t,z,2m_temperature",
        "--levels",
        "850",
        "--resolution",
        "10x20",
    )
    assert sorted(store.modalities) == ["2m_temperature", "t", "z"] and summary["levels"] == [850]
    assert store.info["t"].channels == 1 and store.info["2m_temperature"].channels == 1
    # the default keeps every variable on the grid, under its own (long) name
    _, store = build_store(tmp_path, tmp_path / "arco.zarr", "--resolution", "10x20", name="d.zarr")
    assert "2m_temperature" in store.modalities and len(store.modalities) > 3
    with pytest.raises(ValueError, match=r"--levels \[700.0\] not available.*500.0, 850.0"):
        build_store(tmp_path, tmp_path / "arco.zarr", "--variables", "t", "--levels", "700,850")


def test_ensemble_members_multiply_signals(tmp_path):
    base = era5_dataset(nt=4)
    ds = xr.concat([base + i for i in range(3)], dim=pd.Index([0, 1, 2], name="number"))
    ds.transpose("time", "number", ...).to_netcdf(tmp_path / "ens.nc")
    _, store = build_store(
        tmp_path, tmp_path / "ens.nc", "--variables", "t", "--resolution", "10x20"
    )
    assert store.num_signals == 12 and store.info["t"].channels == 2
    summary, store = build_store(
        tmp_path,
        tmp_path / "ens.nc",
        "--variables",
        "t",
        "--members",
        "0,2",
        "--resolution",
        "10x20",
        name="sub.zarr",
    )
    assert store.num_signals == 8 and summary["members"] == [0, 2]
    v = store.read(0, 8)["t"]
    assert np.all(v[1] > v[0])  # member 2 is member 0 + 2 K everywhere
    with pytest.raises(ValueError, match="--members"):
        build_store(tmp_path, tmp_path / "ens.nc", "--variables", "t", "--members", "5")


def test_new_cds_layout_valid_time_pressure_level(tmp_path):
    ds = era5_dataset(nt=6).rename(time="valid_time", level="pressure_level")
    ds = ds.assign_coords(number=0, expver=("valid_time", ["0001"] * 6))
    ds.to_netcdf(tmp_path / "cds.nc")
    summary, store = build_store(
        tmp_path,
        tmp_path / "cds.nc",
        "--variables",
        "temperature",
        "--levels",
        "500",
        "--resolution",
        "10x20",
    )
    assert store.num_signals == 6 and store.info["temperature"].channels == 1
    ds = xr.open_zarr(store.location.zarr_store("r"), consolidated=False)
    assert set(ds["temperature"].dims) == {"time", "level", "latitude", "longitude"}
    assert "expver" not in ds.variables and "number" not in ds.variables


def test_expver_dimension_combined(tmp_path):
    lat, lon = np.linspace(-90, 90, 10), np.arange(20) * 18.0
    full = np.random.default_rng(1).normal(280, 5, (4, 10, 20))
    both = np.stack([full, full], 1)
    both[2:, 0] = np.nan  # ERA5 final missing for the last steps
    both[:2, 1] = np.nan  # ERA5T only there
    xr.Dataset(
        {"t2m": (("time", "expver", "lat", "lon"), both)},
        coords={
            "time": pd.date_range("2024-01-01", periods=4),
            "expver": [1, 5],
            "lat": lat,
            "lon": lon,
        },
    ).to_netcdf(tmp_path / "expver.nc")
    _, store = build_store(
        tmp_path, tmp_path / "expver.nc", "--resolution", "10x20", "--normalisation", "none"
    )
    v = store.read(0, 4)["t2m"].reshape(4, 10, 20)
    np.testing.assert_allclose(v, full, rtol=1e-6)  # same grid: regridding is the identity


def test_missing_variable_lists_available(tmp_path):
    era5_dataset(nt=2).to_netcdf(tmp_path / "era5.nc")
    with pytest.raises(ValueError) as err:
        build_store(tmp_path, tmp_path / "era5.nc", "--variables", "t,q")
    msg = str(err.value)
    assert "'q'" in msg and "era5.nc" in msg and "t (temperature)" in msg
    assert "sp (surface_pressure)" in msg


def test_grib_without_cfgrib(tmp_path, monkeypatch):
    real = era5_inputs.importlib.util.find_spec
    monkeypatch.setattr(
        era5_inputs.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "cfgrib" else real(name, *a),
    )
    (tmp_path / "era5.grib").write_bytes(b"GRIB")
    with pytest.raises(ValueError, match="pip install cfgrib"):
        build_store(tmp_path, tmp_path / "era5.grib")


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing"):
        build_store(tmp_path, tmp_path / "nothing*.nc")
    era5_dataset(nt=4).to_netcdf(tmp_path / "era5.nc")
    with pytest.raises(ValueError, match="empty"):
        build_store(tmp_path, tmp_path / "era5.nc", "--time-slice", "2030-01-01:")
    with pytest.raises(ValueError, match="--resolution"):
        build_store(tmp_path, tmp_path / "era5.nc", "--resolution", "10")


def test_files_per_variable_are_merged(tmp_path):
    ds = era5_dataset(nt=4)
    ds[["t"]].to_netcdf(tmp_path / "t.nc")
    ds[["sp"]].to_netcdf(tmp_path / "sp.nc")
    _, store = build_store(
        tmp_path,
        [tmp_path / "t.nc", tmp_path / "sp.nc"],
        "--variables",
        "sp,t",
        "--resolution",
        "10x20",
    )
    assert sorted(store.modalities) == ["sp", "t"] and store.num_signals == 4
    ds = xr.open_zarr(store.location.zarr_store("r"), consolidated=False)
    assert physical_units(ds["sp"].attrs) == "Pa" and physical_units(ds["t"].attrs) == "K"


def test_s3_output_without_secrets(tmp_path, s3_server):
    s3 = s3_server
    s3["make_bucket"]("era5-test")
    era5_dataset(nt=4).to_netcdf(tmp_path / "era5.nc")
    loc = make_location(
        "s3://era5-test/api.zarr",
        storage_options={"key": s3["key"], "secret": s3["secret"]},
        endpoint_url=s3["endpoint_url"],
    )
    summary = era5.build(build_args(tmp_path / "era5.nc", loc.url, "--resolution", "10x20"), loc)
    store = open_store(loc)
    assert sorted(store.modalities) == ["sp", "t"]  # no t2m: the first variables found
    assert store.num_signals == 4 and summary["bytes_written"] > 0
    assert s3["secret"] not in json.dumps(summary) + json.dumps(store.attrs, default=str)


def test_s3_cli_credentials_from_env(tmp_path, s3_server, monkeypatch, capsys):
    s3 = s3_server
    s3["make_bucket"]("era5-cli")

    monkeypatch.setattr(cli, "BUILDERS", ("era5",))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    src = make_location("s3://era5-cli/in.zarr", s3["storage_options"])
    era5_dataset(nt=4, long_names=True).to_zarr(
        src.zarr_store("w"), zarr_format=3, consolidated=False
    )
    rc = cli.main(
        [
            "era5",
            "--out",
            "s3://era5-cli/cli.zarr",
            "--endpoint-url",
            s3["endpoint_url"],
            "--input",
            "s3://era5-cli/in.zarr",
            "--input-endpoint-url",
            s3["endpoint_url"],
            "--variables",
            "t,sp",
            "--resolution",
            "10x20",
            "--chunk",
            "2",
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert s3["secret"] not in printed.out + printed.err
    out = json.loads(printed.out)
    assert out["store"] == "s3://era5-cli/cli.zarr" and out["time_steps"] == 4
    store = open_store(make_location("s3://era5-cli/cli.zarr", endpoint_url=s3["endpoint_url"]))
    assert sorted(store.modalities) == ["sp", "t"] and store.chunk_size == 2
    assert store.attrs["mia_inputs"] == ["s3://era5-cli/in.zarr"]
    assert s3["secret"] not in json.dumps(store.attrs, default=str)


def test_names_both_ways_and_aliases():
    assert resolve("t", ["temperature", "geopotential"]) == "temperature"
    assert resolve("2m_temperature", ["t2m", "sp"]) == "t2m"
    assert resolve("T2M", ["2m_temperature"]) == "2m_temperature"
    assert resolve("t2m", ["2t"]) == "2t" and resolve("u10", ["10u"]) == "10u"
    assert resolve("t2m", ["air"]) == "air" and resolve("q", ["t", "sp"]) is None
    assert canonical("mean_sea_level_pressure") == "msl" and canonical("foo") is None
    assert describe("sp") == "sp (surface_pressure)" and describe("geopotential") == (
        "geopotential (z)"
    )


def test_grib_written_with_eccodes_builds_after_setup(tmp_path):
    """cfgrib and ecCodes come with setup: a GRIB file builds like netCDF."""
    written = write_grib(tmp_path / "era5.grib", times=4)
    summary, store = build_store(
        tmp_path,
        tmp_path / "era5.grib",
        "--variables",
        "t,z",
        "--resolution",
        "19x36",
        "--normalisation",
        "none",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    )
    assert summary["time_steps"] == 4 and summary["variables"] == {"t": "t", "z": "z"}
    assert summary["split"] == {"train": 2, "val": 1, "test": 1}
    assert store.modalities == ["t", "z"]
    rows = store.read(0, 4)
    for name in ("t", "z"):
        values = rows[name].reshape(4, 19, 36)  # latitude ascending
        expected = written[name][:, ::-1]  # GRIB rows run north to south
        np.testing.assert_allclose(values, expected, rtol=1e-3)


def test_grib_libraries_do_not_replace_the_sqlite_mlflow_needs():
    """ecCodes' wheels bundle SQLite 3.26; pipelines binds the system one first."""
    code = (
        "import pipelines.data.builders.era5, cfgrib, eccodes, sqlite3; "
        "print(sqlite3.sqlite_version_info >= (3, 31))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_inputs_splitting_variables_with_other_time_stamps_are_refused(tmp_path):
    ds = era5_dataset(nt=3)
    ds[["t"]].to_netcdf(tmp_path / "t.nc")
    shifted = ds[["sp"]].assign_coords(time=ds.time + np.timedelta64(12, "h"))
    shifted.to_netcdf(tmp_path / "sp.nc")
    with pytest.raises(ValueError, match="different time stamps.*--time-slice"):
        build_store(tmp_path, [tmp_path / "t.nc", tmp_path / "sp.nc"], "--resolution", "10x20")

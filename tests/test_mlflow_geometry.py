"""Physical coordinates -> the meta-model's frame, as the MLflow model maps them.

Real field stores written by the builders' writer, read back by the reader: a point on a
grid line maps to that line's ``grid_coords`` value, longitudes in either convention wrap
into the store's own range, and what the model cannot answer is one line.
"""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.field_writer import write_field_store
from pipelines.reports.mlflow_geometry import Geometry, ModelInputError
from pipelines.reports.mlflow_physical import encodes_itself, points_per_step


def _geometry(tmp_path, lat, lon, times, name="s.zarr", **extra) -> Geometry:
    shape = (len(times), len(lat), len(lon))
    data = {"t2m": (("time", "latitude", "longitude"), np.random.rand(*shape), {"units": "K"})}
    ds = xr.Dataset(data, coords={"time": times, "latitude": lat, "longitude": lon, **extra})
    ds.latitude.attrs["units"] = "degrees_north"
    loc = make_location(str(tmp_path / name))
    write_field_store(ds, loc, chunk_time=2)
    return Geometry.of_store(open_store(loc), str(tmp_path / name))


TIMES = np.datetime64("2020-01-01T00") + np.arange(4) * np.timedelta64(6, "h")


def _frame(**cols) -> pd.DataFrame:
    n = max(len(np.atleast_1d(v)) for v in cols.values())
    return pd.DataFrame({k: np.broadcast_to(np.asarray(v), (n,)) for k, v in cols.items()})


def test_grid_points_map_to_the_reader_s_grid_coordinates(tmp_path):
    lat = np.array([60.0, 50.0, 30.0, 20.0])  # descending and uneven: read ascending
    geo = _geometry(tmp_path, lat, np.linspace(0.0, 90.0, 4), TIMES)
    var = geo.variables["t2m"]
    assert var.axes[0].values == [20.0, 30.0, 50.0, 60.0] and var.units == "K"
    x = var.points(_frame(latitude=[20.0, 30.0, 40.0, 60.0], longitude=[0.0, 30.0, 45.0, 90.0]))
    np.testing.assert_allclose(x[:, 0], [-1, -1 / 3, 0, 1], atol=1e-6)  # 40: half way 30..50
    np.testing.assert_allclose(x[:, 1], [-1, -1 / 3, 0, 1], atol=1e-6)


@pytest.mark.parametrize(
    "lon, asked, expected",
    [
        (np.arange(-140.0, -52.4, 2.5), [260.0, -100.0], -100.0),  # a regional box, -180..180
        (np.arange(200.0, 330.1, 2.5), [-100.0, 260.0], 260.0),  # the same box, 0..360
        (np.arange(0.0, 360.0, 2.5), [-100.0, 620.0], 260.0),  # global
        (np.arange(-180.0, 180.1, 2.5), [260.0, -460.0], -100.0),  # global with both ends
    ],
)
def test_longitudes_of_either_convention_wrap_into_the_store_s_range(
    tmp_path, lon, asked, expected
):
    geo = _geometry(tmp_path, np.array([30.0, 45.0, 60.0]), lon, TIMES)
    x = geo.variables["t2m"].points(_frame(latitude=45.0, longitude=asked))[:, 1]
    want = -1 + 2 * np.interp(expected, lon, np.arange(len(lon))) / (len(lon) - 1)
    np.testing.assert_allclose(x, [want, want], atol=1e-6)


def test_a_global_grid_answers_in_its_wrap_gap_and_a_box_refuses_outside(tmp_path):
    glob = _geometry(tmp_path, np.array([0.0, 10.0]), np.arange(0.0, 360.0, 2.5), TIMES, "g")
    x = glob.variables["t2m"].points(_frame(latitude=0.0, longitude=[358.0, -0.5, 359.0]))[:, 1]
    np.testing.assert_allclose(x, [1.0, -1.0, -1.0], atol=1e-6)  # nearest edge
    box = _geometry(tmp_path, np.array([30.0, 60.0]), np.arange(-140.0, -52.4, 2.5), TIMES)
    with pytest.raises(ModelInputError) as err:
        box.variables["t2m"].points(_frame(latitude=45.0, longitude=[-100.0, 0.0, 10.0]))
    msg = str(err.value)
    assert "\n" not in msg and "longitude 0 is outside the model's grid, -140 to -52.5" in msg
    assert "(row 1, and 1 more)" in msg
    with pytest.raises(ModelInputError, match="latitude 80 is outside .* 30 to 60 degrees_north"):
        box.variables["t2m"].points(_frame(latitude=80.0, longitude=-100.0))
    with pytest.raises(ModelInputError, match="lacks column 'longitude'"):
        box.variables["t2m"].points(_frame(latitude=45.0))


def test_times_pick_a_step_or_name_the_steps_the_model_has(tmp_path):
    geo = _geometry(tmp_path, np.array([30.0, 60.0]), np.array([0.0, 10.0]), TIMES)
    given = _frame(time=pd.to_datetime(["2020-01-01 06:00", "2020-01-01 18:00"]))
    np.testing.assert_array_equal(geo.signals(given), [1, 3])
    assert list(geo.signals(_frame(time=["2020-01-01", "2020-01-01T12:00:00"]))) == [0, 2]
    with pytest.raises(ModelInputError) as err:
        geo.signals(_frame(time=pd.to_datetime(["2020-01-01", "2020-01-02"])))
    assert str(err.value) == (
        "time 2020-01-02T00:00:00 is not a time step of the model; it has 4 time steps "
        "from 2020-01-01T00:00:00 to 2020-01-01T18:00:00 (row 1)"
    )


def test_other_calendars_and_numeric_times(tmp_path):
    days = [cftime.Datetime360Day(2099, 2, d) for d in (28, 29, 30)]
    geo = _geometry(tmp_path, np.array([30.0, 60.0]), np.array([0.0, 10.0]), days, "c")
    assert geo.time_kind == "cftime" and geo.calendar == "360_day"
    assert list(geo.signals(_frame(time=["2099-02-30", days[1]]))) == [2, 1]
    num = _geometry(tmp_path, np.array([30.0, 60.0]), np.array([0.0, 10.0]), [0.0, 50.0], "n")
    assert list(num.signals(_frame(time=[50.0, 0.0]))) == [1, 0]
    with pytest.raises(ModelInputError, match="time 25.0 is not a time step .* from 0.0 to 50.0"):
        num.signals(_frame(time=[25.0]))


def test_levels_and_members_pick_the_channel_and_the_signal(tmp_path):
    shape = (3, 2, 2, 2, 2)  # time, member, level, lat, lon
    ds = xr.Dataset(
        {"t": (("time", "member", "level", "latitude", "longitude"), np.random.rand(*shape))},
        coords={
            "time": TIMES[:3],
            "member": [0, 1],
            "level": [850.0, 500.0],
            "latitude": [0.0, 1.0],
            "longitude": [0.0, 1.0],
        },
    )
    ds.level.attrs["units"] = "hPa"
    loc = make_location(str(tmp_path / "l.zarr"))
    write_field_store(ds, loc, chunk_time=1)
    geo = Geometry.of_store(open_store(loc), str(tmp_path / "l.zarr"))
    rows = _frame(time=pd.to_datetime(["2020-01-01T06"] * 2), member=[1, 0], level=[500.0, 850.0])
    assert list(geo.signals(rows)) == [3, 2] and list(geo.variables["t"].channels(rows)) == [1, 0]
    with pytest.raises(ModelInputError, match=r"level 700 is not one of \[850.0, 500.0\] hPa"):
        geo.variables["t"].channels(rows.assign(level=700.0))
    with pytest.raises(ModelInputError, match="has levels .*; give a 'level' column"):
        geo.variables["t"].channels(rows.drop(columns="level"))
    with pytest.raises(ModelInputError, match=r"members \[0, 1\] .*give a 'member' column"):
        geo.signals(rows.drop(columns="member"))
    geo.save(tmp_path / "geometry.json")  # what the model artifact holds
    assert Geometry.load(tmp_path / "geometry.json") == geo


def test_a_large_grid_s_model_needs_a_code_table(tmp_path):
    small = _geometry(tmp_path, np.array([30.0, 60.0]), np.array([0.0, 10.0]), TIMES[:1])
    assert points_per_step(small) == 4 and encodes_itself(small)
    lat, lon = np.linspace(-90, 90, 513), np.arange(0.0, 360.0, 0.703125)  # 513 x 512
    large = _geometry(tmp_path, lat, lon, TIMES[:1], "large.zarr")
    assert points_per_step(large) == 513 * 512 and not encodes_itself(large)

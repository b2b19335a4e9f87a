"""Store layer: signal and field stores round trip, locally and on S3, without leaking secrets."""

import json
import traceback

import numpy as np
import pytest
import zarr
from store_samples import KEY, SECRET, field_dataset, signal_data, split_of, write_signals

from pipelines.data.stores import (
    ModalityData,
    StoreError,
    StoreLocation,
    make_location,
    open_store,
    write_signal_store,
)
from pipelines.data.stores.field_writer import split_by_time, write_field_store
from pipelines.data.stores.reader import grid_coords
from pipelines.data.stores.writer import invert_norm

# --- round trips ---------------------------------------------------------------------------


def test_signal_store_round_trip(tmp_path):
    loc, data = write_signals(tmp_path / "sig", n=10, chunk=4)
    store = open_store(loc)
    assert type(store).__name__ == "SignalStore"
    assert store.modalities == ["img", "pts", "cloud"]
    assert store.num_signals == 10 and store.chunk_size == 4
    np.testing.assert_array_equal(store.split, split_of(10))
    np.testing.assert_array_equal(store.scale, np.arange(1, 11, dtype=np.float32))
    assert store.attrs["source"] == "unit"

    img, pts, cloud = store.info["img"], store.info["pts"], store.info["cloud"]
    assert img.grid_shape == (4, 5) and img.channels == 2 and img.num_points == 20
    assert img.extent == [[0.0, 3.0], [-2.0, 2.0]]
    np.testing.assert_array_equal(img.coords, grid_coords((4, 5)))
    assert img.coords.min() == -1.0 and img.coords.max() == 1.0
    assert pts.grid_shape == (6,) and pts.channels == 1
    np.testing.assert_array_equal(pts.coords, data["pts"].coords)  # shared coords
    assert cloud.coords is None and cloud.channels == 3  # per-signal coords

    rows = store.read(3, 9)  # crosses a chunk boundary
    assert rows["img"].shape == (6, 20, 2) and rows["img"].dtype == np.float32
    assert rows["pts"].shape == (6, 6, 1) and rows["cloud"].shape == (6, 7, 3)
    for m, d in data.items():
        back = invert_norm(rows[m].astype(np.float64), store.info[m].norm)
        np.testing.assert_allclose(
            back.reshape(d.values[3:9].shape), d.values[3:9], rtol=1e-5, atol=1e-5
        )
    np.testing.assert_array_equal(store.read_coords("pts", 3, 9), data["pts"].coords)
    np.testing.assert_array_equal(store.read_coords("cloud", 3, 9), data["cloud"].coords[3:9])

    # the stored values are normalised with statistics of the training split
    train = store.split == 0
    all_rows = store.read(0, 10)
    mm11 = all_rows["pts"][train]
    assert mm11.min() == pytest.approx(-1.0, abs=1e-6)
    assert mm11.max() == pytest.approx(1.0, abs=1e-6)
    z = all_rows["img"][train].reshape(-1, 2)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)
    mm01 = all_rows["cloud"][train].reshape(-1, 3)
    np.testing.assert_allclose(mm01.min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(mm01.max(0), 1.0, atol=1e-6)


def test_signal_store_modality_subset_and_none_norm(tmp_path):
    loc = make_location(str(tmp_path / "raw"))
    vals = np.linspace(-3, 3, 5 * 11).reshape(5, 11, 1).astype(np.float32)
    write_signal_store(loc, {"a": ModalityData(vals, normalisation="none")}, np.zeros(5))
    store = open_store(loc, ["a"])
    np.testing.assert_array_equal(store.read(0, 5)["a"], vals)  # "none" stores raw values
    assert store.chunk_ranges() == [(0, 5)]


@pytest.mark.parametrize("lat_desc", [True, False])
def test_field_store_time_level_lat_lon(tmp_path, lat_desc):
    ds = field_dataset("level", lat_desc=lat_desc)
    loc = make_location(str(tmp_path / "f"))
    write_field_store(ds, loc, chunk_time=4, split=split_by_time(10), attrs={"source": "unit"})
    store = open_store(loc)
    assert type(store).__name__ == "FieldStore"
    assert store.modalities == ["t", "sp"]
    assert store.num_signals == 10 and store.chunk_size == 4
    np.testing.assert_array_equal(store.split, [0] * 8 + [1, 2])
    assert store.attrs["source"] == "unit"
    t, sp = store.info["t"], store.info["sp"]
    assert t.grid_shape == (5, 6) and t.channels == 3 and sp.channels == 1
    assert t.extent == [[-80.0, 80.0], [0.0, 300.0]]

    rows = store.read(2, 7)
    assert rows["t"].shape == (5, 30, 3) and rows["sp"].shape == (5, 30, 1)
    # expected: (time, lat ascending, lon, level), flattened row-major over (lat, lon)
    asc = ds.sortby("lat")
    want_t = asc["t"].isel(time=slice(2, 7)).transpose("time", "lat", "lon", "level").values
    back = invert_norm(rows["t"].astype(np.float64), t.norm).reshape(want_t.shape)
    np.testing.assert_allclose(back, want_t, rtol=1e-5)
    want_sp = asc["sp"].isel(time=slice(2, 7)).values
    back = invert_norm(rows["sp"].astype(np.float64), sp.norm).reshape(want_sp.shape)
    np.testing.assert_allclose(back, want_sp, rtol=1e-6)
    # the first grid point is the southernmost latitude, coordinate -1 along that axis
    assert t.coords[0, 0] == -1.0
    # per-level statistics from training time steps only
    assert len(t.norm["min"]) == 3
    train_t = ds["t"].isel(time=slice(0, 8))
    np.testing.assert_allclose(t.norm["min"], train_t.min(["time", "lat", "lon"]).values)
    # a subset: the variables left out are known (training says so)
    assert open_store(loc, ["sp"]).available == ["t", "sp"]


def test_field_store_time_member_lat_lon(tmp_path):
    ds = field_dataset("member")
    loc = make_location(str(tmp_path / "ens"))
    write_field_store(ds, loc, chunk_time=4, normalisation="none")
    store = open_store(loc)
    assert store.num_signals == 30  # time x member, time major
    assert store.chunk_size == 12
    assert store.chunk_ranges() == [(0, 12), (12, 24), (24, 30)]
    rows = store.read(5, 13)["tp"]  # starts mid time step, crosses a chunk
    flipped = ds["tp"].values[:, :, ::-1, :]  # latitude made ascending
    want = flipped.reshape(30, 30, 1)[5:13]
    np.testing.assert_allclose(rows, want, rtol=1e-6)
    # signal 7 is time 2, member 1
    np.testing.assert_allclose(rows[2, :, 0], flipped[2, 1].reshape(-1), rtol=1e-6)


def test_field_store_time_z_y_x(tmp_path):
    ds = field_dataset("volume")
    loc = make_location(str(tmp_path / "vol"))
    write_field_store(ds, loc, chunk_time=3, normalisation="zscore")
    store = open_store(loc)
    info = store.info["rho"]
    assert info.grid_shape == (2, 3, 4) and info.channels == 1
    assert info.coords.shape == (24, 3)
    assert info.extent == [[0.0, 1.0], [0.0, 1.0], [0.0, 3.0]]
    assert store.chunk_ranges() == [(0, 3), (3, 6), (6, 9), (9, 10)]
    rows = store.read(0, 10)["rho"]
    back = invert_norm(rows.astype(np.float64), info.norm).reshape(10, 2, 3, 4)
    np.testing.assert_allclose(back, ds["rho"].values, rtol=1e-5, atol=1e-5)


def test_chunk_ranges_aligned_with_zarr_chunks(tmp_path):
    loc, _ = write_signals(tmp_path / "sig", n=11, chunk=3)
    store = open_store(loc)
    ranges = store.chunk_ranges()
    assert ranges == [(0, 3), (3, 6), (6, 9), (9, 11)]
    group = zarr.open_group(str(tmp_path / "sig"), mode="r")
    for m in store.modalities:
        assert group[m].chunks[0] == store.chunk_size
    # contiguous, disjoint, covering, every start a chunk boundary
    assert ranges[0][0] == 0 and ranges[-1][1] == store.num_signals
    for (a, b), (c, _) in zip(ranges[:-1], ranges[1:], strict=True):
        assert b == c and a % store.chunk_size == 0

    floc = make_location(str(tmp_path / "f"))
    write_field_store(field_dataset("level", n_time=9), floc, chunk_time=2)
    fstore = open_store(floc)
    fgroup = zarr.open_group(str(tmp_path / "f"), mode="r")
    assert fgroup["t"].chunks[0] == fstore.chunk_size == 2
    assert fstore.chunk_ranges() == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]


# --- credentials never leak ----------------------------------------------------------------


def test_location_repr_and_str_hide_credentials():
    loc = make_location("s3://mia-data/x.zarr", {"key": KEY, "secret": SECRET})
    for text in (repr(loc), str(loc), f"{loc}", f"{loc!r}", loc.display, repr([loc])):
        assert KEY not in text and SECRET not in text
    assert str(loc) == "s3://mia-data/x.zarr"
    assert loc.storage_options["secret"] == SECRET  # still usable
    # credentials or tokens in the URL itself are redacted as well
    leaky = StoreLocation(f"s3://{KEY}:{SECRET}@mia-data/x.zarr?X-Amz-Security-Token=tok123")
    for text in (repr(leaky), str(leaky)):
        assert KEY not in text and SECRET not in text and "tok123" not in text
    assert "mia-data/x.zarr" in str(leaky)
    # storage options (and so credentials) do not take part in equality
    assert loc == make_location("s3://mia-data/x.zarr", {"key": "other", "secret": "other"})


def _s3_objects(s3, bucket, prefix):
    client = s3["client"]
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    return {
        o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing
    }


@pytest.mark.timeout(60)
def test_s3_round_trip_and_no_credentials_in_stores_or_errors(s3_server):
    s3_server["make_bucket"]("mia-data")
    opts = {"key": KEY, "secret": SECRET}
    ep = s3_server["endpoint_url"]
    loc = make_location("s3://mia-data/leak/sig.zarr", opts, endpoint_url=ep)
    data = signal_data(8)
    write_signal_store(loc, data, split_of(8), attrs={"source": "unit"}, chunk_signals=4)
    floc = make_location("s3://mia-data/leak/field.zarr", opts, endpoint_url=ep)
    write_field_store(field_dataset("member", n_time=4), floc, chunk_time=2)

    store = open_store(loc)
    rows = store.read(0, 8)
    back = invert_norm(rows["img"].astype(np.float64), store.info["img"].norm)
    np.testing.assert_allclose(back.reshape(8, 4, 5, 2), data["img"].values, rtol=1e-5)
    assert open_store(floc).read(0, 12)["tp"].shape == (12, 30, 1)
    for text in (json.dumps(store.attrs), json.dumps(open_store(floc).attrs)):
        assert KEY not in text and SECRET not in text

    objects = _s3_objects(s3_server, "mia-data", "leak/")
    assert any(k.endswith("zarr.json") for k in objects) and len(objects) > 10
    for key, body in objects.items():
        assert KEY.encode() not in body and SECRET.encode() not in body, key

    # errors from a reachable endpoint: no store there, a missing variable
    errors = []
    for bad, mods in [("s3://mia-data/leak/nothing.zarr", None), (loc.url, ["rain"])]:
        with pytest.raises(StoreError) as err:
            open_store(make_location(bad, opts, endpoint_url=ep), mods)
        errors.append(err.value)
    assert "s3://mia-data/leak/nothing.zarr" in str(errors[0])
    assert "'rain'" in str(errors[1])
    for e in errors:
        text = "".join(traceback.format_exception(e))
        assert KEY not in text and SECRET not in text


def test_stores_open_in_xarray_without_warnings(tmp_path):
    """Both store kinds open with plain ``xr.open_zarr`` (consolidated, dimension names)."""
    import warnings

    import xarray as xr

    from pipelines.data.stores.field_writer import write_field_store

    loc = make_location(str(tmp_path / "s.zarr"))
    grid = np.random.default_rng(0).normal(size=(6, 4, 5, 2)).astype(np.float32)
    points = np.random.default_rng(1).normal(size=(6, 7, 1)).astype(np.float32)
    coords = np.zeros((6, 7, 1), np.float32)
    data = {
        "img": ModalityData(grid, units="K"),
        "pts": ModalityData(points, kind="points", coords=coords, normalisation="none", units="m"),
    }
    write_signal_store(loc, data, np.zeros(6), extra_arrays={"label": np.arange(6)})
    fields = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), grid[..., 0], {"units": "K"})},
        coords={"time": np.arange(6), "latitude": np.arange(4.0), "longitude": np.arange(5.0)},
    )
    floc = make_location(str(tmp_path / "f.zarr"))
    write_field_store(fields, floc, chunk_time=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sig = xr.open_zarr(str(tmp_path / "s.zarr"))
        fld = xr.open_zarr(str(tmp_path / "f.zarr"))
    assert sig["img"].dims == ("signal", "img_axis0", "img_axis1", "img_channel")
    assert sig["pts__coords"].dims == ("signal", "pts_point", "pts_coord")
    assert sig["label"].dims == ("signal",) and sig.sizes["signal"] == 6
    assert (sig["img"].attrs["units"], sig["img"].attrs["physical_units"]) == ("1", "K")
    assert sig["pts"].attrs["units"] == "m"  # not normalised: physical units as they are
    assert fld["t2m"].attrs["units"] == "K"  # CF-packed: xarray unpacks to kelvin
    np.testing.assert_allclose(fld["t2m"].values, grid[..., 0], atol=1e-6)
    assert open_store(loc).num_signals == 6 and open_store(floc).num_signals == 6


def test_missing_frames_are_marked_and_never_drawn(tmp_path):
    """A frame of fill values (NaN after decoding) is recorded, counted and skipped."""
    import xarray as xr

    from pipelines.data.episodes import EpisodeSpec
    from pipelines.data.ray_source import _read_ranges
    from pipelines.data.stores.field_writer import write_field_store
    from pipelines.data.streams import store_episodes

    rng = np.random.default_rng(0)
    t2m = rng.normal(280, 5, size=(8, 2, 4, 5)).astype(np.float32)  # time, member, lat, lon
    t2m[3] = np.nan  # both members of time 3
    t2m[5, 1] = np.nan  # member 1 of time 5
    t2m[6, 0, 0, 0] = np.nan  # one missing point: still a frame
    fields = xr.Dataset(
        {"t2m": (("time", "member", "latitude", "longitude"), t2m, {"units": "K"})},
        coords={
            "time": np.arange(8),
            "member": [0, 1],
            "latitude": np.arange(4.0),
            "longitude": np.arange(5.0),
        },
    )
    loc = make_location(str(tmp_path / "f.zarr"))
    write_field_store(fields, loc, chunk_time=3)
    store = open_store(loc)
    assert store.modalities == ["t2m"] and store.num_signals == 16
    missing = np.flatnonzero(~store.valid).tolist()
    assert missing == [6, 7, 11] and store.attrs["missing_signals"] == 3
    spec = EpisodeSpec({"t2m": (0.1, 0.5)})
    # Every other signal is drawn (an all-NaN one would stop the episode builder).
    drawn = sum(ep["t2m"].batch_size for ep in store_episodes(store, spec, 4, split=None))
    assert drawn == 16 - len(missing)
    rows = [
        i
        for table in _read_ranges(loc, ["t2m"], store.chunk_ranges(), None, 1)
        for i in table.column("index").to_pylist()
    ]
    assert sorted(rows) == [i for i in range(16) if i not in missing]
    # Signal stores record the same.
    vals = rng.normal(size=(5, 6, 1)).astype(np.float32)
    vals[2] = np.nan
    sloc = make_location(str(tmp_path / "s.zarr"))
    write_signal_store(sloc, {"a": ModalityData(vals)}, np.zeros(5))
    assert np.flatnonzero(~open_store(sloc).valid).tolist() == [2]

"""Store layer: signal and field stores round trip, clear errors on bad input, no secrets."""

import json
import socket
import time
import traceback

import numpy as np
import pytest
import xarray as xr
import zarr

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

# Distinctive credentials: any occurrence in a message, repr or stored byte is a leak.
KEY = "AKIAMIALEAKCHECK7Q2Z"
SECRET = "mia-secret-V9x!never-print-me"


def _signal_data(n=10, seed=0, nan_signal=None):
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


def _split(n):
    return np.array([0, 0, 1, 2] * (n // 4) + [0] * (n % 4), np.int8)


def _write_signals(path, n=10, chunk=4, **kw):
    loc = make_location(str(path))
    data = _signal_data(n, **kw)
    write_signal_store(
        loc, data, _split(n), np.arange(1, n + 1), {"source": "unit"}, chunk_signals=chunk
    )
    return loc, data


def _field_dataset(kind, n_time=10, lat_desc=True, seed=0):
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


# --- round trips ---------------------------------------------------------------------------


def test_signal_store_round_trip(tmp_path):
    loc, data = _write_signals(tmp_path / "sig", n=10, chunk=4)
    store = open_store(loc)
    assert type(store).__name__ == "SignalStore"
    assert store.modalities == ["img", "pts", "cloud"]
    assert store.num_signals == 10 and store.chunk_size == 4
    np.testing.assert_array_equal(store.split, _split(10))
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
    ds = _field_dataset("level", lat_desc=lat_desc)
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


def test_field_store_time_member_lat_lon(tmp_path):
    ds = _field_dataset("member")
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
    ds = _field_dataset("volume")
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
    loc, _ = _write_signals(tmp_path / "sig", n=11, chunk=3)
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
    write_field_store(_field_dataset("level", n_time=9), floc, chunk_time=2)
    fstore = open_store(floc)
    fgroup = zarr.open_group(str(tmp_path / "f"), mode="r")
    assert fgroup["t"].chunks[0] == fstore.chunk_size == 2
    assert fstore.chunk_ranges() == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]


# --- bad input: clear errors, no hang ------------------------------------------------------


@pytest.mark.timeout(60)
def test_missing_variable(tmp_path):
    loc, _ = _write_signals(tmp_path / "sig")
    with pytest.raises(StoreError) as err:
        open_store(loc, ["img", "rain"])
    assert str(tmp_path / "sig") in str(err.value) and "'rain'" in str(err.value)

    floc = make_location(str(tmp_path / "f"))
    write_field_store(_field_dataset("level"), floc)
    with pytest.raises(StoreError) as err:
        open_store(floc, ["t", "q"])
    assert str(tmp_path / "f") in str(err.value) and "'q'" in str(err.value)


@pytest.mark.timeout(60)
def test_variable_without_time(tmp_path):
    path = str(tmp_path / "notime")
    ds = xr.Dataset(
        {
            "t": (("time", "lat", "lon"), np.zeros((3, 2, 3))),
            "orog": (("lat", "lon"), np.zeros((2, 3))),
        }
    )
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError) as err:
        open_store(make_location(path))
    msg = str(err.value)
    assert path in msg and "'orog'" in msg and "time" in msg
    # the field writer refuses it too
    with pytest.raises(StoreError, match="'orog'"):
        write_field_store(ds, make_location(str(tmp_path / "w")))
    # a dataset without any time dimension
    with pytest.raises(StoreError, match="no time dimension"):
        write_field_store(ds[["orog"]], make_location(str(tmp_path / "w2")))


@pytest.mark.timeout(60)
def test_variable_with_unexpected_dim(tmp_path):
    path = str(tmp_path / "extra")
    xr.Dataset({"t": (("time", "lat", "lon", "band"), np.zeros((3, 2, 3, 2)))}).to_zarr(
        path, mode="w", zarr_format=3, consolidated=False
    )
    with pytest.raises(StoreError) as err:
        open_store(make_location(path))
    msg = str(err.value)
    assert path in msg and "'t'" in msg and "band" in msg


@pytest.mark.timeout(60)
def test_mismatched_modality_lengths(tmp_path):
    loc = make_location(str(tmp_path / "w"))
    data = {
        "a": ModalityData(np.zeros((4, 3, 1))),
        "b": ModalityData(np.zeros((5, 3, 1))),
    }
    with pytest.raises(StoreError) as err:
        write_signal_store(loc, data, np.zeros(4))
    assert str(tmp_path / "w") in str(err.value) and "'b': 5" in str(err.value)

    # hand-made: a valid store whose one array is then replaced by a shorter one
    loc, _ = _write_signals(tmp_path / "sig", n=8)
    group = zarr.open_group(str(tmp_path / "sig"), mode="a")
    del group["pts"]
    group.create_array("pts", data=np.zeros((6, 6, 1), np.float32))
    with pytest.raises(StoreError) as err:
        open_store(loc)
    msg = str(err.value)
    assert str(tmp_path / "sig") in msg and "'pts'" in msg and "6" in msg
    open_store(loc, ["img"])  # the intact modalities still open

    # field store: two variables on different time axes
    path = str(tmp_path / "f")
    xr.Dataset(
        {
            "a": (("time", "lat", "lon"), np.zeros((2, 2, 3))),
            "b": (("valid_time", "lat", "lon"), np.zeros((3, 2, 3))),
        }
    ).to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError) as err:
        open_store(make_location(path))
    assert path in str(err.value) and "'a': 2" in str(err.value) and "'b': 3" in str(err.value)


@pytest.mark.timeout(60)
def test_grid_shape_disagrees_with_metadata(tmp_path):
    loc, _ = _write_signals(tmp_path / "sig", n=8)
    group = zarr.open_group(str(tmp_path / "sig"), mode="a")
    del group["img"]
    group.create_array("img", data=np.zeros((8, 5, 4, 2), np.float32))
    with pytest.raises(StoreError) as err:
        open_store(loc)
    assert str(tmp_path / "sig") in str(err.value) and "'img'" in str(err.value)


@pytest.mark.timeout(60)
def test_all_nan_signal_fails_episode_building(tmp_path):
    from pipelines.data.episodes import EpisodeSpec
    from pipelines.data.streams import store_episodes

    loc, _ = _write_signals(tmp_path / "sig", n=8, nan_signal=5)
    store = open_store(loc)
    assert np.isnan(store.read(4, 8)["pts"][1]).all()
    spec = EpisodeSpec({"img": (0.2, 0.5), "pts": (0.2, 0.5), "cloud": (0.2, 0.5)})
    with pytest.raises(StoreError) as err:
        list(store_episodes(store, spec, batch_size=4, split=None, shuffle=False))
    msg = str(err.value)
    assert str(tmp_path / "sig") in msg and "'pts'" in msg and "signal 5" in msg


@pytest.mark.timeout(60)
def test_empty_store(tmp_path):
    loc = make_location(str(tmp_path / "e"))
    with pytest.raises(StoreError, match="without modalities"):
        write_signal_store(loc, {}, np.zeros(0))
    with pytest.raises(StoreError) as err:
        write_signal_store(loc, {"a": ModalityData(np.zeros((0, 3, 1)))}, np.zeros(0))
    assert str(tmp_path / "e") in str(err.value) and "0 signals" in str(err.value)
    with pytest.raises(StoreError, match="without variables"):
        write_field_store(xr.Dataset(coords={"time": np.arange(3)}), loc)
    with pytest.raises(StoreError, match="length 0"):
        write_field_store(xr.Dataset({"a": (("time", "lat", "lon"), np.zeros((0, 2, 3)))}), loc)

    # readers: a signal-store group claiming 0 signals, a group without variables,
    # an xarray store with coordinates only, and one with a time axis of length 0
    path = str(tmp_path / "zero")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["mia_store"] = {"kind": "signals", "modalities": [], "num_signals": 0, "info": {}}
    with pytest.raises(StoreError) as err:
        open_store(make_location(path))
    assert path in str(err.value) and "empty" in str(err.value)
    for name, make in [
        ("novars", lambda p: zarr.open_group(p, mode="w", zarr_format=3)),
        ("coords", lambda p: xr.Dataset(coords={"time": np.arange(3)}).to_zarr(p, mode="w")),
        (
            "t0",
            lambda p: xr.Dataset({"a": (("time", "lat", "lon"), np.zeros((0, 2, 3)))}).to_zarr(
                p, mode="w"
            ),
        ),
    ]:
        p = str(tmp_path / name)
        make(p)
        with pytest.raises(StoreError) as err:
            open_store(make_location(p))
        assert p in str(err.value) and "empty" in str(err.value), name


@pytest.mark.timeout(60)
def test_corrupt_chunk_signal_store(tmp_path):
    loc, data = _write_signals(tmp_path / "sig", n=10, chunk=4)
    (tmp_path / "sig" / "img" / "c" / "1" / "0" / "0" / "0").write_bytes(b"\x00garbage!" * 16)
    store = open_store(loc)
    with pytest.raises(StoreError) as err:
        store.read(0, 10)  # the bad chunk is the second one read: it must be named, not the first
    msg = str(err.value)
    assert str(tmp_path / "sig") in msg and "'img/c/1/0/0/0'" in msg and "'img'" in msg
    with pytest.raises(StoreError, match="img/c/1/0/0/0"):
        store.read(4, 8)
    # the other chunks still read fine
    for a, b in [(0, 4), (8, 10)]:
        rows = store.read(a, b)
        back = invert_norm(rows["img"].astype(np.float64), store.info["img"].norm)
        np.testing.assert_allclose(
            back.reshape(data["img"].values[a:b].shape), data["img"].values[a:b], rtol=1e-5
        )
    assert open_store(loc, ["pts"]).read(4, 8)["pts"].shape == (4, 6, 1)


@pytest.mark.timeout(60)
def test_corrupt_chunk_field_store(tmp_path):
    loc = make_location(str(tmp_path / "f"))
    write_field_store(_field_dataset("level"), loc, chunk_time=4)
    (tmp_path / "f" / "t" / "c" / "1" / "0" / "0" / "0").write_bytes(b"\xffnot zstd" * 9)
    store = open_store(loc)
    with pytest.raises(StoreError) as err:
        store.read(0, 10)
    msg = str(err.value)
    assert str(tmp_path / "f") in msg and "'t/c/1/0/0/0'" in msg and "'t'" in msg
    assert store.read(0, 4)["t"].shape == (4, 30, 3)
    assert store.read(8, 10)["t"].shape == (2, 30, 3)


@pytest.mark.timeout(60)
def test_path_that_is_not_a_store(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(StoreError) as err:
        open_store(make_location(missing))
    assert missing in str(err.value)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not zarr")
    with pytest.raises(StoreError) as err:
        open_store(make_location(str(junk)))
    assert str(junk) in str(err.value)
    # a plain Zarr array is not a store either
    zarr.create_array(str(tmp_path / "arr"), shape=(3,), dtype="float32")
    with pytest.raises(StoreError) as err:
        open_store(make_location(str(tmp_path / "arr")))
    assert str(tmp_path / "arr") in str(err.value)


def _dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_unreachable_s3_endpoint_fails_fast_without_secrets():
    url = "s3://mia-data/unreachable.zarr"
    loc = make_location(
        url,
        {"key": KEY, "secret": SECRET},
        endpoint_url=f"http://127.0.0.1:{_dead_port()}",
        retries=2,
        timeout_s=1,
    )
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        open_store(loc)
    assert time.monotonic() - t0 < 20
    text = "".join(traceback.format_exception(err.value))
    assert url in str(err.value)
    assert SECRET not in text and KEY not in text


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


def _bucket(s3, name):
    try:
        s3["make_bucket"](name)
    except Exception as err:  # created by an earlier test of this session
        if "BucketAlready" not in str(err):
            raise


def _s3_objects(s3, bucket, prefix):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["key"],
        aws_secret_access_key=s3["secret"],
        region_name="us-east-1",
    )
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    return {
        o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing
    }


@pytest.mark.timeout(60)
def test_s3_round_trip_and_no_credentials_in_stores_or_errors(s3_server):
    _bucket(s3_server, "mia-data")
    opts = {"key": KEY, "secret": SECRET}
    ep = s3_server["endpoint_url"]
    loc = make_location("s3://mia-data/leak/sig.zarr", opts, endpoint_url=ep)
    data = _signal_data(8)
    write_signal_store(loc, data, _split(8), attrs={"source": "unit"}, chunk_signals=4)
    floc = make_location("s3://mia-data/leak/field.zarr", opts, endpoint_url=ep)
    write_field_store(_field_dataset("member", n_time=4), floc, chunk_time=2)

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

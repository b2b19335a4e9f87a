"""Store layer on bad input: clear errors naming the store, no hang, no secrets."""

import time
import traceback

import numpy as np
import pytest
import xarray as xr
import zarr
from store_samples import KEY, SECRET, field_dataset, write_signals

from pipelines.cluster.local import free_port
from pipelines.data.stores import (
    ModalityData,
    StoreError,
    make_location,
    open_store,
    write_signal_store,
)
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.writer import invert_norm

# --- bad input: clear errors, no hang ------------------------------------------------------


@pytest.mark.timeout(60)
def test_missing_variable(tmp_path):
    loc, _ = write_signals(tmp_path / "sig")
    with pytest.raises(StoreError) as err:
        open_store(loc, ["img", "rain"])
    assert str(tmp_path / "sig") in str(err.value) and "'rain'" in str(err.value)

    floc = make_location(str(tmp_path / "f"))
    write_field_store(field_dataset("level"), floc)
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
    loc, _ = write_signals(tmp_path / "sig", n=8)
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
    loc, _ = write_signals(tmp_path / "sig", n=8)
    group = zarr.open_group(str(tmp_path / "sig"), mode="a")
    del group["img"]
    group.create_array("img", data=np.zeros((8, 5, 4, 2), np.float32))
    with pytest.raises(StoreError) as err:
        open_store(loc)
    assert str(tmp_path / "sig") in str(err.value) and "'img'" in str(err.value)


@pytest.mark.timeout(60)
def test_all_nan_signal_is_skipped_or_named(tmp_path):
    from pipelines.data.episodes import EpisodeSpec
    from pipelines.data.streams import store_episodes

    loc, _ = write_signals(tmp_path / "sig", n=8, nan_signal=5)
    store = open_store(loc)
    assert np.isnan(store.read(4, 8)["pts"][1]).all()
    assert np.flatnonzero(~store.valid).tolist() == [5]  # recorded at write
    spec = EpisodeSpec({"img": (0.2, 0.5), "pts": (0.2, 0.5), "cloud": (0.2, 0.5)})
    eps = list(store_episodes(store, spec, batch_size=4, split=None, shuffle=False))
    assert sum(ep["pts"].batch_size for ep in eps) == 7
    # A store written before the mask existed: the episode builder names the signal.
    group = zarr.open_group(str(tmp_path / "sig"), mode="a")
    del group["valid"]
    with pytest.raises(StoreError) as err:
        list(store_episodes(open_store(loc), spec, batch_size=4, split=None, shuffle=False))
    msg = str(err.value)
    assert str(tmp_path / "sig") in msg and "'pts'" in msg and "signal 5" in msg
    assert "rebuild the store" in msg


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
    loc, data = write_signals(tmp_path / "sig", n=10, chunk=4)
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
    write_field_store(field_dataset("level"), loc, chunk_time=4)
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


@pytest.mark.timeout(60)
def test_unreachable_s3_endpoint_fails_fast_without_secrets():
    url = "s3://mia-data/unreachable.zarr"
    loc = make_location(
        url,
        {"key": KEY, "secret": SECRET},
        endpoint_url=f"http://127.0.0.1:{free_port()}",
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

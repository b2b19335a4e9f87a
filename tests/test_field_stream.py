"""Field stores written in time blocks: the same store as one block, memory bounded."""

import numpy as np
import pytest
import xarray as xr
from era5_samples import build_store, era5_dataset

from pipelines.data.builders import era5_grid
from pipelines.data.stores import StoreError, field_stream, make_location
from pipelines.data.stores.field_stream import FieldStoreStream


@pytest.mark.parametrize("normalisation", ["minmax01", "zscore"])
def test_small_blocks_build_the_same_store_as_one_block(tmp_path, monkeypatch, normalisation):
    ds = era5_dataset(nt=20)
    ds["t"][3, 0, :4] = np.nan  # missing values stay missing
    ds.to_netcdf(tmp_path / "in.nc")
    args = ["--resolution", "10x20", "--normalisation", normalisation, "--test-fraction", "0.3"]
    _, whole = build_store(tmp_path, tmp_path / "in.nc", *args, name="whole.zarr")
    # a few time steps per block, in the builder's regridding and in the normalising pass
    monkeypatch.setattr(era5_grid, "BLOCK_BYTES", 3 * 19 * 36 * 3 * 8)
    monkeypatch.setattr(field_stream, "BLOCK_BYTES", 4 * 10 * 20 * 2 * 8)
    _, streamed = build_store(tmp_path, tmp_path / "in.nc", *args, name="streamed.zarr")
    for m in ("t", "sp"):
        a, b = whole.info[m].norm, streamed.info[m].norm
        for key in set(a) - {"kind"}:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-9)
    np.testing.assert_allclose(
        whole.read(0, 20)["t"], streamed.read(0, 20)["t"], rtol=1e-6, equal_nan=True
    )
    np.testing.assert_array_equal(whole.split, streamed.split)
    # later blocks keep the first block's global attributes (xarray rewrites them)
    attrs = xr.open_zarr(tmp_path / "streamed.zarr").attrs
    assert attrs["mia_variables"] == ["t", "sp"] and "history" in attrs and "mia_inputs" in attrs
    assert int(streamed.valid.sum()) == 20


def test_stream_refuses_empty_and_mismatched_splits(tmp_path):
    stream = FieldStoreStream(make_location(str(tmp_path / "s.zarr")))
    with pytest.raises(StoreError, match="empty"):
        stream.finish()
    stream.append(era5_dataset(nt=4).drop_vars("t"))
    with pytest.raises(StoreError, match="3 split codes for 4 steps"):
        stream.finish(np.zeros(3, np.int8))

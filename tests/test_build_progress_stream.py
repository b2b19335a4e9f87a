"""Builders at size: the volume builder streams time blocks; the long builders show progress."""

import sys

import numpy as np
import pytest
import xarray as xr
from era5_samples import build_store, era5_dataset
from skimage.io import imsave

from pipelines.data.builders import volumes
from pipelines.data.builders.__main__ import main
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.field_stream import FieldStoreStream


def _volume_input(path, steps=7):
    rng = np.random.default_rng(4)
    shape = (steps, 3, 4, 6)
    temp = rng.random(shape)
    temp[2, 0, 1, 1] = np.nan
    ds = xr.Dataset(
        {
            "temp": (("time", "depth", "lat", "lon"), temp),
            "salt": (("time", "depth", "lat", "lon"), 30 + rng.random(shape)),
        },
        coords={"time": np.arange(float(steps)), "depth": [0.0, 10.0, 50.0]},
    )
    ds.to_netcdf(path)
    return ds


def _build(out, *args):
    assert main(["volumes", "--out", str(out), "--chunk", "2", *args]) == 0
    return open_store(make_location(str(out)))


@pytest.mark.parametrize("resize", [(), ("--resize", "2,3,4")])
def test_volume_input_is_loaded_and_written_in_time_blocks(tmp_path, monkeypatch, resize):
    _volume_input(tmp_path / "in.nc")
    args = ("--input", str(tmp_path / "in.nc"), *resize)
    whole = _build(tmp_path / "whole.zarr", *args)  # the default budget: one block
    loaded, appended = [], []
    load, append = xr.Dataset.load, FieldStoreStream.append

    def counting_load(self, *a, **kw):
        loaded.append(self.sizes.get("time", 0))
        return load(self, *a, **kw)

    def counting_append(self, block):
        appended.append(block.sizes["time"])
        return append(self, block)

    monkeypatch.setattr(xr.Dataset, "load", counting_load)
    monkeypatch.setattr(FieldStoreStream, "append", counting_append)
    monkeypatch.setattr(volumes, "BLOCK_BYTES", 2 * (2 * 3 * 4 * 6 * 8))  # two input steps
    streamed = _build(tmp_path / "streamed.zarr", *args)
    assert max(loaded) == 2 and appended == [2, 2, 2, 1]  # never the 7 steps at once
    assert streamed.num_signals == whole.num_signals == 7
    for m in ("temp", "salt"):
        assert streamed.info[m].norm == whole.info[m].norm
        np.testing.assert_array_equal(streamed.read(0, 7)[m], whole.read(0, 7)[m])
    np.testing.assert_array_equal(streamed.split, whole.split)


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, capsys):
    _volume_input(tmp_path / "in.nc", steps=3)
    _build(tmp_path / "quiet.zarr", "--input", str(tmp_path / "in.nc"))
    assert "build volumes" not in capsys.readouterr().err  # stderr is not a TTY here
    _build(tmp_path / "bar.zarr", "--input", str(tmp_path / "in.nc"), "--progress")
    err = capsys.readouterr().err
    assert "build volumes" in err and "3/3" in err and "step" in err
    era5_dataset(nt=4).to_netcdf(tmp_path / "era5.nc")
    build_store(tmp_path, tmp_path / "era5.nc", "--resolution", "10x20", name="q.zarr")
    assert "build era5" not in capsys.readouterr().err
    build_store(tmp_path, tmp_path / "era5.nc", "--resolution", "10x20", "--progress")
    err = capsys.readouterr().err
    assert "build era5" in err and "4/4" in err


def test_a_terminal_shows_the_bar_unless_no_progress(tmp_path, capsys, monkeypatch):
    _volume_input(tmp_path / "in.nc", steps=3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys' stderr, as a terminal
    _build(tmp_path / "tty.zarr", "--input", str(tmp_path / "in.nc"))
    assert "build volumes" in capsys.readouterr().err
    _build(tmp_path / "quiet.zarr", "--input", str(tmp_path / "in.nc"), "--no-progress")
    assert "build volumes" not in capsys.readouterr().err


def test_image_builders_count_images_read_and_resized(tmp_path, capsys):
    out = str(tmp_path / "d.zarr")
    assert main(["digits", "--out", out, "--size", "12", "--limit", "30", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "resize images" in err and "30/30" in err and "image" in err
    assert main(["digits", "--out", out, "--size", "12", "--limit", "30", "--overwrite"]) == 0
    assert "resize images" not in capsys.readouterr().err  # not a terminal, not asked
    folder = tmp_path / "folder"
    for sub in ("rgb", "gray"):
        (folder / sub).mkdir(parents=True)
        for name in "abc":
            pixels = np.full((9, 9), 90, np.uint8)
            imsave(folder / sub / f"{name}.png", pixels, check_contrast=False)
    argv = ["images", "--out", str(tmp_path / "i.zarr"), "--folder", str(folder), "--size", "4"]
    assert main([*argv, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "read rgb" in err and "read gray" in err and "3/3" in err

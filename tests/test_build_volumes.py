"""volumes builder: NIfTI, netCDF/Zarr and simulated volumes as (time, z, y, x) field stores."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from pipelines.data.builders.__main__ import main
from pipelines.data.stores import make_location, open_store

NONE = ("--normalisation", "none")


def _nifti(path, data, zooms=(2.0, 3.0, 4.0), tr=None):
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([*zooms, 1.0]))
    if tr is not None:
        img.header.set_zooms((*zooms, tr))
    nib.save(img, path)
    return str(path)


def _build(out, *args):
    assert main(["volumes", "--out", str(out), "--chunk", "4", *args]) == 0
    return open_store(make_location(str(out)))


def test_nifti_3d_volumes_are_time_steps(tmp_path):
    rng = np.random.default_rng(0)
    vols = [rng.random((6, 5, 4)) for _ in range(3)]  # (i, j, k) = (x, y, z)
    paths = [_nifti(tmp_path / f"v{i}.nii.gz", v) for i, v in enumerate(vols)]
    store = _build(tmp_path / "s.zarr", "--nifti", *paths, "--nifti-name", "t1", *NONE)
    assert store.modalities == ["t1"] and store.num_signals == 3
    info = store.info["t1"]
    assert info.grid_shape == (4, 5, 6) and info.channels == 1
    assert info.extent == [[0.0, 12.0], [0.0, 12.0], [0.0, 10.0]]  # (n - 1) * voxel size
    got = store.read(0, 3)["t1"]
    for t, v in enumerate(vols):
        np.testing.assert_allclose(got[t, :, 0], v.transpose(2, 1, 0).ravel(), rtol=1e-6)


def test_nifti_4d_time_axis_split_and_tr(tmp_path):
    data = np.arange(6 * 5 * 4 * 10, dtype=np.float32).reshape(6, 5, 4, 10)
    path = _nifti(tmp_path / "f.nii", data, tr=2.5)
    out = tmp_path / "s.zarr"
    store = _build(out, "--nifti", path)
    assert store.num_signals == 10 and store.chunk_size == 4
    assert np.bincount(store.split).tolist() == [8, 1, 1]
    vals = store.read(0, 10)["intensity"]
    train = vals[store.split == 0]
    assert train.min() == 0.0 and train.max() == 1.0
    times = xr.open_zarr(out, consolidated=False)["time"].values
    np.testing.assert_allclose(times, np.arange(10) * 2.5)


def test_nifti_grid_mismatch_needs_resize(tmp_path, capsys):
    a = _nifti(tmp_path / "a.nii", np.ones((6, 5, 4)))
    b = _nifti(tmp_path / "b.nii", np.ones((7, 5, 4)))
    assert main(["volumes", "--out", str(tmp_path / "s"), "--nifti", a, b]) == 2
    assert "--resize" in capsys.readouterr().err
    store = _build(tmp_path / "r.zarr", "--nifti", a, b, "--resize", "4,5,6")
    assert store.info["intensity"].grid_shape == (4, 5, 6) and store.num_signals == 2


def test_nibabel_example4d(tmp_path):
    from nibabel.testing import data_path

    path = Path(data_path) / "example4d.nii.gz"
    if not path.exists():
        pytest.skip("nibabel's example4d.nii.gz is not shipped")
    store = _build(tmp_path / "s.zarr", "--nifti", str(path), "--resize", "6,12,16")
    assert store.num_signals == 2 and store.info["intensity"].grid_shape == (6, 12, 16)
    assert np.isfinite(store.read(0, 2)["intensity"]).all()


@pytest.fixture
def ocean(tmp_path):
    rng = np.random.default_rng(1)
    shape = (5, 3, 4, 6)  # time, depth, lat, lon
    ds = xr.Dataset(
        {
            "temp": (("time", "depth", "lat", "lon"), rng.random(shape)),
            "salt": (("time", "depth", "lat", "lon"), 30 + rng.random(shape)),
            "mask": (("lat", "lon"), np.ones((4, 6))),
        },
        coords={"time": np.arange(5.0), "depth": [0.0, 10.0, 50.0], "lat": np.linspace(-30, 30, 4)},
    )
    return ds


def test_netcdf_input(ocean, tmp_path, capsys):
    src = tmp_path / "ocean.nc"
    ocean.to_netcdf(src)
    out = tmp_path / "s.zarr"
    store = _build(out, "--input", str(src), "--normalisation", "none")
    assert json.loads(capsys.readouterr().out)["variables"] == ["temp", "salt"]
    assert sorted(store.modalities) == ["salt", "temp"] and store.num_signals == 5
    assert store.info["temp"].grid_shape == (3, 4, 6)
    assert store.info["temp"].extent[:2] == [[0.0, 50.0], [-30.0, 30.0]]
    assert set(xr.open_zarr(out, consolidated=False).dims) == {"time", "z", "y", "x"}
    np.testing.assert_allclose(
        store.read(0, 5)["salt"][..., 0], ocean["salt"].values.reshape(5, -1), rtol=1e-6
    )
    only = _build(tmp_path / "t.zarr", "--input", str(src), "--variables", "temp")
    assert only.modalities == ["temp"]
    argv = ["volumes", "--out", str(tmp_path / "u"), "--input", str(src), "--variables", "nope"]
    assert main(argv) == 2
    assert "nope" in capsys.readouterr().err


def test_zarr_input_with_resize(ocean, tmp_path):
    src = tmp_path / "ocean.zarr"
    ocean.to_zarr(src, zarr_format=3, consolidated=False)
    store = _build(tmp_path / "s.zarr", "--input", str(src), "--resize", "2,3,4")
    assert store.info["salt"].grid_shape == (2, 3, 4) and store.num_signals == 5
    assert store.info["salt"].extent[0] == [0.0, 50.0]


def _sim(out, *args):
    return _build(out, "--simulate", "gray-scott", "--size", "32", "--steps", "6", *args)


def test_gray_scott_deterministic_and_dynamic(tmp_path):
    args = ("--record-every", "40", "--normalisation", "none")
    a = _sim(tmp_path / "a.zarr", *args, "--seed", "1").read(0, 6)
    b = _sim(tmp_path / "b.zarr", *args, "--seed", "1").read(0, 6)
    c = _sim(tmp_path / "c.zarr", *args, "--seed", "2").read(0, 6)
    assert set(a) == {"u", "v"} and a["u"].shape == (6, 32**3, 1)
    np.testing.assert_array_equal(a["u"], b["u"])
    np.testing.assert_array_equal(a["v"], b["v"])
    assert not np.allclose(a["v"], c["v"])
    for m in ("u", "v"):
        assert np.isfinite(a[m]).all()
        steps = np.abs(np.diff(a[m], axis=0)).mean((1, 2))
        assert (steps > 1e-4).all()  # every recorded frame moved
        assert a[m][-1].std() > 0.01  # spatial structure, not a uniform state
    assert -0.05 <= a["u"].min() and a["u"].max() <= 1.05 and a["v"].min() >= -0.05


def test_abc_flow(tmp_path):
    store = _build(
        tmp_path / "f.zarr", "--simulate", "abc-flow", "--size", "8", "--steps", "5", "--seed", "4"
    )
    assert sorted(store.modalities) == ["u", "v", "w"] and store.num_signals == 5
    vals = store.read(0, 5)
    assert not np.allclose(vals["u"][0], vals["u"][-1])
    assert np.abs(store.info["u"].extent[0][1] - 2 * np.pi * 7 / 8) < 1e-9

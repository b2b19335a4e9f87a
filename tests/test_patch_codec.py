"""Patch-wise encoding and stitched decoding (issue 32): tiles, placement, codes, resample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from mia_core.config import load_config
from mia_core.meta.codes import codes_to_params
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encode import run_encode
from pipelines.codecs.encode_spec import EncodeSpec
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.patch_codes import PatchGrid, positions_for
from pipelines.codecs.report import ReportSpec, run_report
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.field_writer import split_by_time, write_field_store
from pipelines.data.stores.patches import PatchStore
from pipelines.data.stores.reader import grid_coords
from pipelines.engine.memory_estimate import encode_estimate
from pipelines.jobs import train

T, NLAT, NLON, P = 6, 20, 28, 8  # 3 x 4 patches of 8 x 8 per step, last row/column partial


def fields() -> xr.Dataset:
    """Two smooth moving fields, descending latitude, datetimes."""
    lat, lon = np.linspace(60.0, 20.0, NLAT), np.linspace(0.0, 90.0, NLON)
    t = np.arange(T)[:, None, None]
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    a = 280 + 10 * np.sin(4 * la + 0.3 * t) * np.cos(3 * lo - 0.2 * t)
    b = 1000 + 50 * np.cos(5 * la - 0.1 * t) * np.sin(2 * lo)
    times = np.datetime64("2020-01-01T00") + np.arange(T) * np.timedelta64(6, "h")
    dims = ("time", "latitude", "longitude")
    return xr.Dataset(
        {"t2m": (dims, a.astype(np.float32)), "sp": (dims, b.astype(np.float32))},
        coords={"time": times, "latitude": lat, "longitude": lon},
    )


def write_store(path: str) -> str:
    write_field_store(fields(), make_location(path), chunk_time=3,
                      split=split_by_time(T, 0.2, 0.2), patch=(P, P))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("patchcodec")
    store = write_store(str(root / "f.zarr"))
    cfg = load_config(
        "configs/experiments/meta_inr_patch_era5.yaml",
        [
            f"data.store={store}",
            "data.modalities=[t2m, sp]",
            f"data.patch=[{P}, {P}]",
            "model.width=16",
            "model.depth=2",
            "method.inner_steps=2",
            "run.steps=2",
            "run.batch_size=4",
            "run.eval_every=2",
            "run.checkpoint_every=2",
            "run.eval_batch_size=4",
            "run.matmul_precision=highest",
            f"run.out_dir={root / 'runs'}",
        ],
    )
    res = train(cfg, local=True, log=lambda _s: None)
    return {"root": root, "store": store, "run_dir": str(res.run_dir)}


def spec(run, out, **kw) -> EncodeSpec:
    base = dict(
        store=run["store"], checkpoint=run["run_dir"], out=str(out), steps=6, optimizer="adam",
        lr=1e-2, code_dtype="int8", batch_size=5, progress=False, larger_codes="warn",
    )  # fmt: skip
    return EncodeSpec(**{**base, **kw})


@pytest.mark.parametrize("grid,patch", [((20, 28), (8, 8)), ((5, 7, 9), (2, 3, 4))])
def test_untile_inverts_the_patch_store_tiles(tmp_path, grid, patch):
    ps = PatchStore(open_store(make_location(write_store(str(tmp_path / "s.zarr")))), [P, P])
    g = PatchGrid(tuple(patch), tuple(grid))
    ps.grid, ps.patch, ps.counts, ps.per_step = g.grid, g.patch, g.counts, g.per_step
    x = np.random.default_rng(0).standard_normal((3, int(np.prod(grid)), 2)).astype(np.float32)
    tiles = ps.tiles(x)
    assert tiles.shape == (3 * g.per_step, int(np.prod(patch)), 2)
    np.testing.assert_array_equal(g.untile(tiles), x)


def test_placement_covers_every_output_point_once_at_the_fitted_coordinates():
    g = PatchGrid((8, 8), (20, 28))
    coords, target, shape = g.placement([positions_for(n, None) for n in g.grid])
    assert tuple(shape) == (20, 28) and coords.shape == (12, 64, 2)
    hit = np.sort(target[target >= 0])
    np.testing.assert_array_equal(hit, np.arange(20 * 28))  # each point exactly once
    np.testing.assert_allclose(coords[0], grid_coords((8, 8)), atol=1e-6)  # the fitted frame
    assert (target[-1] >= 0).sum() == 4 * 4  # bottom-right patch: 4 x 4 cells of the grid
    fine, tfine, fshape = g.placement([positions_for(n, 2 * n - 1) for n in g.grid])
    assert tuple(fshape) == (39, 55)
    np.testing.assert_array_equal(np.sort(tfine[tfine >= 0]), np.arange(39 * 55))
    assert np.abs(fine).max() <= 1.0 + 2.0 / 7 + 1e-6  # at most one cell of extrapolation


def test_patch_codes_encode_decode_and_resample(patch_run, tmp_path):
    out = tmp_path / "codes.zarr"
    s = run_encode(spec(patch_run, out), log=lambda _s: None, local=True)
    assert (s.encoded, s.done) == (T, T)
    group = zarr.open_group(str(out), mode="r")
    attrs = group.attrs["mia_codes"]
    assert attrs["patches_per_step"] == 12 and attrs["patch"]["patch"] == [P, P]
    # closed-form heads: a patch's code is each variable's last layer (16 weights + bias)
    assert attrs["mode"] == "head" and attrs["code_dim"] == 2 * (16 + 1)
    assert group["codes"].shape == (T, 12, attrs["code_dim"]) and group["codes"].dtype == np.int8
    assert group["code_scale"].shape[:2] == (T, 12)
    # compression counts every patch's code
    assert s.compression_codes == pytest.approx(
        attrs["raw_bytes_per_step"] / (12 * (attrs["code_dim"] + 4 * attrs["code_scales"]))
    )
    dec = Decoder(make_location(str(out)))
    ds = dec.decode()
    truth = fields().sortby("latitude")
    assert ds["t2m"].shape == (T, NLAT, NLON) and not np.isnan(ds["t2m"].values).any()
    # the decoded fields score what the encoder recorded (same codes, same points)
    for i, v in enumerate(["t2m", "sp"]):
        lo, hi = float(truth[v].min()), float(truth[v].max())
        mse = (((ds[v].values - truth[v].values) / (hi - lo)) ** 2).mean(axis=(1, 2))
        rec = np.asarray(group["mse"][:, i])
        np.testing.assert_allclose(mse, rec, rtol=2e-3)
    # patch (1, 2) of step 4, evaluated directly, is what the decoder placed there
    codes = torch.from_numpy(np.asarray(dec.group["codes"][4]).astype(np.float32))
    scale = torch.from_numpy(np.asarray(dec.group["code_scale"][4]))
    from pipelines.codecs.quantise import dequantise

    sizes = [int(np.prod(e["shape"])) for e in attrs["code_layout"]]
    params = codes_to_params(dec.model.learner, dequantise(codes, scale, sizes))
    x = torch.from_numpy(grid_coords((P, P)))[None]
    one = {k: v[6:7] for k, v in params.items()}  # patch 6 = row 1, column 2
    pred = dec.model.learner.predict("t2m", x, one)[0, :, 0].detach().numpy().reshape(P, P)
    norm = attrs["variable_info"]["t2m"]["norm"]
    from pipelines.data.stores.writer import invert_norm

    want = invert_norm(pred[..., None].astype(np.float64), norm)[..., 0]
    np.testing.assert_allclose(ds["t2m"].values[4, 8:16, 16:24], want, rtol=1e-5, atol=1e-3)
    # any resolution: a (2n - 1) grid holds the original grid's points at even indices
    fine = dec.decode([2], resolution=(2 * NLAT - 1, 2 * NLON - 1))
    assert not np.isnan(fine["sp"].values).any()
    np.testing.assert_allclose(
        fine["sp"].values[0, ::2, ::2], ds["sp"].values[2], rtol=1e-5, atol=1e-2
    )
    # resume: a rerun has nothing left to do
    again = run_encode(spec(patch_run, out), log=lambda _s: None, local=True)
    assert (again.encoded, again.skipped) == (0, T)
    # `encode report` (whole-field fits) refuses patch codes in one line
    with pytest.raises(EncodeError, match="does not read patch codes"):
        run_report(ReportSpec(codes=str(out)), log=lambda _s: None)


def test_patch_encode_refuses_chain_length_and_bounds_memory_by_the_patch(patch_run, tmp_path):
    with pytest.raises(EncodeError, match="chain_length"):
        run_encode(spec(patch_run, tmp_path / "c.zarr", chain_length=3), log=lambda _s: None,
                   local=True)  # fmt: skip
    cfg = load_config("configs/experiments/meta_inr_patch_era5.yaml")
    # a store of 16 x the grid: the autograd graph term of a patch batch must not grow
    small = open_store(make_location(patch_run["store"]))
    est = [encode_estimate(spec(patch_run, "x"), cfg, small, 1000, 1, PatchStore(small, [P, P]), 5)]
    bigger = write_store_big(tmp_path / "big.zarr")
    est.append(encode_estimate(spec(patch_run, "x"), cfg, bigger, 1000, 1,
                               PatchStore(bigger, [P, P]), 5))  # fmt: skip
    assert est[0].terms["graph"] == est[1].terms["graph"]


def write_store_big(path) -> object:
    ds = fields()
    big = ds.interp(
        latitude=np.linspace(60.0, 20.0, 4 * NLAT), longitude=np.linspace(0.0, 90.0, 4 * NLON)
    )
    write_field_store(big, make_location(str(path)), chunk_time=3,
                      split=split_by_time(T, 0.2, 0.2), patch=(P, P))  # fmt: skip
    return open_store(make_location(str(path)))

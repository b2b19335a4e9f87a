"""Rate-distortion curves of ZFP / SZ3 / lossless and the shared quality metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
import zfpy

from mia_core.meta.metrics import masked_mse, psnr
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rate_distortion import (
    DEFAULT_REL_BOUNDS,
    LOSSLESS,
    compress_fields,
    compressor_curve,
    lossless_point,
    pareto_front,
    plot_rd,
)
from pipelines.codecs.rd_metrics import (
    Geometry,
    RDFields,
    latitude_weights,
    quality,
    read_fields,
    store_geometry,
)
from pipelines.data.stores import make_location
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.reader import open_store

LAT = np.linspace(-80.0, 80.0, 16)
SCALE = 40.0  # physical units (K) per normalised unit


def climate() -> RDFields:
    """16 x 24 smooth lat-lon field x 3 steps, a missing corner, 40 K per unit."""
    la, lo = np.meshgrid(np.deg2rad(LAT), np.linspace(0, 2 * np.pi, 24), indexing="ij")
    steps = [0.5 + 0.3 * np.sin(2 * lo + t) * np.cos(la) + 0.1 * np.cos(3 * la) for t in range(3)]
    f = np.stack(steps)[:, None].astype(np.float32)
    f[:, :, :3, :4] = np.nan
    geo = Geometry(latitude_weights(LAT, (16, 24)), np.array([SCALE]), "K", "cos(latitude)")
    return RDFields({"t2m": f}, {"t2m": geo}, 1.0)


def volume() -> RDFields:
    z, y, x = np.meshgrid(*[np.linspace(0, 1, 8)] * 3, indexing="ij")
    f = np.stack([np.sin(3 * x + t) * np.cos(2 * y) * z for t in range(2)])[:, None]
    return RDFields({"rho": f.astype(np.float32)}, {}, 2.0)


@pytest.mark.parametrize("name", ["zfp", "sz3", "sz3_series"])
def test_ratio_grows_and_psnr_falls_as_the_bound_grows(name):
    fields = climate()
    curve = compressor_curve(name, fields)
    assert len(curve) >= len(DEFAULT_REL_BOUNDS)
    assert curve[0]["rel_bound"] == pytest.approx(1e-5) and curve[13]["rel_bound"] >= 0.5
    ratio = [p["ratio"] for p in curve]
    db = [p["psnr"] for p in curve]
    # SZ3 at tiny bounds stores losslessly (its ratio wobbles there): the trend, not each step
    assert all(b >= 0.85 * a for a, b in zip(ratio, ratio[1:], strict=False))
    assert ratio[-1] > 2.5 * ratio[0]
    assert all(b <= a + 0.5 for a, b in zip(db, db[1:], strict=False))
    assert db[0] - db[-1] > 40
    for p in curve:
        assert p["bits_per_value"] == pytest.approx(32 / p["ratio"])
    json.loads(json.dumps(curve))  # plain floats, dicts and lists


@pytest.mark.parametrize("name", ["zfp", "sz3", "sz3_series"])
@pytest.mark.parametrize("make", [climate, volume])
def test_max_abs_error_within_the_bound_in_physical_units(name, make):
    fields = make()
    for p in compressor_curve(name, fields, [fields.span * r for r in (1e-4, 1e-2, 0.2)]):
        for v, scale in ((v, float(g.scale.max())) for v, g in fields.geometry.items()):
            assert p["max_abs"][v] == pytest.approx(p["max_abs_normalised"][v] * scale)
            assert p["bound_physical"][v] == pytest.approx(p["bound"] * scale)
            assert p["max_abs"][v] <= p["bound_physical"][v] * (1 + 1e-4) + 1e-6 * scale
            assert p["max_abs"][v] > 0  # lossy at these bounds: the check can fail


def test_compressors_see_natural_2d_and_3d_arrays():
    clim, vol = climate(), volume()
    zfp = compress_fields("zfp", clim, 1e-3)
    assert len(zfp.blobs) == 3  # one per (time step, variable, level)
    assert {zfpy.decompress_numpy(b).shape for b in zfp.blobs} == {(16, 24)}
    zfp_vol = compress_fields("zfp", vol, 1e-3)
    assert {zfpy.decompress_numpy(b).shape for b in zfp_vol.blobs} == {(8, 8, 8)}
    assert set(compress_fields("sz3", clim, 1e-3).shapes) == {(16, 24)}
    assert compress_fields("sz3_series", clim, 1e-3).shapes == [(3, 16, 24)]
    assert compress_fields("sz3_series", vol, 1e-3).shapes == [(2, 8, 8, 8)]
    with pytest.raises(EncodeError, match="compressor 'lz4'"):
        compress_fields("lz4", clim, 1e-3)


def test_missing_points_are_mean_filled_and_left_out_of_the_errors():
    fields = climate()
    back = compress_fields("sz3", fields, 1e-6).decoded["t2m"]
    ref = fields.values["t2m"]
    ok = fields.valid["t2m"]
    assert not ok[:, :3, :4].any() and ok[:, 3:, 4:].all()
    for t in range(3):  # the hole comes back as the step's mean, not zero
        np.testing.assert_allclose(back[t, 0][~ok[t]], np.nanmean(ref[t, 0]), atol=1e-5)
    garbage = np.where(ok[:, None], ref, 1e6)
    q = fields.score({"t2m": garbage})
    assert q["psnr"] == pytest.approx(200.0) and q["max_abs"]["t2m"] == 0.0


def test_area_weights_count_a_high_latitude_error_less():
    fields = climate()
    ref = fields.values["t2m"]
    rmse = {}
    for name, row in (("equator", 7), ("north", 15)):
        dec = ref.copy()
        dec[:, 0, row, 10] += 0.1
        q = fields.score({"t2m": dec})
        rmse[name] = q["rmse"]["t2m"]
        w = fields.geometry["t2m"].weights * fields.valid["t2m"]
        want = math.sqrt(3 * w[0, row, 10] * (0.1 * SCALE) ** 2 / w.sum())
        assert rmse[name] == pytest.approx(want, rel=1e-4)
        assert q["max_abs"]["t2m"] == pytest.approx(0.1 * SCALE, rel=1e-4)
    assert rmse["north"] < 0.5 * rmse["equator"]  # cos(80) / cos(5) ~ 0.17 of the weight
    uniform = RDFields(climate().values)
    assert uniform.geometry["t2m"].weights.min() == 1.0


def test_psnr_is_the_encoders():
    rng = np.random.default_rng(0)
    ref = {"a": rng.random((3, 2, 5, 6)), "b": rng.random((3, 1, 5, 6))}
    ref["a"][1, 1, 2, 3] = np.nan  # one level missing: the point is invalid for both levels
    ref["b"][2] = np.nan  # no valid point: NaN, skipped in the mean over variables
    dec = {k: v + rng.normal(0, 0.01 * (i + 1), v.shape) for i, (k, v) in enumerate(ref.items())}
    fields = RDFields(ref, {}, 2.0)
    q = fields.score(dec)
    want = []
    for k in ref:  # mia_core's metrics on (T, P, C) rows, as the encoder scores a batch
        rows = torch.from_numpy(np.nan_to_num(ref[k]).reshape(3, ref[k].shape[1], -1))
        ok = torch.from_numpy(np.isfinite(ref[k]).all(1).reshape(3, -1)).double()
        pred = torch.from_numpy(np.nan_to_num(dec[k]).reshape(3, ref[k].shape[1], -1))
        mse = masked_mse(pred.transpose(1, 2), rows.transpose(1, 2), ok)
        want.append(torch.where(ok.sum(1) > 0, psnr(mse, 2.0), torch.nan).numpy())
    per_step = np.nanmean(np.stack(want, 1), 1)
    np.testing.assert_allclose(q["psnr_per_step"], per_step, rtol=1e-6)  # float32 values
    assert q["psnr"] == pytest.approx(per_step.mean())
    assert q["psnr_per_variable"]["b"] == pytest.approx(np.nanmean(want[1]))


def test_quality_is_the_same_function_for_any_decoder():
    fields = climate()
    dec = {"t2m": fields.values["t2m"] + 0.01}
    direct = quality(
        fields.values, dec, fields.valid, {"t2m": fields.geometry["t2m"].weights},
        {"t2m": SCALE}, 1.0,
    )  # fmt: skip
    assert direct == fields.score(dec)
    assert direct["rmse"]["t2m"] == pytest.approx(0.01 * SCALE, rel=1e-4)


def test_store_geometry_reads_latitude_and_normalisation(tmp_path):
    lat = np.array([60.0, 0.0, -60.0])  # stored descending: the reader flips it
    lon = np.arange(4) * 90.0
    temp = 250.0 + 30.0 * np.random.default_rng(0).random((4, 3, 4))
    ds = xr.Dataset(
        {"t": (("time", "lat", "lon"), temp, {"units": "K"})},
        coords={"lat": lat, "lon": lon},
    )
    loc = make_location(str(tmp_path / "f.zarr"))
    write_field_store(ds, loc, chunk_time=2)
    store = open_store(loc)
    geo = store_geometry(store, "t")
    assert geo.weighting == "cos(latitude)" and geo.units == "K"
    np.testing.assert_allclose(geo.weights[:, 0], [0.5, 1.0, 0.5])
    norm = store.info["t"].norm  # minmax01 over the training steps
    assert geo.scale.tolist() == pytest.approx([norm["max"][0] - norm["min"][0]])
    fields = read_fields(store, [0, 2])
    assert fields.values["t"].shape == (2, 1, 3, 4)
    # a normalised error times the scale is the physical error
    back = fields.values["t"] * geo.scale[0] + norm["min"][0]
    np.testing.assert_allclose(back[1, 0], temp[2, ::-1], rtol=1e-5)
    with pytest.raises(EncodeError, match="degrees"):
        latitude_weights(np.array([0.0, 100.0, 200.0]), (3, 4))


def test_lossless_roundtrip_is_exact():
    fields = climate()
    points = lossless_point(fields)
    assert [p["codec"] for p in points] == list(LOSSLESS)
    for p in points:
        assert p["exact"] and p["psnr"] == math.inf and p["ratio"] > 1.0
    raw = fields.values["t2m"].tobytes()  # NaNs included
    for make in LOSSLESS.values():
        compress, decompress = make()
        blob = compress(raw)
        assert decompress(blob) == raw and len(blob) < len(raw)


def test_pareto_front_drops_dominated_points(tmp_path):
    pts = [
        {"ratio": 10.0, "psnr": 30.0},
        {"ratio": 5.0, "psnr": 40.0},
        {"ratio": 8.0, "psnr": 29.0},  # beaten by (10, 30)
        {"ratio": 5.0, "psnr": 35.0},  # beaten by (5, 40)
        {"ratio": 20.0, "psnr": 20.0},
        {"ratio": 10.0, "psnr": 30.0},  # a duplicate: kept once
        {"ratio": float("nan"), "psnr": 50.0},
    ]
    front = pareto_front(pts)
    assert [(p["ratio"], p["psnr"]) for p in front] == [(5, 40), (10, 30), (20, 20)]
    fields = climate()
    curves = {
        "zfp": compressor_curve("zfp", fields, [1e-3, 1e-2, 1e-1]),
        "lossless": lossless_point(fields),
        "codes": pts[:5],
    }
    png = plot_rd(curves, tmp_path / "rd.png")
    assert png.stat().st_size > 1000

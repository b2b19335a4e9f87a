"""Climate metrics: cos(latitude) weights, area-weighted RMSE in physical units, weighted EOFs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import xarray as xr

from mia_core.builders import build_learner
from mia_core.config import load_config
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.resolve import modality_dims
from pipelines.data.stores import StoreError, make_location, open_store
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.geometry import latitude_weights, point_weights, store_geometry
from pipelines.data.stores.patches import open_patched
from pipelines.data.stores.writer import invert_norm, norm_affine
from pipelines.data.streams import store_episodes
from pipelines.reports.eof_reference import eof_basis, eof_fit_nmse
from pipelines.reports.evaluation import evaluate, markdown_table, write_csv
from pipelines.reports.reference import mean_signal_nmse
from tests.tiny_configs import TINY_META_MODEL

LAT = np.array([60.0, 30.0, 0.0, -30.0, -60.0])  # stored descending: the reader flips it
LON = np.arange(8) * 45.0 - 180.0  # -180..135: the input's convention is kept
SPLIT = np.array([0, 0, 0, 0, 0, 1, 2, 2], np.int8)
COS = np.cos(np.deg2rad(LAT[::-1]))  # per row, as the reader returns the grid (ascending)


def _dataset(rng: np.random.Generator, lat: bool = True) -> xr.Dataset:
    t = 250.0 + 30.0 * rng.random((8, 5, 8))
    t[:, 4, 0] = np.nan  # a missing point (stored first row: read last), never scored
    u = 10.0 * rng.normal(size=(8, 2, 5, 8))  # two levels: stays normalised, "1"
    y, x = ("lat", "lon") if lat else ("y", "x")
    coords = {"lat": LAT, "lon": LON} if lat else {}
    return xr.Dataset(
        {
            "t": (("time", y, x), t, {"units": "K", "standard_name": "air_temperature"}),
            "u": (("time", "level", y, x), u, {"units": "m s-1"}),
        },
        coords=coords,
    )


def _store(tmp_path, lat: bool = True, patch: tuple[int, ...] = ()):
    ds = _dataset(np.random.default_rng(0), lat)
    loc = make_location(str(tmp_path / f"f{int(lat)}{len(patch)}.zarr"))
    write_field_store(ds, loc, chunk_time=4, split=SPLIT, patch=patch)
    store = open_patched(loc, None, patch) if patch else open_store(loc)
    return store, ds


def _truth(ds: xr.Dataset, m: str, step: int) -> np.ndarray:
    """``(P, C)`` physical values of a step as the reader orders them (latitude ascending)."""
    a = ds[m].values[step]
    a = a[None] if a.ndim == 2 else a  # (C, lat, lon)
    return np.moveaxis(a[:, ::-1] if "lat" in ds[m].dims else a, 0, -1).reshape(-1, a.shape[0])


def _learner(store):
    cfg = load_config(None, [*TINY_META_MODEL, "method.name=cavia"])
    torch.manual_seed(0)
    return build_learner(cfg.model, cfg.method, modality_dims(store)).eval()


def test_latitude_weights_on_a_known_grid():
    w = latitude_weights(np.array([0.0, 60.0, -60.0, 90.0]), (4, 3))
    np.testing.assert_allclose(w[:, 0], [1.0, 0.5, 0.5, 0.0], atol=1e-12)
    assert w.shape == (4, 3) and (w == w[:, :1]).all()
    with pytest.raises(StoreError, match="degrees"):
        latitude_weights(np.array([0.0, 1.5, 3.0]) * 100, (3, 4))  # not degrees north


def test_store_geometry_of_field_and_patch_stores(tmp_path):
    store, _ = _store(tmp_path)
    t, u = store_geometry(store, "t"), store_geometry(store, "u")
    assert (t.weighting, t.units, u.units) == ("cos(latitude)", "K", "m s-1")
    np.testing.assert_allclose(t.weights[:, 0], COS)  # flipped with the grid
    np.testing.assert_allclose(u.scale, norm_affine(store.info["u"].norm)[1])
    assert u.scale.shape == (2,)
    assert point_weights(store, "t").shape == (1, 40)
    flat, _ = _store(tmp_path, lat=False)
    assert store_geometry(flat, "t").weighting == "uniform"
    assert (point_weights(flat, "t") == 1.0).all()
    # patches of 3 x 4: rows 0-2 and 3-5 (row 5 past the grid: weight 0)
    patched, _ = _store(tmp_path, patch=(3, 4))
    pw = point_weights(patched, "t")
    assert pw.shape == (4, 12)
    rows = np.concatenate([COS, [0.0]])
    for p in range(4):
        np.testing.assert_allclose(
            pw[p].reshape(3, 4), np.repeat(rows[3 * (p // 2) :][:3, None], 4, 1)
        )


def _hand(store, ds, learner, bins, repeats, seed, weights_of):
    """Per modality: sqrt of the mean per-signal weighted physical MSE, and weighted nMSE."""
    full = (min(b[0] for b in bins), max(b[1] for b in bins))
    spec = EpisodeSpec({m: full for m in store.modalities}, seed, 1, store.location.display)
    order = np.flatnonzero(store.split == 2)
    phys: dict[str, list[float]] = {m: [] for m in store.modalities}
    norm: dict[str, list[float]] = {m: [] for m in store.modalities}
    for r in range(repeats):
        done = 0
        for ep in store_episodes(store, spec, 1, "test", epoch=r, shuffle=False):
            _, preds = learner.evaluate(ep)
            i = int(order[done])
            done += 1
            for m, pred in preds.items():
                info = store.info[m]
                p = invert_norm(pred[0].double().numpy(), info.norm)
                truth = weights_of(ds, m, i)[0]
                w = weights_of(ds, m, i)[1]
                ok = np.isfinite(truth).all(-1)
                se = ((p - truth) ** 2).mean(-1)
                phys[m].append(float((se * w)[ok].sum() / w[ok].sum()))
                y = ep[m].query_y[0].double().numpy()
                sen = ((pred[0].double().numpy() - y) ** 2).mean(-1)
                norm[m].append(float((sen * w)[ok].sum() / w[ok].sum()))
    return (
        {m: math.sqrt(np.mean(v)) for m, v in phys.items()},
        {m: float(np.mean(v)) for m, v in norm.items()},
    )


def test_evaluation_gives_area_weighted_rmse_in_physical_units(tmp_path):
    store, ds = _store(tmp_path)
    learner = _learner(store)
    bins = [(0.05, 1.0)]
    rows = evaluate(learner, store, "test", bins, 2, 1, 3, torch.device("cpu"))

    def whole(ds, m, step):
        return _truth(ds, m, step), np.repeat(COS, 8)

    rmse, nmse = _hand(store, ds, learner, bins, 2, 3, whole)
    for r in rows:
        assert (r.weighting, r.count) == ("cos(latitude)", 2 * 2)
        assert r.units == {"t": "K", "u": "m s-1"}[r.modality]
        assert r.metrics["rmse_phys_all"] == pytest.approx(rmse[r.modality], rel=1e-4)
        assert r.metrics["nmse_area_all"] == pytest.approx(nmse[r.modality], rel=1e-4)
        assert r.metrics["psnr_area_all"] == pytest.approx(
            -10 * np.log10(nmse[r.modality]), rel=0.05
        )  # mean of per-signal PSNRs vs PSNR of the mean
        assert r.metrics["nmse_area_all"] != pytest.approx(r.metrics["nmse_all"], rel=1e-6)
        for region in ("support", "nonsupport"):
            assert math.isfinite(r.metrics[f"rmse_phys_{region}"])
    table = markdown_table(rows, "nmse_all", 100.0)
    assert "| rmse all (cos(latitude) weights) |" in table
    assert "| t (K) |" in table and "| u (m s-1) |" in table  # units beside the modality
    signals = table.split("\n\n")[-1].splitlines()
    assert signals[0].startswith("| signals |") and signals[2] == "| t | 4 |"
    assert "| psnr all (cos(latitude) weights) |" in markdown_table(rows, "psnr_all")
    write_csv(rows, tmp_path / "r.csv")
    line = next(csv.DictReader(open(tmp_path / "r.csv")))
    assert line["units"] == "K" and float(line["rmse_phys_all"]) == pytest.approx(rmse["t"])


def test_uniform_grids_give_the_paper_metrics(tmp_path):
    store, _ = _store(tmp_path, lat=False)
    rows = evaluate(_learner(store), store, "test", [(0.05, 1.0)], 1, 2, 3, torch.device("cpu"))
    for r in rows:
        assert r.weighting == "uniform"
        for region in ("all", "support", "nonsupport"):
            m = r.metrics
            assert m[f"nmse_area_{region}"] == pytest.approx(m[f"nmse_{region}"], rel=1e-5)
            assert m[f"psnr_area_{region}"] == pytest.approx(m[f"psnr_{region}"], rel=1e-5)
    assert "weights)" not in markdown_table(rows, "psnr_all")


def test_patch_signals_weigh_their_own_latitudes(tmp_path):
    store, ds = _store(tmp_path, patch=(3, 4))
    learner = _learner(store)
    rows = evaluate(learner, store, "test", [(0.2, 1.0)], 1, 1, 3, torch.device("cpu"))
    lat_rows = np.concatenate([COS, [np.nan]])

    def patch(ds, m, signal):
        step, p = divmod(signal, 4)
        a, b = 3 * (p // 2), 4 * (p % 2)
        full = _truth(ds, m, step).reshape(5, 8, -1)
        truth = np.full((3, 4, full.shape[-1]), np.nan)
        truth[: min(3, 5 - a)] = full[a : a + 3, b : b + 4]
        w = np.nan_to_num(np.repeat(lat_rows[a : a + 3], 4))
        return truth.reshape(12, -1), w

    rmse, _ = _hand(store, ds, learner, [(0.2, 1.0)], 1, 3, patch)
    for r in rows:
        assert r.metrics["rmse_phys_all"] == pytest.approx(rmse[r.modality], rel=1e-4)


def test_eof_basis_is_the_svd_of_sqrt_weighted_anomalies():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(7, 10, 1))
    w = np.linspace(0.1, 1.0, 10)
    mean, basis = eof_basis(train, 2, w)
    _, _, vt = np.linalg.svd((train - train.mean(0))[..., 0] * np.sqrt(w), full_matrices=False)
    for j in range(2):
        got, want = basis[1 + j, :, 0], vt[j] / np.sqrt(w)
        assert min(np.abs(got - want).max(), np.abs(got + want).max()) < 1e-10
    _, plain = eof_basis(train, 2)
    assert np.abs(np.abs(plain[1]) - np.abs(basis[1])).max() > 1e-3  # weighting matters


def test_references_score_area_weighted_errors(tmp_path):
    store, _ = _store(tmp_path)
    values = {m: store.read(0, 8)[m].astype(np.float64) for m in store.modalities}
    w = np.repeat(COS, 8)
    eof = eof_fit_nmse(store, [(1.0, 1.0)], k=0, repeats=2)  # every point is support
    ref = mean_signal_nmse(store)
    for m, x in values.items():
        mean = np.nanmean(x[:5], 0)
        fit, meanref = [], []
        for i in (6, 7):
            a = x[i] - np.where(np.isfinite(mean), mean, 0.0)
            ok = np.isfinite(a).all(-1)
            offset = (a * w[:, None])[ok].sum(0) / w[ok].sum()  # weighted least squares
            fit.append(((a - offset) ** 2).mean(-1)[ok] @ w[ok] / w[ok].sum())
            meanref.append(((x[i] - mean) ** 2).mean(-1)[ok] @ w[ok] / w[ok].sum())
        assert eof[m][0] == pytest.approx(np.mean(fit), rel=1e-9)
        assert ref[m] == pytest.approx(np.mean(meanref), rel=1e-9)
        unweighted = np.mean([((x[i] - mean) ** 2)[np.isfinite(x[i])].mean() for i in (6, 7)])
        assert ref[m] != pytest.approx(unweighted, rel=1e-6)

"""Classical reference rows: EOF, multivariate EOF, GP, linear and nearest on tiny stores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from mia_core.config import ConfigError, load_config
from pipelines.data.resolve import build_synthetic_store, open_training_store
from pipelines.data.stores import ModalityData, make_location, open_store, write_signal_store
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.store_base import reset_served_splits, served_splits
from pipelines.reports.classical import EvalProtocol, fit_classical
from pipelines.reports.classical_base import grid_points
from pipelines.reports.classical_cells import ClassicalRows, cell_text, cells_from_rows
from pipelines.reports.evaluation import evaluate
from pipelines.reports.reference import mean_signal_nmse
from pipelines.studies.reproduce import classical_reference, study_configs, write_results
from pipelines.studies.reproduce_report import study_bins, write_table1
from pipelines.studies.reproduce_spec import load_reproduce

TINY = "configs/reproduce/tiny.yaml"
LAT = np.linspace(50.0, 10.0, 8)  # stored descending: the reader flips it
LON = np.linspace(-140.0, -52.5, 10)  # a regional grid keeps negative longitudes


def _patterns(lat=LAT, lon=LON):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    e1 = np.cos(np.deg2rad(la)) * np.sin(np.deg2rad(3 * lo))
    e2 = np.sin(np.deg2rad(4 * la)) * np.cos(np.deg2rad(2 * lo))
    return e1, e2


def _field_store(path, fields: dict, split, lat=LAT, lon=LON):
    n = len(split)
    ds = xr.Dataset(
        {v: (("time", "lat", "lon"), x.astype(np.float32)) for v, x in fields.items()},
        coords={"time": np.arange(n), "lat": lat, "lon": lon},
    )
    write_field_store(
        ds, make_location(str(path)), chunk_time=8, split=np.asarray(split, np.int8),
        normalisation="none",
    )  # fmt: skip
    return open_store(make_location(str(path)))


def _split(train, val, test):
    return [0] * train + [1] * val + [2] * test


def _nmse(rows, method, modality):
    vals = [r.metrics["nmse_all"] for r in rows if r.method == method and r.modality == modality]
    return float(np.nanmean(vals))


def _two_eof_store(tmp_path, coef):
    """Variables ``a`` and ``b``: each a mean plus the same 2 coefficients on its 2 EOFs."""
    e1, e2 = _patterns()
    a = 1.0 + coef[:, :1, None] * e1 + coef[:, 1:, None] * e2
    b = -2.0 + 0.5 * coef[:, :1, None] * e2 - 2.0 * coef[:, 1:, None] * e1
    return _field_store(tmp_path / "two.zarr", {"a": a, "b": b}, _split(30, 5, 5))


def test_eof_rows_recover_a_mean_plus_two_eofs_from_a_few_points(tmp_path):
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(40, 2)) * [2.0, 1.0]
    coef[-5:] *= 3.0  # test amplitudes beyond the training range
    store = _two_eof_store(tmp_path, coef)
    how = EvalProtocol([(0.05, 0.1)], repeats=2, batch_size=4)  # 4 to 8 of 80 points
    rows = fit_classical(store, ["eof", "mv_eof"], how, val_seed=1)
    got = how.evaluate(store, "test", 2, rows)
    for r in got:
        assert r.count == 10 and r.n_failed == 0
        assert r.metrics["nmse_all"] < 1e-6 and r.metrics["nmse_area_all"] < 1e-6
    assert rows["eof"].ks == {"a": 2, "b": 2} and rows["mv_eof"].ks == {"all": 2}


def test_mv_eof_uses_one_variables_support_for_the_other(tmp_path):
    rng = np.random.default_rng(1)
    store = _two_eof_store(tmp_path, rng.normal(size=(40, 2)))
    how = EvalProtocol([(0.01, 0.025)], repeats=4, batch_size=5)  # 1 or 2 points per variable
    rows = fit_classical(store, ["eof", "mv_eof"], how, val_seed=1)
    got = how.evaluate(store, "test", 2, rows)
    for m in ("a", "b"):
        # one point cannot fix two coefficients; the other variable's points can
        assert _nmse(got, "mv_eof", m) < 0.2 * _nmse(got, "eof", m)


def test_k_is_chosen_on_the_validation_split_not_the_test_split(tmp_path):
    rng = np.random.default_rng(2)
    coef = rng.normal(size=(40, 2)) * [3.0, 1.0]
    coef[30:35, 1] = 0.0  # validation: EOF 1 plus noise, so a second EOF only fits noise
    coef[35:, 1] = 5.0  # test: far along EOF 2, which k = 1 cannot follow
    e1, e2 = _patterns()
    a = 1.0 + coef[:, :1, None] * e1 + coef[:, 1:, None] * e2
    a[30:35] += 0.3 * rng.normal(size=a[30:35].shape)
    store = _field_store(tmp_path / "k.zarr", {"a": a}, _split(30, 5, 5))
    how = EvalProtocol([(0.1, 0.2)], repeats=4, batch_size=8)
    lines: list[str] = []
    reset_served_splits()
    rows = fit_classical(store, ["eof"], how, val_seed=1, log=lines.append)
    assert served_splits() == {"train", "val"}  # the test split is never read to choose
    assert rows["eof"].ks == {"a": 1}, lines
    test = how.evaluate(store, "test", 2, {"eof": rows["eof"], "k2": rows["eof"].with_k({"a": 2})})
    assert _nmse(test, "eof", "a") > 100 * _nmse(test, "k2", "a")  # the test split wanted 2


def test_interpolators_beat_the_train_mean_on_smooth_fields(tmp_path):
    rng = np.random.default_rng(3)
    lat, lon = np.linspace(-40.0, 40.0, 9), np.linspace(0.0, 330.0, 12)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=(24, 2, 1, 1))
    t = np.sin(np.deg2rad(2 * la) + phase[:, 0]) * np.cos(np.deg2rad(lo) + phase[:, 1])
    store = _field_store(tmp_path / "s.zarr", {"t": t}, _split(16, 4, 4), lat, lon)
    how = EvalProtocol([(0.2, 0.4)], repeats=1, batch_size=4)
    rows = fit_classical(store, ["gp", "linear", "nearest"], how, val_seed=1)
    got = how.evaluate(store, "test", 2, rows)
    mean = mean_signal_nmse(store, score="test")["t"]
    for name in ("gp", "linear", "nearest"):
        assert _nmse(got, name, "t") < 0.5 * mean, name
    assert _nmse(got, "gp", "t") < _nmse(got, "nearest", "t")
    assert "lat/lon degrees" in rows["gp"].label and "400" in rows["gp"].label


def test_too_few_points_fail_and_the_cell_says_so(tmp_path):
    e1, _ = _patterns()
    rng = np.random.default_rng(4)
    a = 1.0 + rng.normal(size=(16, 1, 1)) * e1
    store = _field_store(tmp_path / "f.zarr", {"a": a}, _split(8, 4, 4))
    how = EvalProtocol([(0.01, 0.025)], repeats=2, batch_size=4)  # 1 or 2 of 80 points
    rows = fit_classical(store, ["gp", "linear", "nearest"], how, val_seed=1)
    per_seed = {0: how.evaluate(store, "test", 2, rows)}
    cells = cells_from_rows(per_seed, list(rows), ["a"], how.bins)
    for name in ("gp", "linear"):
        cell = cells[name]["a"][0]
        assert cell["count"] == 8 and cell["n_failed"] == 8 and math.isnan(cell["mean"])
        assert cell_text(cell) == "n/a (8 of 8: too few points)"
    assert cells["nearest"]["a"][0]["n_failed"] == 0
    assert cell_text({"mean": 1.5, "count": 8, "n_failed": 3}) == "1.5 (3 of 8 n/a: too few points)"
    table = ClassicalRows(cells, {n: r.label for n, r in rows.items()})
    assert [r[0] for r in table.table_rows(["a"])] == ["gp", "linear", "nearest"]
    assert table.results()["classical_failed"]["linear"] == {"a": [8]}
    assert (
        table.results()["classical_x1e2"]["linear"]["a"][0]
        != table.results()["classical_x1e2"]["linear"]["a"][0]
    )  # NaN: no draw ran (null in the JSON)


def test_store_without_shared_coordinates_is_refused_in_one_line(tmp_path):
    loc = make_location(str(tmp_path / "p.zarr"))
    pts = np.ones((8, 5, 1), np.float32)
    xy = np.random.default_rng(0).uniform(-1, 1, (8, 5, 2))
    write_signal_store(
        loc, {"p": ModalityData(pts, "points", coords=xy, normalisation="none")},
        np.array([0, 0, 0, 0, 1, 1, 2, 2]),
    )  # fmt: skip
    store = open_store(loc)
    for name in ("eof", "gp", "linear"):
        with pytest.raises(ConfigError) as err:
            fit_classical(store, [name], EvalProtocol([(0.1, 0.5)]), val_seed=1)
        text = str(err.value)
        assert "\n" not in text and repr(name) in text and "'p'" in text
        assert "p.zarr" in text and "shared coordinates" in text
    with pytest.raises(ConfigError, match=r"classical: .*'kriging'.*choose from"):
        fit_classical(store, ["kriging"], EvalProtocol([(0.1, 0.5)]), val_seed=1)


def test_classical_rows_score_the_learners_support_draws(tmp_path, make_learner):
    mods = ("sine", "tanh")
    cfg = load_config(
        None, ["data.num_functions=24", "data.num_train=12", "data.num_points=40",
               f"data.modalities=[{','.join(mods)}]"],
    )  # fmt: skip
    loc = make_location(str(tmp_path / "syn.zarr"))
    build_synthetic_store(cfg, loc, chunk=8)
    store = open_store(loc, list(mods))
    how = EvalProtocol([(0.05, 0.2), (0.2, 0.5)], repeats=2, batch_size=5)
    rows = fit_classical(store, ["eof", "linear"], how, val_seed=1)
    learner = make_learner("cavia", modalities=mods, dtype=torch.float32).eval()
    args = (store, "test", how.bins, 2, 5, 7, torch.device("cpu"))
    alone = evaluate(learner, *args)
    both = evaluate(learner, *args, classical=rows)
    only = evaluate(None, *args, classical=rows)
    learner_rows = [r for r in both if not r.method]
    assert [(r.modality, r.count, r.metrics) for r in learner_rows] == [
        (r.modality, r.count, r.metrics) for r in alone
    ]  # opt-in: the learner's rows do not change
    classical = [r for r in both if r.method]
    assert [r.method for r in classical] == ["eof"] * 4 + ["linear"] * 4
    assert [(r.count, r.metrics) for r in classical] == [(r.count, r.metrics) for r in only]
    assert all(r.weighting == "uniform" and r.count > 0 for r in classical)
    # binned by the same realised ratios: every row counts the learner's draws
    assert [r.count for r in classical] == [r.count for r in alone] * 2


def test_reproduce_study_writes_classical_rows_to_table_and_results(tmp_path):
    over = [
        f"run.out_dir={tmp_path}",
        f"run.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "reproduce.classical=[eof,mv_eof,linear]",
    ]
    with pytest.raises(ConfigError, match=r"reproduce\.classical.*unknown rows \['kriging'\]"):
        load_reproduce(TINY, [*over[:2], "reproduce.classical=[eof,kriging]"])
    assert load_reproduce(TINY, over[:2])[0].classical == []  # default: no classical rows
    spec, bases = load_reproduce(TINY, over)
    configs = study_configs(spec, bases)
    cfg = configs["mia"][spec.seeds[0]]
    store = open_training_store(cfg)
    lines: list[str] = []
    classical = classical_reference(spec, configs, store, lines.append)
    assert any("chose k=" in line for line in lines)
    bins = study_bins(cfg)
    # seed s's cells are scored on the support draws of that seed's test evaluation
    fitted = fit_classical(store, ["linear"], EvalProtocol(bins, cfg.run.eval_repeats), 1)
    direct = {
        s: evaluate(
            None, store, "test", bins, cfg.run.eval_repeats, cfg.run.eval_batch_size, s + 2,
            torch.device("cpu"), classical=fitted,
        )
        for s in spec.seeds
    }  # fmt: skip
    again = cells_from_rows(direct, ["linear"], list(store.modalities), bins)
    assert classical.cells["linear"] == again["linear"]
    cell = {"mean": 1.0, "std": 0.1, "paper": math.nan, "values": [1.0]}
    cells = [{**cell, "r_min": lo, "r_max": hi} for lo, hi in bins]
    stats = {m: {mod: cells for mod in store.modalities} for m in ("cavia", "mia")}
    table, files = write_table1(spec, cfg, stats, tmp_path, classical=classical)
    assert [r[0] for r in table[-3:]] == ["eof", "mv_eof", "linear"]
    assert "`mv_eof`: train mean + joint EOFs" in files[0].read_text()
    saved = json.loads(files[2].read_text())
    assert saved["classical"] == ["eof", "mv_eof", "linear"]
    assert len(saved["classical_x1e2"]["eof"]["sine"]) == len(bins)
    out = write_results(spec, cfg, stats, tmp_path, tmp_path / "r.json", extra=classical.results())
    result = json.loads(out[0].read_text())
    assert result["classical_x1e2"] == saved["classical_x1e2"]
    assert result["classical_draws"]["linear"]["tanh"] == [
        c["count"] for c in again["linear"]["tanh"]
    ]


def test_coordinates_are_degrees_in_reader_order_on_lat_lon_grids(tmp_path):
    e1, _ = _patterns()
    store = _field_store(tmp_path / "c.zarr", {"a": 1.0 + e1[None].repeat(4, 0)}, _split(4, 0, 0))
    xy, degrees = grid_points(store, "a")
    assert degrees and xy.shape == (80, 2)
    assert tuple(xy[0]) == (10.0, -140.0) and tuple(xy[-1]) == (50.0, -52.5)  # lat ascending
    assert np.allclose(store.read(0, 1)["a"][0, :, 0], 1.0 + e1[::-1].reshape(-1))
    strided, _ = grid_points(store, "a", spatial_stride=2)
    assert strided.shape == (20, 2) and tuple(strided[1]) == tuple(xy[2])
    loc = make_location(str(tmp_path / "g.zarr"))
    write_signal_store(
        loc, {"g": ModalityData(np.ones((4, 3, 5, 1), np.float32), normalisation="none")},
        np.array([0, 0, 1, 2]),
    )  # fmt: skip
    grid, degrees = grid_points(open_store(loc), "g")
    assert not degrees and grid.min() == -1.0 and grid.max() == 1.0  # normalised grid
    with pytest.raises(ValueError, match="a learner or classical"):
        evaluate(None, store, "train", [(0.1, 0.2)], 1, 4, 0, torch.device("cpu"))

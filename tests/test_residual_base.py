"""``data.residual_base``: the INR learns the residual of a classical EOF reconstruction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_configs import TINY_META_MODEL

from mia_core.config import ConfigError, load_config
from mia_core.meta.metrics import signal_metrics
from pipelines.data.episode_base import subtract_base
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.streams import store_episodes
from pipelines.reports.classical import EvalProtocol, fit_classical
from ray_jobs.evaluate import main as evaluate_main
from ray_jobs.train import main as train_main
from tests.test_classical import _two_eof_store


@pytest.fixture
def eof_store(tmp_path):
    coef = np.random.default_rng(0).normal(size=(40, 2)) * [2.0, 1.0]
    return _two_eof_store(tmp_path, coef)


def _episode(store, spec, batch=5):
    return next(iter(store_episodes(store, spec, batch, "test", 0, False)))


def test_residual_episode_is_the_signal_minus_the_base_on_the_same_support(eof_store):
    how = EvalProtocol([(0.05, 0.3)], repeats=1, batch_size=5)
    base = fit_classical(eof_store, ["mv_eof"], how, val_seed=1)["mv_eof"]
    spec = EpisodeSpec({m: (0.05, 0.3) for m in eof_store.modalities}, 3)
    raw = _episode(eof_store, spec)
    res, bases = subtract_base(raw, base, np.arange(5))
    for m, mb in raw.items():
        r = res[m]
        valid = mb.query_mask.bool()
        torch.testing.assert_close((r.query_y + bases[m])[valid], mb.query_y[valid])
        for b in range(mb.batch_size):  # same support points, values of the residual
            n = int(mb.support_mask[b].sum())
            assert int(r.support_mask[b].sum()) == n
            pts = torch.nonzero(mb.query_support[b]).flatten()
            torch.testing.assert_close(r.support_x[b, :n], mb.query_x[0, pts])
            torch.testing.assert_close(r.support_y[b, :n], r.query_y[b, pts])
        # scoring the residual is scoring base + INR against the signal
        pred = torch.randn_like(mb.query_y)
        a = signal_metrics(pred, r.query_y, r.query_mask, r.query_support, r.scale)
        t = signal_metrics(pred + bases[m], mb.query_y, mb.query_mask, mb.query_support, mb.scale)
        for k in a:
            torch.testing.assert_close(a[k], t[k])
    # exact two-EOF data: the base alone reconstructs it from a few points
    assert all(float(res[m].query_y.abs().max()) < 1e-3 for m in res)


def test_base_is_subtracted_before_the_query_points_are_drawn(eof_store):
    how = EvalProtocol([(0.05, 0.3)], repeats=1, batch_size=5)
    base = fit_classical(eof_store, ["eof"], how, val_seed=1)["eof"]
    ranges = {m: (0.05, 0.3) for m in eof_store.modalities}
    full = _episode(eof_store, EpisodeSpec(ranges, 3, base=base))
    some = _episode(eof_store, EpisodeSpec(ranges, 3, query_points=20, base=base))
    for m in full:
        assert some[m].query_y.shape[1] == 20
        torch.testing.assert_close(some[m].support_y, full[m].support_y)
        # every kept query value is the full residual at that coordinate
        for b in range(5):
            for x, y in zip(some[m].query_x[b], some[m].query_y[b], strict=True):
                i = int(torch.nonzero((full[m].query_x[0] == x).all(-1))[0])
                torch.testing.assert_close(y, full[m].query_y[b, i])


def _run(tmp_path, store, name, base):
    argv = [
        "--config", "configs/experiments/paper_era5_mia_cpu.yaml", "--local",
        f"data.store={store.location.display}", "data.modalities=[a,b]", *TINY_META_MODEL,
        f"data.residual_base={base}", "run.steps=6", "run.batch_size=5", "run.log_every=3",
        "run.eval_every=3", "run.checkpoint_every=3", "run.eval_repeats=1",
        "run.eval_bins=[[0.02,0.2]]", "run.eval_batch_size=5", f"run.name={name}",
        f"run.out_dir={tmp_path}", "run.log_model=false",
    ]  # fmt: skip
    assert train_main(argv) == 0
    report = json.loads((tmp_path / name / "metrics_val.json").read_text())
    return np.mean([r["nmse_all"] for r in report["val"]])


def test_training_with_the_base_reports_base_plus_inr(tmp_path, eof_store, capsys):
    with_base = _run(tmp_path, eof_store, "eof", "mv_eof")
    out = capsys.readouterr().out
    assert "learning the residual of train mean + joint EOFs of all variables" in out
    without = _run(tmp_path, eof_store, "plain", "none")
    assert with_base < 0.1 * without  # the data are two EOFs: the base does the work
    # a later evaluate refits the same base from the config (test split, final report)
    argv = ["--run-dir", str(tmp_path / "eof"), "--no-track", "--no-figures", "--split", "test"]
    assert evaluate_main(argv) == 0
    test = json.loads((tmp_path / "eof" / "metrics.json").read_text())["test"]
    assert np.mean([r["nmse_all"] for r in test]) < 0.1 * without


def test_residual_base_refuses_patches_in_one_line():
    with pytest.raises(ConfigError, match="residual_base.*patch"):
        load_config(None, ["data.residual_base=eof", "data.patch=[4,4]"])
    with pytest.raises(ConfigError, match="residual_base"):
        load_config(None, ["data.residual_base=pca"])


def test_an_eof_fit_that_would_not_fit_in_memory_says_so_before_reading(eof_store, monkeypatch):
    monkeypatch.setenv("MIA_MEMORY_LIMIT_GB", "0.00001")  # 10 kB
    how = EvalProtocol([(0.05, 0.3)], repeats=1, batch_size=5)
    with pytest.raises(ConfigError, match="the EOF fit needs .*data.spatial_stride"):
        fit_classical(eof_store, ["mv_eof"], how, val_seed=1)

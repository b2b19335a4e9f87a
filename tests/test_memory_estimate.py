"""The pre-flight memory check: a job too big for the node stops in one line, before work."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from mia_core.builders import build_learner
from mia_core.config import ConfigError, load_config, save_config
from pipelines.codecs.encode_spec import EncodeSpec
from pipelines.data.resolve import open_training_store
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.field_writer import split_by_time, write_field_store
from pipelines.data.stores.reader import ModalityInfo
from pipelines.engine.checkpoint import save_checkpoint
from pipelines.engine.memory_estimate import (
    ENV_LIMIT,
    available_memory,
    check_memory,
    encode_estimate,
    training_estimate,
)
from pipelines.jobs import train
from ray_jobs.cli import main
from tests.tiny_configs import TINY_META_MODEL

GB = 2**30
SIREN = [
    "data.modalities=[t2m]",
    "model.width=16",
    "model.depth=2",
    "model.omega0=10.0",
    "method.inner_steps=2",
    "run.steps=2",
    "run.batch_size=2",
    "run.eval_batch_size=4",
]


def write_fields(path, nlat: int = 8, nlon: int = 10, steps: int = 8) -> str:
    """A small field store (one variable, ``steps`` time steps)."""
    rng = np.random.default_rng(0)
    values = rng.random((steps, nlat, nlon)).astype(np.float32)
    ds = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), values)},
        coords={
            "time": np.arange(steps),
            "latitude": np.linspace(60.0, 20.0, nlat),
            "longitude": np.linspace(0.0, 90.0, nlon),
        },
    )
    write_field_store(ds, make_location(str(path)), 4, split_by_time(steps, 0.25, 0.25))
    return str(path)


def siren_config(store: str, out_dir, *extra: str):
    over = [f"data.store={store}", *SIREN, f"run.out_dir={out_dir}", *extra]
    return load_config("configs/experiments/meta_inr_gray_scott.yaml", over)


def test_estimate_grows_linearly_in_batch_and_points(tmp_path):
    small = write_fields(tmp_path / "small.zarr", 8, 10)
    large = write_fields(tmp_path / "large.zarr", 16, 20)  # 4x the points
    est = {}
    for name, store in (("small", small), ("large", large)):
        for b in (2, 4):
            cfg = siren_config(store, tmp_path, f"run.batch_size={b}", "data.spatial_stride=1")
            est[name, b] = training_estimate(cfg, open_training_store(cfg)).terms["graph"]
    assert est["small", 4] == pytest.approx(2 * est["small", 2])
    assert est["large", 2] == pytest.approx(4 * est["small", 2])
    # Query points and a second-order inner loop count too.
    cfg = siren_config(small, tmp_path, "data.spatial_stride=1", "data.query_points=20")
    cut = training_estimate(cfg, open_training_store(cfg)).terms["graph"]
    assert cut < est["small", 2]
    two = siren_config(small, tmp_path, "method.first_order=false", "method.inner_steps=4")
    one = siren_config(small, tmp_path, "method.inner_steps=4")
    store = open_training_store(one)
    assert (
        training_estimate(two, store).terms["graph"] > training_estimate(one, store).terms["graph"]
    )


def test_the_oom_preset_at_quarter_degree_is_estimated_above_what_killed_it(monkeypatch):
    """meta_inr_ncep.yaml on 4 x 721 x 1440 was killed at 20.5 GB; stride 4 ran in 3.5 GB."""
    import pipelines.engine.memory_estimate as me

    # The baseline term is this process's resident set: a fresh job's, not the test
    # session's (which grows with every test run before this one).
    monkeypatch.setattr(me, "rss_bytes", lambda: 400 * 2**20)
    info = {
        v: ModalityInfo(v, (721, 1440), 1, np.zeros((1, 2), np.float32))  # shared coords
        for v in ("t2m", "sp", "tcwv", "z500")
    }
    n = 48
    store = SimpleNamespace(
        modalities=list(info),
        info=info,
        num_signals=n,
        chunk_size=64,
        split=split_by_time(n, 0.15, 0.25),  # as the ncep_air build
        valid=np.ones(n, bool),
    )
    mods = "data.modalities=[t2m,sp,tcwv,z500]"
    cfg = load_config("configs/experiments/meta_inr_ncep.yaml", [mods])
    assert training_estimate(cfg, store).total > 20.5 * GB
    cfg = load_config("configs/experiments/meta_inr_ncep.yaml", [mods, "data.spatial_stride=4"])
    assert 3.5 * GB < training_estimate(cfg, store).total < 7.5 * GB  # ~2x the 3.5 GB


def test_training_too_big_for_the_node_stops_in_one_line_before_any_step(
    tmp_path, monkeypatch, capsys
):
    store = write_fields(tmp_path / "fields.zarr")
    monkeypatch.setenv(ENV_LIMIT, "0.01")  # 10 MB: less than any training process
    argv = ["train", "--config", "configs/experiments/meta_inr_gray_scott.yaml", "--local"]
    argv += [f"data.store={store}", *SIREN, f"run.out_dir={tmp_path / 'runs'}"]
    argv += ["run.name=too_big"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training needs ~" in err, err
    assert "10 MB free (MIA_MEMORY_LIMIT_GB; 0 skips): lower run.batch_size (2)" in err
    assert not (tmp_path / "runs" / "too_big" / "checkpoints").exists()  # nothing trained

    monkeypatch.setenv(ENV_LIMIT, "lots")
    assert main(argv) == 2 and "is not a number of GB" in capsys.readouterr().err


def test_ray_train_counts_every_worker_on_a_cluster_started_here(tmp_path, monkeypatch):
    store = write_fields(tmp_path / "fields.zarr")
    monkeypatch.setenv(ENV_LIMIT, "0.01")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = siren_config(store, tmp_path, "run.num_workers=3")
    with pytest.raises(ConfigError, match=r"training needs ~.* \(3 processes\)"):
        train(cfg, local=False)  # refused on the driver, before Ray starts


def test_the_setting_named_is_the_one_that_dominates(tmp_path, monkeypatch):
    store = write_fields(tmp_path / "fields.zarr", 32, 40)
    monkeypatch.setenv(ENV_LIMIT, "0.01")
    cfg = siren_config(store, tmp_path, "data.spatial_stride=1", "run.batch_size=64")
    named = r"\(graph .*: lower run\.batch_size \(64\), data\.spatial_stride \(1\)"
    with pytest.raises(ConfigError, match=named):
        check_memory(training_estimate(cfg, open_training_store(cfg)))
    few = ("run.batch_size=1", "data.query_points=10", "run.eval_batch_size=400")
    cfg = siren_config(store, tmp_path, "data.spatial_stride=1", *few)
    with pytest.raises(ConfigError, match=r"\(validation .*: lower run\.eval_batch_size \(400\)"):
        check_memory(training_estimate(cfg, open_training_store(cfg)))


def test_encoding_too_big_stops_in_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    store = write_fields(tmp_path / "fields.zarr")
    cfg = siren_config(store, tmp_path)
    save_config(cfg, tmp_path / "config.yaml")
    learner = build_learner(cfg.model, cfg.method, {"t2m": (2, 1)})
    ckpt = save_checkpoint({"model": learner.state_dict()}, tmp_path / "meta.pt")
    out = tmp_path / "codes.zarr"
    argv = ["encode", "--local", "--store", store, "--checkpoint", str(ckpt), "--out", str(out)]
    argv += [f"encode.run_config={tmp_path / 'config.yaml'}", "encode.larger_codes=warn"]
    argv += ["encode.progress=false", "encode.steps=2"]
    monkeypatch.setenv(ENV_LIMIT, "0.01")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "encoding needs ~" in err, err
    assert "encode.batch_size" in err or "encode.chunk" in err
    assert not out.exists()  # no code store created

    # The same job fits this machine (no override): the estimate passes.
    monkeypatch.delenv(ENV_LIMIT)
    spec = EncodeSpec(store=store, checkpoint=str(ckpt), out=str(out))
    n = sum(p.numel() for p in learner.parameters())
    check_memory(encode_estimate(spec, cfg, open_store(make_location(store), ["t2m"]), n))


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("configs/experiments/default.yaml", TINY_META_MODEL),
        ("configs/experiments/default.yaml", []),
    ],
)
def test_shipped_tiny_configs_pass_the_check(tmp_path, monkeypatch, config, extra):
    monkeypatch.delenv(ENV_LIMIT, raising=False)
    have, _source = available_memory()
    cfg = load_config(config, [*extra, f"run.out_dir={tmp_path}"])
    est = training_estimate(cfg, open_training_store(cfg), cfg.run.num_workers)
    assert have is None or est.total < have
    check_memory(est)
    monkeypatch.setenv(ENV_LIMIT, "0")  # 0 skips the check whatever the estimate
    assert available_memory()[0] is None
    check_memory(est)

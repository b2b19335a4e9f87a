"""End-to-end smoke tests of the single-process meta-training loop on tiny configs."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from tiny_configs import TINY_META_MODEL

from mia_core.config import load_config
from pipelines.engine.checkpoint import load_checkpoint, save_checkpoint
from pipelines.jobs import train
from ray_jobs.train import main as train_main


def train_local(cfg, **kw):
    return train(cfg, local=True, **kw)


TINY = [
    "data.num_functions=40",
    "data.num_train=30",
    "data.num_points=50",
    *TINY_META_MODEL,
    "run.eval_bins=[[0.05,0.1],[0.1,0.2]]",
    "run.eval_batch_size=16",
]


def tiny_config(tmp_path, *extra: str):
    return load_config(
        "configs/experiments/default.yaml",
        [
            *TINY,
            "run.steps=4",
            "run.batch_size=4",
            "run.log_every=2",
            "run.eval_every=2",
            "run.checkpoint_every=2",
            "run.eval_repeats=1",
            f"run.out_dir={tmp_path}",
            *extra,
        ],
    )


def test_run_writes_config_checkpoints_and_results(tmp_path):
    logs: list[str] = []
    res = train_local(tiny_config(tmp_path), log=logs.append)
    run_dir = tmp_path / "default"
    assert res.step == 4 and res.best_step in (2, 4)
    for name in (
        "config.yaml",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "results_val.md",  # training ends with the validation report, never the test one
        "metrics_val.json",
    ):
        assert (run_dir / name).exists(), name
    assert load_config(run_dir / "config.yaml") == tiny_config(tmp_path)
    metrics = json.loads((run_dir / "metrics_val.json").read_text())
    assert len(metrics["val"]) == 2 * 4  # bins x modalities
    # the paper protocol bins each signal by its realised ratio: a bin may stay empty (NaN)
    assert all(r["n_signals"] == 0 or math.isfinite(r["nmse_all"]) for r in metrics["val"])
    assert sum(r["n_signals"] for r in metrics["val"]) > 0
    assert any("signals/s" in line and "eta" in line for line in logs)
    state = load_checkpoint(run_dir / "checkpoints/last.pt")
    assert state["step"] == 4


def test_resume_continues_from_last_checkpoint(tmp_path):
    train_local(tiny_config(tmp_path, "run.steps=2"), log=lambda s: None)
    logs: list[str] = []
    res = train_local(tiny_config(tmp_path, "run.steps=4"), log=logs.append)
    assert any("resumed" in line and "step 2" in line for line in logs)
    assert res.step == 4
    # Resumed run ends with the same parameters as an uninterrupted one.
    straight = tmp_path / "straight"
    train_local(tiny_config(straight, "run.steps=4"), log=lambda s: None)
    a = load_checkpoint(tmp_path / "default/checkpoints/last.pt")["model"]
    b = load_checkpoint(straight / "default/checkpoints/last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_non_finite_loss_names_step_and_keeps_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite outer loss at step 1"):
        train_local(
            tiny_config(tmp_path, "method.name=cavia", "method.inner_lr=1.0e12"), log=lambda s: None
        )


def test_checkpoint_load_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(RuntimeError, match="not a safe checkpoint"):
        load_checkpoint(path)
    ok = save_checkpoint({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(ok)["w"], torch.ones(2))


def test_entry_script_reports_bad_key(tmp_path, capsys):
    code = train_main(["--config", "configs/experiments/default.yaml", "run.stepz=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "run.stepz" in err and "run.steps" in err


def test_tracker_does_not_leak_its_uri_into_the_environment(tmp_path, monkeypatch):
    from mia_core.config import config_from_dict
    from pipelines.tracking.tracker import Tracker, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = config_from_dict({"run": {"out_dir": str(tmp_path / "a"), "name": "a"}})
    Tracker(first, tmp_path / "a" / "a").close()
    second = config_from_dict({"run": {"out_dir": str(tmp_path / "b"), "name": "b"}})
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking_uri(second).endswith(str(tmp_path / "b" / "mlflow.db"))

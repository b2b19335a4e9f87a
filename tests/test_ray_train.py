"""Ray Train job tests: 2 workers on tiny data, failure recovery, driver restart, MLflow."""

from __future__ import annotations

import builtins
import json
import logging
from pathlib import Path

import pytest
from ray.train.v2._internal.logging.patch_print import redirected_print
from tiny_configs import TINY_META_MODEL

from mia_core.config import load_config
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.engine.ray_train import _say
from pipelines.jobs import train as run_ray_training

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TINY = [
    "data.num_functions=60",
    "data.num_train=50",
    "data.num_points=40",
    "data.modalities=[sine,tanh]",
    *TINY_META_MODEL,
    "run.eval_bins=[[0.05,0.1],[0.1,0.2]]",
    "run.eval_batch_size=16",
    "run.eval_repeats=1",
    "run.batch_size=4",
    "run.log_every=1",
    "run.num_workers=2",
    "run.cpus_per_worker=0.5",
]


def cfg_for(tmp_path, *extra):
    return load_config(
        "configs/experiments/default.yaml", [*TINY, f"run.out_dir={tmp_path}", *extra]
    )


def mlflow_runs(tmp_path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mia-inr")
    return client, client.search_runs([exp.experiment_id])


@pytest.fixture
def other_fs_dir(tmp_path):
    """A run directory on another file system than the temp dir (tmpfs), else ``tmp_path``.

    Checkpoints are written into a temporary directory and copied by Ray into its
    storage, never hard-linked, so this is the NFS/EFS layout of a real cluster.
    """
    import os
    import shutil
    import tempfile
    import uuid

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        yield tmp_path
        return
    out = shm / f"mia-test-{uuid.uuid4().hex[:8]}"
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_two_workers_write_checkpoints_mlflow_and_results(ray_session, other_fs_dir):
    tmp_path = other_fs_dir
    cfg = cfg_for(tmp_path, "run.steps=4", "run.eval_every=2", "run.checkpoint_every=2")
    res = run_ray_training(cfg)
    run_dir = tmp_path / "default"
    assert res.step == 4
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["step"] == 4
    assert (run_dir / "checkpoints/best.pt").exists()
    assert list((tmp_path / "ray_results" / "default").glob("checkpoint_*"))
    table = (run_dir / "results_val.md").read_text()  # train reports validation
    # A table per metric and region: a row per modality, a column per support bin.
    lines = table.splitlines()
    assert lines[4].startswith("| nmse all | [0.05, ") and lines[4].count("|") == 2 + 2
    assert [line.split(" | ")[0] for line in lines[6:8]] == ["| sine", "| tanh"]
    assert not (run_dir / "metrics.json").exists()  # the test report is asked for alone
    metrics = json.loads((run_dir / "metrics_val.json").read_text())
    assert {(r["modality"], r["r_min"]) for r in metrics["val"]} == {
        (m, lo) for m in ("sine", "tanh") for lo in (0.05, 0.1)
    }
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["method.name"] == "mia"
    assert "loss" in run.data.metrics and "val_nmse" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results_val.md", "checkpoints", "figures_val"} <= arts
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures_val")}
    assert "figures_val/msft_attention.png" in figs


@pytest.mark.fault
def test_worker_failure_resumes_from_checkpoint(ray_session, tmp_path, mlflow_db):
    cfg = cfg_for(
        tmp_path,
        "run.steps=6",
        "run.eval_every=100",
        "run.checkpoint_every=2",
        "run.fault_injection_step=4",
        "run.fault_injection_kind=kill",  # SIGKILL of worker 0 mid-step
        "run.max_failures=1",
    )
    res = run_ray_training(cfg, evaluate_after=False)
    run_dir = tmp_path / "default"
    assert (run_dir / ".fault_injected_4").exists()
    assert res.step == 6
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["step"] == 6


@pytest.mark.fault
def test_resubmitted_run_resumes_from_s3_storage(
    ray_session, s3_server, monkeypatch, tmp_path, mlflow_db
):
    # Ray Train's storage on the S3 server: the second job finds the first one's
    # checkpoint there (not in the run directory) and continues from step 2.
    import shutil

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint_url"])
    s3_server["make_bucket"]("mia-ray")
    storage = f"run.storage_path=s3://mia-ray/{tmp_path.name}"
    run_ray_training(
        cfg_for(tmp_path, "run.steps=2", "run.checkpoint_every=2", storage), evaluate_after=False
    )
    shutil.rmtree(tmp_path / "default" / "checkpoints")
    keys = s3_server["client"].list_objects_v2(Bucket="mia-ray", Prefix=tmp_path.name)
    assert any("checkpoint_" in o["Key"] for o in keys.get("Contents", []))
    res = run_ray_training(
        cfg_for(tmp_path, "run.steps=4", "run.checkpoint_every=2", storage), evaluate_after=False
    )
    assert res.step == 4
    state = load_checkpoint(tmp_path / "default/checkpoints/last.pt")
    assert state["step"] == 4
    _, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1  # the resubmitted job logs into the same MLflow run


def test_worker_lines_bypass_ray_trains_print_patch(capsys, caplog, monkeypatch):
    """Ray Train V2's print both writes stdout and logs (stderr): the loop's lines must not."""
    monkeypatch.setattr(builtins, "print", redirected_print)
    with caplog.at_level(logging.INFO):
        print("patched")  # what a plain print would do inside a worker: logged
        _say("step 5/20 loss 1.0")
    assert [r.getMessage() for r in caplog.records] == ["patched"]
    assert capsys.readouterr().out.count("step 5/20 loss 1.0") == 1

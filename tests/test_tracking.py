"""MLflow experiments and runs the project makes: their view, artifacts and provenance."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow

from mia_core.config import load_config
from pipelines.tracking import run_groups
from pipelines.tracking.experiments import (
    ARTIFACTS,
    EXPERIMENT_TAGS,
    announce_tracking,
    artifact_root,
    ensure_experiment,
)
from pipelines.tracking.provenance import (
    COMMIT_ENV,
    RAY_WORKER,
    RUN_CONTEXT_ENV,
    git_commit,
    provenance_env,
    source_tags,
)
from pipelines.tracking.tracker import Tracker


def test_experiments_are_marked_as_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp_id = ensure_experiment(uri, "fresh", tmp_path)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("old")  # made before the tag existed
    assert ensure_experiment(uri, "old", tmp_path) == old
    assert EXPERIMENT_TAGS.items() <= client.get_experiment(old).tags.items()


def _open_experiment(uri: str) -> str:
    return ensure_experiment(uri, "race", str(Path(uri.removeprefix("sqlite:///")).parent))


def test_processes_opening_a_fresh_sqlite_store_at_once_take_turns(tmp_path):
    # MLflow's schema migration run by two processes at once failed ("duplicate column
    # name", alembic "expected to match one row") without the init lock: 3 of 3 tries here
    import multiprocessing as mp

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_open_experiment, [uri] * 3)
    assert len(set(ids)) == 1


def test_tracking_uri_is_announced_once_per_process_without_credentials():
    lines: list[str] = []
    uri = "https://user:secret@mlflow.example.com/?token=abc"
    announce_tracking(uri, lines.append)
    announce_tracking(uri, lines.append)
    assert len(lines) == 1 and "secret" not in lines[0] and "abc" not in lines[0]
    assert "mlflow ui --backend-store-uri" in lines[0]


def test_experiments_keep_artifacts_next_to_the_store_not_in_the_working_directory(
    tmp_path, monkeypatch
):
    # under Ray the job runs in a temporary copy of the working directory, deleted when
    # Ray stops: MLflow's default root (./mlruns of it) would lose every artifact
    work = tmp_path / "ray" / "session_1" / "runtime_resources" / "working_dir_files" / "pkg"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    exp_id = ensure_experiment(uri, "mia-inr", tmp_path / "elsewhere")
    root = (tmp_path / "runs" / ARTIFACTS).as_uri()
    client = mlflow.MlflowClient(uri)
    default = client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location == f"{root}/0"
    assert client.get_experiment(exp_id).artifact_location == root
    assert not (work / "mlruns").exists()
    assert artifact_root(f"file://{tmp_path}/mlruns", "out") == root.replace("/runs/", "/")
    assert artifact_root("postgresql://db/mlflow", tmp_path) == (tmp_path / ARTIFACTS).as_uri()
    assert artifact_root("https://mlflow.example.com", tmp_path) is None


ARGV = ["mia-inr train", "train", "--config", "c.yaml", "run.steps=1"]
SECRET_ARGS = ["data.endpoint_url=http://u:pw@s3:9000", "aws.secret_access_key=a", "--token", "b"]


def _tags(uri: str, run_id: str) -> dict[str, str]:
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if k.startswith("mlflow.source.")}


def test_runs_record_the_mia_inr_command_and_the_git_commit(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_CONTEXT_ENV, raising=False)
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", [*ARGV, *SECRET_ARGS])
    cfg = load_config("configs/experiments/default.yaml", [f"run.out_dir={tmp_path}"])
    tracker = Tracker(cfg, tmp_path / "run")
    tracker.close()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    want = {
        "mlflow.source.name": "mia-inr train --config c.yaml run.steps=1 "
        "data.endpoint_url=http://***@s3:9000 aws.secret_access_key=*** --token ***",
        "mlflow.source.type": "LOCAL",
    }
    if head.returncode == 0:  # a git checkout (else the commit is left out)
        want["mlflow.source.git.commit"] = head.stdout.strip()
    assert _tags(tracker.uri, tracker.run_id) == want
    group = run_groups.open_run(cfg, tmp_path / "group_id", "a group")
    assert _tags(tracker.uri, group) == want  # runs made through the client API too


def test_ray_workers_record_the_driver_s_command_not_their_own_file(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_CONTEXT_ENV, raising=False)
    monkeypatch.setenv(COMMIT_ENV, "0123abc")  # as `env MIA_GIT_COMMIT=... mia-inr ...`
    monkeypatch.setattr(sys, "argv", ARGV)
    forwarded = provenance_env()  # what init_ray puts into the workers' runtime_env
    # a worker: Ray's worker file as argv[0], Ray's copy of the working directory (no .git)
    monkeypatch.setenv(RUN_CONTEXT_ENV, forwarded[RUN_CONTEXT_ENV])
    monkeypatch.delenv(COMMIT_ENV)
    monkeypatch.setattr(sys, "argv", ["/x/ray/_private/workers/default_worker.py", "--n=1"])
    cfg = load_config("configs/experiments/default.yaml", [f"run.out_dir={tmp_path}"])
    (tmp_path / "copy").mkdir()
    monkeypatch.chdir(tmp_path / "copy")
    tracker = Tracker(cfg, tmp_path / "run")
    tracker.close()
    assert _tags(tracker.uri, tracker.run_id) == {
        "mlflow.source.name": "mia-inr train --config c.yaml run.steps=1",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": "0123abc",
    }
    monkeypatch.delenv(RUN_CONTEXT_ENV)  # nothing passed down: never Ray's worker file
    assert source_tags()["mlflow.source.name"] == RAY_WORKER
    assert git_commit(tmp_path / "copy") is None


RAY_JOB = """
import json, sys
import ray
sys.argv = ["mia-inr train", "train", "--config", "c.yaml"]
from pipelines.cluster.connect import init_ray
from pipelines.tracking.provenance import source_tags
init_ray("local", log=lambda _s: None)
worker = ray.get(ray.remote(num_cpus=0)(source_tags).remote())
print(json.dumps([source_tags(), worker]))
ray.shutdown()
"""


def test_a_ray_worker_started_through_init_ray_gets_the_driver_s_provenance(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="r")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in (RUN_CONTEXT_ENV, "RAY_ADDRESS")}
    env |= {"RAY_TMPDIR": ray_tmp, "MIA_GIT_COMMIT": "c0ffee"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", RAY_JOB], env=env, cwd=tmp_path, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    driver, worker = json.loads(out.stdout.strip().splitlines()[-1])
    assert driver["mlflow.source.name"] == "mia-inr train --config c.yaml"
    assert worker == driver and driver["mlflow.source.git.commit"] == "c0ffee"

"""infra/: every manifest parses and points at code and configs that exist; drivers forward
no credentials through Ray's runtime_env; the local two-node Ray cluster trains across both
nodes, leaks no credential into Ray's APIs, logs or the run's outputs, and leaves nothing
running."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from tiny_configs import TINY_META_MODEL

from mia_core.config import load_config
from pipelines.cluster import connect
from pipelines.cluster.connect import FORWARDED_ENV, forwarded_env
from pipelines.cluster.local import LocalCluster, session_pids
from pipelines.cluster.local_run import train_on_local_cluster
from pipelines.cluster.ray_output import SETUP_HOOK

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
YAMLS = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), *(REPO / "configs").rglob("*.yaml")])
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)
CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def by_kind(path: Path) -> dict[str, dict]:
    return {d["kind"]: d for d in docs(path)}


def check_entrypoint(command: str) -> None:
    """Every ray_jobs/*.py and configs/*.yaml named exists, and the config loads with the
    command's own key=value overrides (so a manifest cannot ship a misspelled key)."""
    tokens = shlex.split(command)
    scripts = [t for t in tokens if re.search(r"ray_jobs/\w+\.py$", t)]
    assert scripts, f"no ray_jobs entrypoint in {command!r}"
    for s in scripts:
        assert (REPO / s[s.index("ray_jobs/") :]).is_file(), s
    config = tokens[tokens.index("--config") + 1]
    config = REPO / config[config.index("configs/") :]
    assert config.is_file(), config
    overrides = [t for t in tokens if "=" in t and not t.startswith("-")]
    load_config(str(config), overrides)


def test_every_yaml_parses():
    assert len([p for p in YAMLS if INFRA in p.parents]) >= 6
    for path in YAMLS:
        assert docs(path), f"{path} is empty"


def test_aws_cluster_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = docs(INFRA / "ray/aws-cluster.yaml")[0]
    cfg = prepare_config(raw)
    validate_config(cfg)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["node_config"]["InstanceType"]
    assert not head.startswith(("g", "p"))  # CPU head
    gpu = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert gpu and all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in gpu)
    assert all(t["max_workers"] > t.get("min_workers", 0) for t in gpu)  # autoscaling
    # The repository is mounted on every node and installed with the committed pins.
    src = next(iter(raw["file_mounts"].values()))
    assert (REPO / src / "ray_jobs/train.py").is_file()
    commands = " ".join(raw["setup_commands"] + raw["head_setup_commands"])
    commands += " ".join(raw["worker_setup_commands"])
    assert "torch==2.13.0" in commands and "whl/cpu" in commands and "whl/cu" in commands
    for ref in re.findall(r"mia-inr/(\S+constraints\.txt)", commands):
        assert (REPO / ref).is_file(), ref


def test_kuberay_rayjob_runs_train_on_the_raycluster():
    cluster = by_kind(INFRA / "k8s/raycluster.yaml")
    job = by_kind(INFRA / "k8s/rayjob.yaml")["RayJob"]
    rc = cluster["RayCluster"]
    assert rc["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == rc["metadata"]["name"]
    check_entrypoint(job["spec"]["entrypoint"])
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert not set(env) & set(FORWARDED_ENV)
    # Autoscaling GPU workers; every pod mounts the shared run volume of the claim.
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    (group,) = rc["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] < group["maxReplicas"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    claim = cluster["PersistentVolumeClaim"]["metadata"]["name"]
    for spec in (rc["spec"]["headGroupSpec"]["template"]["spec"], group["template"]["spec"]):
        vols = [v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert {v["claimName"] for v in vols} == {claim}
    assert "run.out_dir=/mnt/runs" in job["spec"]["entrypoint"]


def test_images_run_existing_entrypoints_and_copy_existing_files():
    for dockerfile in (INFRA / "docker/Dockerfile", INFRA / "mlflow/Dockerfile"):
        text = dockerfile.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("COPY"):
                for src in line.split()[1:-1]:
                    assert (REPO / src).exists(), f"{dockerfile}: COPY {src}"
    text = (INFRA / "docker/Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    check_entrypoint(" ".join(yaml.safe_load(cmd)))
    assert "ARG TORCH_VARIANT=cpu" in text and "download.pytorch.org/whl/${TORCH_VARIANT}" in text


def test_mlflow_deployment_uses_postgres_s3_and_secret_references_only():
    k8s = docs(INFRA / "k8s/mlflow.yaml")
    deploy = next(d for d in k8s if d["kind"] == "Deployment")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "secretKeyRef" in env["MLFLOW_DB_PASSWORD"]["valueFrom"]
    assert any(d["kind"] == "StatefulSet" and "postgres" in d["metadata"]["name"] for d in k8s)
    compose = docs(INFRA / "mlflow/docker-compose.yaml")[0]["services"]
    assert compose["postgres"]["image"].startswith("postgres:")
    assert compose["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    serve = (INFRA / "mlflow/serve.sh").read_text()
    assert "postgresql+psycopg://" in serve and "--serve-artifacts" in serve


def _pairs(node):
    """(key, scalar) pairs of a parsed manifest, k8s ``{name, value}`` env entries included."""
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node:
            yield node["name"], node["value"]
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from _pairs(value)
            else:
                yield key, value
    elif isinstance(node, list):
        for item in node:
            yield from _pairs(item)


def test_no_literal_secrets_in_infra():
    """Secret-looking variables are secret references or required ${VAR:?} interpolations."""
    for path in [p for p in YAMLS if INFRA in p.parents]:
        for name, value in _pairs(docs(path)):
            if SECRETISH.search(str(name)) and value is not None:
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{path}: {name}={value!r}"


def test_runtime_env_recipe_excludes_outputs_and_sets_no_driver_forwarded_vars():
    env = docs(INFRA / "ray/runtime_env.yaml")[0]
    assert env["working_dir"] == "."
    assert {".git", ".venv", "runs", "*.zarr"} <= set(env["excludes"])
    # Ray refuses to merge a job's runtime_env with the driver's on a shared variable.
    assert not set(env["env_vars"]) & set(FORWARDED_ENV)
    assert not any(SECRETISH.search(k) for k in env["env_vars"])


def test_forwarded_env_holds_settings_but_never_credentials():
    environ = {name: f"value-of-{name}" for name in CREDENTIAL_VARS}
    environ |= {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "HOME": "/home/someone",
    }
    env = forwarded_env(environ)
    assert env == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "RAY_AUTH_MODE": "disabled",
        "RAY_DATA_LOG_LEVEL": "WARNING",  # Ray Data's per-epoch lines (ray_output.py)
    }
    assert not set(FORWARDED_ENV) & set(CREDENTIAL_VARS)
    assert not any(SECRETISH.search(name) for name in FORWARDED_ENV)
    assert forwarded_env({"RAY_AUTH_MODE": "token"})["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize(
    "uri",
    [
        "https://user:s3cr3t@mlflow.example.com",
        "http://token@mlflow.example.com:5000",
        "https://mlflow.example.com/?token=s3cr3t",
        "postgresql://mlflow:s3cr3t@db:5432/mlflow",
    ],
)
def test_tracking_uri_with_credentials_is_not_forwarded(uri):
    env = forwarded_env({"MLFLOW_TRACKING_URI": uri, "AWS_SECRET_ACCESS_KEY": "x"})
    assert env == {"RAY_AUTH_MODE": "disabled", "RAY_DATA_LOG_LEVEL": "WARNING"}


def test_init_ray_passes_only_forwarded_env(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(connect, "probe_address", lambda address: None)  # no cluster here
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name in CREDENTIAL_VARS:
        monkeypatch.setenv(name, f"fake-{name}-{uuid.uuid4().hex}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://u:p@mlflow.example.com")
    with pytest.warns(UserWarning, match="not forwarded") as warned:
        connect.init_ray()
    assert "u:p@" not in str(warned[0].message)
    (kwargs,) = calls
    env = kwargs["runtime_env"]["env_vars"]
    assert env == forwarded_env(os.environ)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert not set(env) & set(CREDENTIAL_VARS)
    assert not any(os.environ[name] in json.dumps(kwargs) for name in CREDENTIAL_VARS)
    # A new local instance: no dashboard, worker logs on the driver; an address: neither.
    assert kwargs["address"] is None
    assert kwargs["include_dashboard"] is False and kwargs["log_to_driver"] is True
    # Ray's own output kept short: every worker's setup hook, the driver's ray logger
    assert kwargs["runtime_env"]["worker_process_setup_hook"] == SETUP_HOOK
    assert kwargs["logging_level"] == logging.WARNING
    calls.clear()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    connect.init_ray()
    assert calls[0]["address"] == "127.0.0.1:6379" and "include_dashboard" not in calls[0]
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    connect.init_ray("127.0.0.1:1")  # already connected: no second init
    assert len(calls) == 1


def test_init_ray_prints_the_dashboard_and_disables_token_auth_by_default(monkeypatch):
    import types

    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    context = types.SimpleNamespace(dashboard_url="127.0.0.1:8265")
    monkeypatch.setattr(ray, "init", lambda **kwargs: context)
    lines: list[str] = []
    connect.init_ray(log=lines.append)
    # the driver's own local instance must not write a token later drivers lack
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert lines == ["Ray dashboard: http://127.0.0.1:8265"]
    context.dashboard_url = ""
    connect.init_ray(log=lines.append)
    assert lines[-1].startswith("Ray dashboard: none")


def test_stop_ends_exactly_the_clusters_sessions():
    ours = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        deadline = time.time() + 10
        while len(session_pids(ours.pid)) < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert len(session_pids(ours.pid)) == 3  # sh and both sleeps
        assert LocalCluster(sessions=[ours.pid]).stop(grace=5) == 0
        ours.wait(timeout=5)
        assert session_pids(ours.pid) == []
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


TINY = [
    "data.num_functions=60",
    "data.num_train=50",
    "data.num_points=40",
    "data.modalities=[sine,tanh]",
    *TINY_META_MODEL,
    "run.eval_bins=[[0.05,0.1]]",
    "run.eval_batch_size=16",
    "run.eval_repeats=1",
    "run.batch_size=4",
    "run.log_every=1",
    "run.steps=2",
    "run.eval_every=2",
    "run.checkpoint_every=2",
]


def files_holding(root: Path, needles: list[bytes]) -> tuple[int, list[str]]:
    """(regular files under ``root``, those whose bytes contain any of ``needles``)."""
    count, hits = 0, []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            count += 1
            data = path.read_bytes()
            if any(n in data for n in needles):
                hits.append(str(path))
    return count, hits


def leak_probe(secrets: list[str]):
    """A ``probe`` for ``train_on_local_cluster``: where the live cluster shows ``secrets``.

    Scans the state API (actors, jobs, tasks with ``detail=True``), the dashboard's
    ``/api/jobs/`` and every file under each node's temp dir (``session_*/logs`` included).
    """

    def probe(cluster: LocalCluster, submission_id: str) -> dict:
        from ray.util.state import list_actors, list_jobs, list_tasks

        kw = dict(address=cluster.dashboard_url, detail=True, limit=10000, timeout=60)
        views = {f.__name__: str(f(**kw)) for f in (list_actors, list_jobs, list_tasks)}
        with urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=30) as r:
            views["/api/jobs/"] = r.read().decode()
        leaks = [where for where, text in views.items() if any(s in text for s in secrets)]
        logs = [Path(cluster.root) / n / "session_latest/logs" for n in ("head", "node1")]
        count, hits = files_holding(Path(cluster.root), [s.encode() for s in secrets])
        return {
            "leaks": leaks + hits,
            "files": count,
            "runtime_env_agent_logs": sum((d / "runtime_env_agent.log").is_file() for d in logs),
            "jobs_api_has_job": submission_id in views["/api/jobs/"],
            # Forwarded settings are visible there: the scan does see runtime_envs.
            "endpoint_shown": any("AWS_ENDPOINT_URL" in v for v in views.values()),
        }

    return probe


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_two_node_cluster_trains_across_both_nodes_from_s3(tmp_path, capfd, monkeypatch, mlflow_db):
    import ray

    from pipelines.engine.checkpoint import load_checkpoint

    # Unique fake credentials in the environment of this process, the `ray job submit` CLI
    # and every node: none may show up in Ray's APIs, logs, the run directory or MLflow.
    key, secret = f"fake-key-{uuid.uuid4().hex}", f"fake-secret-{uuid.uuid4().hex}"
    token = f"fake-token-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    secrets = [key, secret, token]
    was_initialized = ray.is_initialized()
    placement = train_on_local_cluster(
        "configs/experiments/default.yaml",
        tmp_path,
        TINY,
        num_nodes=2,
        s3=True,
        s3_credentials=(key, secret),
        probe=leak_probe(secrets),
    )
    out = capfd.readouterr().out
    with capfd.disabled():  # visible with -s: where the time went
        print(f"\ntwo-node run: {placement['timings']}, workers {placement['train_workers']}")
    # One training worker on the head, one on the joined raylet.
    nodes = placement["nodes"]
    assert sorted(nodes.values()) == ["head", "worker"]
    workers = placement["train_workers"]
    assert len(workers) == 2 and {w["node_id"] for w in workers} == set(nodes)
    assert placement["left_processes"] == 0
    # Rank 0 wrote checkpoints to the shared directory; the driver evaluated them.
    assert load_checkpoint(tmp_path / "default/checkpoints/last.pt")["step"] == 2
    assert (tmp_path / "default/results_val.md").is_file()  # train reports validation
    assert "store s3://mia-local-cluster/synthetic.zarr" in out
    # Credentials reach the nodes by their environment only: no runtime_env carries them.
    probe = placement["probe"]
    assert probe["leaks"] == [], f"credentials found in {probe['leaks']}"
    assert probe["files"] > 20 and probe["runtime_env_agent_logs"] == 2
    assert probe["jobs_api_has_job"] and probe["endpoint_shown"]
    assert not any(s in out for s in secrets)
    # ... nor in the run directory and the MLflow store (sqlite file, artifacts).
    assert (tmp_path / "mlflow.db").is_file()
    count, hits = files_holding(tmp_path, [s.encode() for s in secrets])
    assert count > 3 and hits == [], f"credentials found in {hits}"
    # Nothing of the cluster is left, and the test process never joined it.
    assert not [p for sid in placement["sessions"] for p in session_pids(sid)]
    assert ray.is_initialized() == was_initialized

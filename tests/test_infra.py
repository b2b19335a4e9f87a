"""infra/: every manifest parses and points at code and configs that exist; the local
two-node Ray cluster trains across both nodes and leaves nothing running."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mia_core.config import load_config
from pipelines.cluster.local import LocalCluster, session_pids
from pipelines.cluster.local_run import train_on_local_cluster
from pipelines.engine.ray_train import FORWARDED_ENV

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
YAMLS = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), *(REPO / "configs").rglob("*.yaml")])
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)


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


def test_constraints_pin_every_direct_dependency_at_the_tested_version():
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (INFRA / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["data"]]
    for req in map(Requirement, direct):
        name = canonicalize_name(req.name)
        hint = "regenerate: python infra/docker/freeze_constraints.py > .../constraints.txt"
        assert name in pins, f"{name} not pinned; {hint}"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert pins["torch"] == "2.13.0"
    assert pins["ray"] == metadata.version("ray")


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
    "model.width=16",
    "model.context_dim=16",
    "model.context_tokens=4",
    "method.inner_steps=2",
    "method.sft.dim=16",
    "method.sft.mlp_dim=16",
    "method.sft.heads=2",
    "run.eval_bins=[[0.05,0.1]]",
    "run.eval_batch_size=16",
    "run.eval_repeats=1",
    "run.batch_size=4",
    "run.log_every=1",
    "run.steps=2",
    "run.eval_every=2",
    "run.checkpoint_every=2",
]


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_two_node_cluster_trains_across_both_nodes_from_s3(tmp_path, capfd):
    import ray

    from pipelines.engine.checkpoint import load_checkpoint

    was_initialized = ray.is_initialized()
    placement = train_on_local_cluster(
        "configs/experiments/default.yaml", tmp_path, TINY, num_nodes=2, s3=True
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
    assert (tmp_path / "default/results.md").is_file()
    assert "store s3://mia-local-cluster/synthetic.zarr" in out
    assert "local-cluster-secret" not in out  # credentials reach nodes by environment only
    # Nothing of the cluster is left, and the test process never joined it.
    assert not [p for sid in placement["sessions"] for p in session_pids(sid)]
    assert ray.is_initialized() == was_initialized

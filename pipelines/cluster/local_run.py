"""Run the training job across a :class:`~pipelines.cluster.local.LocalCluster`.

Starts the cluster, optionally a moto S3 server holding the signal store, submits
``ray_jobs/train.py`` with ``ray job submit --runtime-env infra/ray/runtime_env.yaml
--working-dir <repo>`` (one Ray Train worker per node, ``SPREAD``), reads from Ray's state
API on which node every training worker and read task ran, and stops everything it
started. ``scripts/local_cluster.sh`` is the command line::

    python -m pipelines.cluster.local_run --out runs/local-cluster [--s3] run.steps=20

Credentials (the moto server's S3 keys) reach the nodes only through the environment of
their ``ray start`` (:attr:`LocalCluster.env`), never through ``--runtime-env``/
``--runtime-env-json``, the entrypoint or a config: Ray shows runtime_envs and entrypoints
in plain text in its state API, dashboard and logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mia_core.config import ConfigError, load_config
from pipelines.cluster.local import LocalCluster, free_port, ray_cli
from pipelines.data.resolve import build_synthetic_store
from pipelines.data.stores import make_location
from pipelines.tracking.provenance import COMMIT_ENV, git_commit

REPO = Path(__file__).resolve().parents[2]
RUNTIME_ENV = REPO / "infra" / "ray" / "runtime_env.yaml"


def submit_job(
    cluster: LocalCluster, entrypoint: list[str], runtime_env: Path = RUNTIME_ENV
) -> str:
    """``ray job submit --runtime-env <recipe> --working-dir <repo>``; returns the job id.

    Streams the job's logs to stdout and raises if the job does not succeed. The recipe is
    a committed file without secrets; the job gets credentials from its node's environment.
    """
    submission_id = f"mia-local-{int(time.time())}-{os.getpid()}"
    cmd = [
        ray_cli(),
        "job",
        "submit",
        f"--address={cluster.dashboard_url}",
        f"--runtime-env={runtime_env}",
        f"--working-dir={REPO}",
        f"--submission-id={submission_id}",
        "--",
        *(["env", f"{COMMIT_ENV}={commit}"] if (commit := git_commit()) else []),
        *entrypoint,
    ]  # the working-dir copy has no .git: the runs record the driver's commit
    rc = subprocess.call(cmd, cwd=REPO, env=cluster.node_env())
    if rc != 0:
        raise RuntimeError(f"ray job {submission_id} failed (rc={rc})")
    return submission_id


def job_placement(cluster: LocalCluster, submission_id: str) -> dict:
    """Where the job ran: Ray Train workers and Ray Data read tasks per node.

    Returns ``{"nodes": {node_id: "head"|"worker"}, "train_workers": [{node_id, pid}],
    "tasks": {node_id: {task name: count}}}`` read from Ray's state API.
    """
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors, list_tasks

    job_id = JobSubmissionClient(cluster.dashboard_url).get_job_info(submission_id).job_id
    roles = {n["node_id"]: "head" if n["is_head"] else "worker" for n in cluster.nodes()}
    actors = list_actors(
        address=cluster.dashboard_url,
        filters=[("class_name", "=", "RayTrainWorker"), ("job_id", "=", job_id)],
        detail=True,
        limit=1000,
    )
    workers = [{"node_id": a.node_id, "pid": a.pid} for a in actors]
    tasks: dict[str, Counter] = {}
    for t in list_tasks(
        address=cluster.dashboard_url, filters=[("job_id", "=", job_id)], detail=True, limit=10000
    ):
        if t.type == "NORMAL_TASK" and t.node_id:
            tasks.setdefault(t.node_id, Counter())[t.name] += 1
    return {
        "nodes": roles,
        "train_workers": workers,
        "tasks": {k: dict(v) for k, v in tasks.items()},
    }


# Throwaway credentials of the local moto server (moto accepts any).
MOTO_CREDENTIALS = ("local-cluster-key", "local-cluster-secret")


@contextlib.contextmanager
def moto_s3(
    bucket: str, timeout: float = 30.0, credentials: tuple[str, str] = MOTO_CREDENTIALS
) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with ``bucket``; yields the AWS_* environment for it.

    Args:
        bucket: bucket to create.
        timeout: seconds to wait for the server.
        credentials: ``(access key id, secret access key)`` to use; they travel to the
            nodes only through the environment, never through a runtime_env or a config.
    """
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto S3 server on {endpoint} did not start") from None
                time.sleep(0.2)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def build_s3_store(config: str, overrides: list[str], url: str, env: dict[str, str]) -> None:
    """Write the synthetic store described by ``config`` + ``overrides`` to ``url`` on S3."""
    cfg = load_config(config, overrides)
    opts = {"key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    build_synthetic_store(cfg, make_location(url, opts, endpoint_url=env["AWS_ENDPOINT_URL"]))


def train_on_local_cluster(
    config: str,
    out_dir: Path,
    overrides: list[str],
    num_nodes: int = 2,
    s3: bool = False,
    s3_credentials: tuple[str, str] = MOTO_CREDENTIALS,
    probe: Callable[[LocalCluster, str], Any] | None = None,
    num_gpus: int | None = None,
) -> dict:
    """Start a local cluster, run ``ray_jobs/train.py`` across it, stop it; returns placement.

    The run spreads one Ray Train worker per node (``run.num_workers = num_nodes``, half a
    CPU each, ``SPREAD``) and lets read tasks take the other half; ``out_dir`` is the
    shared storage of every node (checkpoints, Ray Train storage, MLflow, and the
    synthetic store unless ``s3``).

    Args:
        config: experiment YAML, relative to the repository root (the job's working
            directory).
        out_dir: shared run directory (``run.out_dir``).
        overrides: further ``section.key=value`` overrides.
        num_nodes: Ray nodes including the head.
        s3: put the signal store on a local moto S3 server (``data.store=s3://...``); every
            node reads it with credentials from its environment.
        s3_credentials: ``(key id, secret key)`` of that server, exported into the
            environment of every ``ray start``.
        probe: called as ``probe(cluster, submission_id)`` after the job succeeded, while
            the cluster still runs; its result is returned as ``placement["probe"]``.
        num_gpus: GPUs of the cluster, shared over its nodes (``None``: this machine's).

    Raises:
        ConfigError: the config or an override is invalid (checked before any start).
        RuntimeError: a node did not come up, the job failed, or the training workers did
            not run on ``num_nodes`` different nodes.
    """
    job_overrides = [
        f"run.out_dir={Path(out_dir).resolve()}",
        f"run.num_workers={num_nodes}",
        "run.cpus_per_worker=0.5",
        "run.read_cpus=0.5",
        "run.placement_strategy=SPREAD",
        *overrides,
    ]
    load_config(str(REPO / config), job_overrides)  # fail before starting anything
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if s3:
            env = stack.enter_context(moto_s3("mia-local-cluster", credentials=s3_credentials))
            url = "s3://mia-local-cluster/synthetic.zarr"
            build_s3_store(str(REPO / config), overrides, url, env)
            job_overrides.append(f"data.store={url}")
        entry = ["python", "ray_jobs/train.py", "--config", config, *job_overrides]
        return _train(entry, num_nodes, env, probe, num_gpus)


def _train(
    entry: list[str],
    num_nodes: int,
    env: dict[str, str],
    probe: Callable[[LocalCluster, str], Any] | None = None,
    num_gpus: int | None = None,
) -> dict:
    cluster = LocalCluster(num_nodes=num_nodes, env=env, num_gpus=num_gpus)
    t0 = time.time()
    timings: dict[str, float] = {}
    ok = False
    try:
        cluster.start()
        timings["start_s"] = round(time.time() - t0, 1)
        print(f"[local-cluster] {num_nodes} nodes alive in {timings['start_s']} s:", flush=True)
        for n in cluster.nodes():
            role = "head" if n["is_head"] else "worker"
            line = f"{role:6s} {n['node_id']} CPU={n['cpus']:g} GPU={n['gpus']:g}"
            print(f"[local-cluster]   {line}", flush=True)
        t1 = time.time()
        submission_id = submit_job(cluster, entry)
        timings["job_s"] = round(time.time() - t1, 1)
        placement = job_placement(cluster, submission_id)
        if probe is not None:
            placement["probe"] = probe(cluster, submission_id)
        timings["cluster_cpu_s"] = round(cluster.cpu_seconds(), 1)
        ok = True
    finally:
        t2 = time.time()
        left = cluster.stop(remove_root=ok)
        timings["stop_s"] = round(time.time() - t2, 1)
        if left:
            print(f"[local-cluster] warning: {left} processes still alive after stop", flush=True)
        if not ok:
            print(f"[local-cluster] failed; node logs kept under {cluster.root}", flush=True)
    timings["total_s"] = round(time.time() - t0, 1)
    placement["timings"] = timings
    placement["left_processes"] = left
    placement["sessions"] = list(cluster.sessions)
    nodes_used = {w["node_id"] for w in placement["train_workers"]}
    for w in placement["train_workers"]:
        role = placement["nodes"].get(w["node_id"], "?")
        print(f"[local-cluster] train worker pid {w['pid']} on {role} {w['node_id']}", flush=True)
    for node, names in placement["tasks"].items():
        role = placement["nodes"].get(node, "?")
        print(f"[local-cluster] tasks on {role} {node}: {names}", flush=True)
    if len(nodes_used) < num_nodes:
        raise RuntimeError(
            f"training workers ran on {len(nodes_used)} node(s), expected {num_nodes}"
        )
    print(f"[local-cluster] done, cluster stopped: {timings}", flush=True)
    return placement


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring; extra arguments are config overrides."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/experiments/default.yaml")
    p.add_argument("--out", default=str(REPO / "runs" / "local-cluster"), help="shared storage")
    p.add_argument("--nodes", type=int, default=2, help="Ray nodes including the head")
    p.add_argument("--s3", action="store_true", help="store on a local moto S3 server")
    p.add_argument(
        "--num-gpus", type=int, default=None, help="GPUs shared over the nodes (default: all)"
    )
    p.add_argument("--placement-json", default="", help="write the placement report here")
    p.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = p.parse_args(argv)
    # SIGTERM becomes SystemExit so that the cluster's finally block stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        placement = train_on_local_cluster(
            args.config, Path(args.out), args.overrides, args.nodes, args.s3, num_gpus=args.num_gpus
        )
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"[local-cluster] error: {err}", file=sys.stderr)
        return 1
    if args.placement_json:
        Path(args.placement_json).write_text(json.dumps(placement, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

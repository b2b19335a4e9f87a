"""MLflow run groups: a parent run (a sweep or an ablation study) with one child per run.

Everything here goes through :class:`mlflow.MlflowClient`, never the fluent API, so a
parent stays open while child runs are started and ended with the fluent API in the same
process (``pipelines.tracking.tracker.Tracker`` ends any active fluent run when it starts).

A child is created up front with the tag ``mlflow.parentRunId`` and the flattened config
as parameters, and its id is written to ``<run_dir>/mlflow_run_id``: the training job's
``Tracker`` then resumes that run instead of creating its own, so step metrics, results
and checkpoints land in the child. Ids are kept in files, so an interrupted sweep or
study logs into the same runs when resumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mia_core.config import Config, flatten_config
from pipelines.tracking.experiments import ensure_experiment
from pipelines.tracking.provenance import source_tags
from pipelines.tracking.tracker import tracking_uri

PARENT_TAG = "mlflow.parentRunId"


def client_for(cfg: Config):
    """An ``MlflowClient`` on ``cfg``'s tracking URI."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri(cfg))


def experiment_id(cfg: Config) -> str:
    """Id of ``run.experiment``, created (artifacts beside a local store) if missing."""
    return ensure_experiment(tracking_uri(cfg), cfg.run.experiment, cfg.run.out_dir)


def _params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def open_run(
    cfg: Config,
    id_file: Path,
    name: str,
    params: dict[str, Any] | None = None,
    parent_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Create (or find again through ``id_file``) an MLflow run; returns its id.

    Args:
        cfg: config giving the tracking URI and experiment.
        id_file: where the run id is kept; an existing file means "resume this run".
        name: run name.
        params: parameters logged once, on creation (default: ``flatten_config(cfg)``).
        parent_id: makes this a child run of ``parent_id``.
        tags: extra tags (over the provenance tags, :func:`source_tags`).
    """
    client = client_for(cfg)
    if id_file.exists():
        run_id = id_file.read_text().strip()
        if client.get_run(run_id).info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id
    all_tags = {**source_tags(), **(tags or {})}
    if parent_id:
        all_tags[PARENT_TAG] = parent_id
    run = client.create_run(experiment_id(cfg), run_name=name, tags=all_tags)
    _params(client, run.info.run_id, flatten_config(cfg) if params is None else params)
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run.info.run_id)
    return run.info.run_id


def log_metrics(cfg: Config, run_id: str, values: dict[str, Any], step: int = 0) -> None:
    """Log finite numbers (others are skipped) to ``run_id``."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, step)
        for k, v in values.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and v == v
        and abs(float(v)) != float("inf")
    ]
    for i in range(0, len(items), 500):
        client_for(cfg).log_batch(run_id, metrics=items[i : i + 500])


def log_artifacts(cfg: Config, run_id: str, paths: list[Path], subdir: str | None = None) -> None:
    """Upload files or folders to ``run_id``."""
    client = client_for(cfg)
    for p in paths:
        p = Path(p)
        if p.is_dir():
            client.log_artifacts(run_id, str(p), subdir)
        elif p.exists():
            client.log_artifact(run_id, str(p), subdir)


def close_run(cfg: Config, run_id: str, status: str = "FINISHED") -> None:
    """End ``run_id`` with ``status`` (FINISHED, FAILED or KILLED)."""
    client_for(cfg).set_terminated(run_id, status=status)


def child_runs(cfg: Config, parent_id: str) -> list:
    """The child runs of ``parent_id`` (``mlflow.entities.Run`` objects)."""
    return client_for(cfg).search_runs(
        [experiment_id(cfg)], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'"
    )

"""MLflow tracking for a run: one MLflow run per training run, resumed across restarts.

The tracking URI comes from ``run.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a
sqlite store ``<run.out_dir>/mlflow.db`` (MLflow's file store is deprecated). The MLflow
run id is kept in ``<run_dir>/mlflow_run_id`` so a resumed or evaluated run logs into
the same MLflow run (a run directory moved away from its store logs into a new one, with
a warning). A new run records its command and git commit
(:mod:`pipelines.tracking.provenance`). Parameters are the flattened resolved config with
secrets redacted; URIs are printed without credentials.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from mia_core.config import Config, flatten_config
from pipelines.data.stores.location import redact_url
from pipelines.tracking.experiments import ensure_experiment
from pipelines.tracking.provenance import source_tags

# MLflow draws a progress bar per artifact download (model logging validates its input
# example by downloading the model it just logged): carriage-return noise in job logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# Redacted tracking URI -> the URI with credentials it was saved from in this process.
_UNREDACTED: dict[str, str] = {}


def tracking_uri(cfg: Config) -> str:
    """The MLflow tracking URI for ``cfg`` (see the module docstring).

    ``config.yaml`` keeps ``run.tracking_uri`` without credentials (``https://***@host``);
    read back (evaluation after training, a resume) it stands for the URI it was saved
    from in this process, else for ``MLFLOW_TRACKING_URI`` when that redacts to it.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri := cfg.run.tracking_uri:
        if redact_url(uri) != uri:
            _UNREDACTED[redact_url(uri)] = uri
        elif uri in _UNREDACTED:
            return _UNREDACTED[uri]
        elif env and redact_url(env) == uri:
            return env
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(cfg.run.out_dir).resolve() / 'mlflow.db'}"


def _has_run(uri: str, run_id: str) -> bool:
    """Whether the store at ``uri`` holds run ``run_id`` (a moved run directory may not)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def set_fluent_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without changing the process environment.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which
    :func:`tracking_uri` would then prefer: one run's store would become the default of
    every later run in the same process (sweeps, ablations, tests).
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


class Tracker:
    """Thin wrapper over MLflow's fluent API for one run directory.

    Args:
        cfg: resolved config.
        run_dir: the run directory (holds ``mlflow_run_id``).
        system_metrics: sample CPU / memory / GPU use into the run while it is open
            (training; ``run.system_metrics`` turns it off).
    """

    def __init__(self, cfg: Config, run_dir: Path, system_metrics: bool = False) -> None:
        import mlflow

        self.mlflow = mlflow
        self.uri = tracking_uri(cfg)
        Path(cfg.run.out_dir).mkdir(parents=True, exist_ok=True)
        set_fluent_tracking_uri(self.uri)
        exp_id = ensure_experiment(self.uri, cfg.run.experiment, cfg.run.out_dir)
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else None
        if run_id is not None and not _has_run(self.uri, run_id):  # a moved run directory
            print(
                f"warning: MLflow run {run_id} of {run_dir} is not in {redact_url(self.uri)}; "
                "logging to a new MLflow run",
                file=sys.stderr,
            )
            run_id = None
        if mlflow.active_run() is not None:
            mlflow.end_run()
        # its INFO lines ("Started monitoring...", "Skip logging GPU metrics") on every run
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        self.run = mlflow.start_run(
            run_id=run_id,
            experiment_id=exp_id,
            run_name=cfg.run.name,
            log_system_metrics=system_metrics and cfg.run.system_metrics,
            tags=source_tags() if run_id is None else None,  # the command that made it
        )
        self.run_id = self.run.info.run_id
        if run_id is None:
            run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id)
            params = flatten_config(cfg)
            for i in range(0, len(params), 100):
                mlflow.log_params(dict(list(params.items())[i : i + 100]))

    @property
    def display_uri(self) -> str:
        """Tracking URI without credentials."""
        return redact_url(self.uri)

    def metrics(self, values: dict[str, Any], step: int) -> None:
        """Log finite numeric values at ``step`` (MLflow keys: ``/`` kept, others as is)."""
        clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and v == v}
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def artifact(self, path: str | Path, subdir: str | None = None) -> None:
        """Upload a file or directory."""
        path = Path(path)
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), subdir)
        elif path.exists():
            self.mlflow.log_artifact(str(path), subdir)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run."""
        self.mlflow.end_run(status=status)

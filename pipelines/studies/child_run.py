"""One training run of a study as an MLflow child run, skipped when already finished.

Sweeps, ablations and reproductions all train many ordinary runs through
:func:`pipelines.jobs.train`; each is a child of the study's MLflow parent run, named by
its place in the study (``dataset/variant/seed0``), and a finished one (its
``metrics.json`` exists) is not trained again, so re-running a study continues it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mia_core.config import Config
from pipelines import jobs
from pipelines.engine.run_dir import run_dir_of
from pipelines.tracking import run_groups


def train_child(
    cfg: Config,
    parent: str,
    label: str,
    tags: dict[str, str],
    log: Callable[[str], None] = print,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Train and evaluate ``cfg`` as a child of ``parent`` unless finished.

    Args:
        cfg: the run's config (its run directory keeps the MLflow child run id).
        parent: the study's MLflow parent run id.
        label: the child's name in MLflow and the prefix of its log lines.
        tags: extra MLflow tags of the child.
        log: line printer.
        **train_kwargs: passed to :func:`pipelines.jobs.train` (``local``, ``address``,
            ``init_hook``, ``figures``...).

    Returns:
        The run's ``metrics.json``.
    """
    run_dir = run_dir_of(cfg)
    done = run_dir / "metrics.json"
    if done.exists():
        log(f"[{label}] finished before: skipped")
    else:
        run_groups.open_run(cfg, run_dir / "mlflow_run_id", label, parent_id=parent, tags=tags)
        jobs.train(cfg, log=lambda s: log(f"[{label}] {s}"), **train_kwargs)
    # The training Tracker names its MLflow run after run.name (seed<k>): restore the label.
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run_groups.client_for(cfg).set_tag(run_id, "mlflow.runName", label)
    return json.loads(done.read_text())

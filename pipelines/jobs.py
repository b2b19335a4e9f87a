"""The jobs every entry point calls: train a config's task, evaluate a finished run.

``train`` looks ``method.name`` up in the task registry and runs the one engine on the
task, in this process (``local=True``) or on Ray Train, then reports the
validation-selected checkpoint on the validation split (``evaluate_split``: the studies'
final tables ask for ``test``); ``evaluate`` writes the report of a run directory on the
split it is asked for (``mia-inr evaluate --split test`` is the final report, see
docs/splits.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mia_core.config import Config
from pipelines.data.resolve import open_training_store
from pipelines.engine.local import run_local
from pipelines.engine.loop import TrainResult
from pipelines.engine.memory_estimate import check_memory, training_estimate
from pipelines.engine.ray_train import run_on_ray
from pipelines.engine.run_dir import load_run_config
from pipelines.engine.task import check_split
from pipelines.engine.trainer import Trainer
from pipelines.tasks.meta import MetaLearningTask
from pipelines.tasks.registry import get_task
from pipelines.tracking.reach import check_tracking
from pipelines.tracking.tracker import tracking_uri


def train(
    cfg: Config,
    *,
    local: bool = False,
    address: str | None = None,
    resume: bool = True,
    evaluate_after: bool = True,
    log: Callable[[str], None] = print,
    init_hook: Callable[[Trainer], None] | None = None,
    figures: bool = True,
    callbacks: list | None = None,
    read_cpus: float | None = None,
    evaluate_split: str = "val",
) -> TrainResult:
    """Train ``cfg``'s task, then report the validation-selected checkpoint on a split.

    Args:
        cfg: resolved config.
        local: one process without Ray; otherwise Ray Train on ``address``.
        address: Ray cluster address (default ``RAY_ADDRESS`` or a new local instance).
        resume: continue an interrupted (or finished) run of the same name; ``False``
            starts afresh.
        evaluate_after: run the task's report of ``evaluate_split`` at the end.
        log: line printer (one process; Ray workers print to the job log).
        init_hook: called with each worker's trainer before any resume.
        figures: draw the report's figures.
        callbacks: Ray Train callbacks (a Tune trial passes its report callback).
        read_cpus: CPUs per Ray Data read task (default ``run.read_cpus``).
        evaluate_split: ``val`` (default: training never scores the test split) or
            ``test`` (a study's final table).

    Raises:
        ConfigError: ``evaluate_split`` is neither ``val`` nor ``test``.
    """
    check_split(evaluate_split)  # before any step
    task = get_task(cfg.method.name)
    check_tracking(tracking_uri(cfg))  # before Ray: a dead server fails here in one line
    if issubclass(task, MetaLearningTask):  # before any step: too big fails in one line
        on_node = 1 if local or address or os.environ.get("RAY_ADDRESS") else cfg.run.num_workers
        check_memory(training_estimate(cfg, open_training_store(cfg), on_node))
    if local:
        result = run_local(task, cfg, log, resume, init_hook)
    else:
        result = run_on_ray(task, cfg, address, resume, callbacks, read_cpus, init_hook)
    if evaluate_after:
        what = "validation" if evaluate_split == "val" else "test"
        log(f"evaluating the selected checkpoint on the {what} split")
        result.evaluation = task.evaluate(
            result.run_dir, log=log, figures=figures, split=evaluate_split
        )
        result.evaluation_split = evaluate_split
    return result


def evaluate(
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    track: bool = True,
    figures: bool = True,
    *,
    split: str,
) -> Any:
    """Evaluate a finished run directory's selected checkpoint on ``split``.

    ``split`` has no default: ``test`` is the final report only, asked for explicitly.

    Raises:
        ConfigError: ``split`` is neither ``val`` nor ``test``.
    """
    check_split(split)
    cfg = load_run_config(run_dir)
    task = get_task(cfg.method.name)
    return task.evaluate(Path(run_dir), log=log, track=track, figures=figures, split=split)

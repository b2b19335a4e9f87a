"""Training runs of a study as MLflow child runs, skipped when finished, optionally concurrent.

Sweeps, ablations and reproductions all train many ordinary runs through
:func:`pipelines.jobs.train`; each is a child of the study's MLflow parent run, named by
its place in the study (``dataset/variant/seed0``), and a finished one (its
``metrics.json`` exists) is not trained again, so re-running a study continues it.
A child ends with its test-split report (``evaluate_split="test"``): the studies' final
tables are made of test metrics, and nothing a study chooses reads them (docs/splits.md).

:func:`train_children` runs a list of them, with ``workers > 1`` in that many spawned
processes at once (``threads`` torch threads each). On a small machine two 1-thread runs
side by side train about 1.4x more signals per second than one 2-thread run (small
matmuls do not scale across threads), and on a many-core node a study of 15 runs no longer
leaves most cores idle. Each worker is a fresh interpreter (spawn, no forked OpenMP or
MLflow state); run folders are disjoint, MLflow children are opened by the worker itself.
A child with an ``init_hook`` (a closure, which does not pickle) trains in this process
after the others, in its place in the list (the ablation's frozen SFT after its CAVIA runs).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import torch

from mia_core.config import Config
from pipelines import jobs
from pipelines.engine.run_dir import run_dir_of
from pipelines.tracking import run_groups


@dataclass(frozen=True)
class ChildJob:
    """One run of a study.

    Attributes:
        cfg: the run's config (its run directory keeps the MLflow child run id).
        label: the child's name in MLflow and the prefix of its log lines.
        key: the child's place in its study (``(method, seed)``...), keying its metrics.
        tags: extra MLflow tags of the child.
        hook: ``init_hook`` of :func:`pipelines.jobs.train` (trained in this process).
    """

    cfg: Config
    label: str
    key: Hashable
    tags: dict[str, str] = field(default_factory=dict)
    hook: Callable[[Any], None] | None = None


def is_finished(cfg: Config) -> bool:
    """Whether the run of ``cfg`` has trained and been evaluated (its ``metrics.json``)."""
    return (run_dir_of(cfg) / "metrics.json").exists()


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
    if is_finished(cfg):
        log(f"[{label}] finished before: skipped")
    else:
        run_groups.open_run(cfg, run_dir / "mlflow_run_id", label, parent_id=parent, tags=tags)
        # The final tables score the test split, asked for explicitly (jobs.train: val).
        jobs.train(cfg, log=lambda s: log(f"[{label}] {s}"), evaluate_split="test", **train_kwargs)
    # The training Tracker names its MLflow run after run.name (seed<k>): restore the label.
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run_groups.client_for(cfg).set_tag(run_id, "mlflow.runName", label)
    return json.loads(done.read_text())


def train_children(
    children: Sequence[ChildJob],
    parent: str,
    log: Callable[[str], None] = print,
    *,
    workers: int = 1,
    threads: int = 1,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """Train every unfinished child (``workers`` at a time); returns their metrics in order.

    Args:
        children: the runs, in the order they are started and returned.
        parent: the study's MLflow parent run id.
        log: line printer (the calling process's; workers print their lines themselves,
            each prefixed with its child's label).
        workers: concurrent runs; 1 trains them one after another in this process.
        threads: torch intra-op threads of each worker process.
        **train_kwargs: passed to :func:`pipelines.jobs.train`; they must pickle when
            ``workers > 1`` (a child's own ``hook`` need not).

    Raises:
        Exception: the first failing child's error, after the others in flight have
            finished (their progress is kept: a re-run resumes them).
    """
    pending = [c for c in children if not is_finished(c.cfg) and c.hook is None]
    if workers > 1 and len(pending) > 1:
        ctx = mp.get_context("spawn")
        n = min(workers, len(pending))
        log(f"training {len(pending)} runs, {n} at a time ({threads} thread(s) each)")
        with ProcessPoolExecutor(
            n, mp_context=ctx, initializer=torch.set_num_threads, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_train_in_worker, c, parent, train_kwargs) for c in pending]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                for f in futures:
                    f.cancel()
                raise failed[0].exception()
    return [
        train_child(c.cfg, parent, c.label, c.tags, log, init_hook=c.hook, **train_kwargs)
        for c in children
    ]


def _train_in_worker(child: ChildJob, parent: str, train_kwargs: dict[str, Any]) -> None:
    """Worker-process body: train one child, printing its lines (flushed, for live logs)."""

    def log(line: str) -> None:
        print(line, flush=True)

    train_child(child.cfg, parent, child.label, child.tags, log, **train_kwargs)

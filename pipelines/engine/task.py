"""The task protocol: what the one engine needs to know about a workflow.

A task is everything that differs between workflows (meta-learning an INR, classifying
INR weights, meta-continual learning): how its model is built from a config, its
parameter groups, the batches of one worker, the loss and logged statistics of a batch,
its validation score (lower is better) and its report of a split. The engine
(:class:`~pipelines.engine.trainer.Trainer` and :func:`~pipelines.engine.loop.train_loop`)
does everything else the same way for every task: the optimiser and schedule, one flat
all-reduce of gradients and statistics, the finite-loss check, clipping, progress, best
and last checkpoints, resume, MLflow, Ray Train.

A task object lives on one worker; the classmethods run on the driver.

Splits (docs/splits.md): training reads the training split, validation and checkpoint
selection the validation split; the report scores ``val`` (the end of ``mia-inr train``)
or ``test`` (``mia-inr evaluate --split test`` and the studies' final tables). A ``val``
report writes its files with a ``_val`` suffix (:func:`split_file`) and logs its MLflow
metrics under ``val/``, so it never overwrites or collides with the test report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from mia_core.config import Config, ConfigError

EVAL_SPLITS = ("val", "test")  # the splits a report may score


def check_split(split: str) -> str:
    """``split`` when it is a report split, else a one-line :class:`ConfigError`."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"evaluation split {split!r} is not one of {list(EVAL_SPLITS)}")
    return split


def split_file(name: str, split: str) -> str:
    """A report file's name for ``split``: ``results.md`` (test) or ``results_val.md`` (val).

    Works for folders too (``figures`` / ``figures_val``).
    """
    if check_split(split) == "test":
        return name
    stem, dot, ext = name.partition(".")
    return f"{stem}_{split}{dot}{ext}"


@dataclass
class WorkerContext:
    """Where a task runs.

    Attributes:
        device: this worker's device.
        rank: worker rank (0 validates and writes checkpoints).
        world: number of workers.
        shard: this worker's Ray Data shard of the ``"train"`` dataset the task asked
            for in :meth:`Task.ray_datasets`; ``None`` in one process.
    """

    device: torch.device
    rank: int = 0
    world: int = 1
    shard: Any = None


class Task(ABC):
    """One trainable workflow; see the module docstring.

    Attributes:
        model: the module whose parameters the engine optimises and checkpoints.
        nonfinite_hint: appended to the error raised on a non-finite loss (what to lower).
        report: the report of one split of a run directory (a ``staticmethod``), called
            as ``report(run_dir, log=..., track=..., figures=..., split=...)`` by
            :meth:`evaluate`.
    """

    model: torch.nn.Module
    nonfinite_hint: ClassVar[str] = "Lower run.outer_lr."
    report: ClassVar[Callable[..., Any]]

    def __init__(self, cfg: Config, ctx: WorkerContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    # -- driver side -------------------------------------------------------------------
    @classmethod
    def prepare(cls, cfg: Config) -> None:
        """Run once on the driver before any worker starts (e.g. build the store once)."""
        return None

    @classmethod
    def ray_datasets(cls, cfg: Config, read_cpus: float) -> dict[str, Any]:
        """Ray Data datasets the workers read (``"train"`` becomes ``ctx.shard``)."""
        return {}

    @classmethod
    def configure_process(cls, cfg: Config) -> None:
        """Process-wide settings of a one-process run (threads, precision)."""
        return None

    @classmethod
    def evaluate(
        cls,
        run_dir: Path,
        log: Callable[[str], None] = print,
        track: bool = True,
        figures: bool = True,
        split: str = "test",
    ) -> Any:
        """Evaluate the run's selected checkpoint on ``split``; write its report.

        Calls the task's ``report`` function, ``(run_dir, log=, track=, figures=, split=)``.

        Args:
            run_dir: the run directory.
            log: line printer.
            track: log the report to the run's MLflow run.
            figures: draw the report's figures.
            split: ``val`` (the end of training) or ``test`` (the final report only).

        Raises:
            ConfigError: ``split`` is neither ``val`` nor ``test``.
        """
        check_split(split)
        return cls.report(run_dir, log=log, track=track, figures=figures, split=split)

    # -- worker side -------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups; unset ``lr`` / ``weight_decay`` take ``run``'s."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    @abstractmethod
    def batches(self, epoch: int, skip: int) -> Iterable[Any]:
        """This worker's batches of ``epoch``, after the first ``skip`` (exact resume).

        Every worker must yield the same number of batches per epoch: a worker with one
        more would wait forever in the gradient all-reduce.
        """

    @abstractmethod
    def loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of ``batch`` at outer step ``step`` (1-based) and scalar statistics.

        The statistics are averaged across workers with the gradients and logged.
        """

    @abstractmethod
    def validate(self) -> tuple[float, dict[str, float]]:
        """Validation score (lower is better; never the test split) and logged values."""

    def batch_size(self, batch: Any) -> int:
        """Signals in ``batch`` (progress rate)."""
        return self.cfg.run.batch_size

    def describe(self) -> str:
        """First log line: what is trained on what."""
        n = sum(p.numel() for p in self.model.parameters())
        return f"{self.cfg.method.name} on {self.cfg.model.family} ({n:,} parameters)"

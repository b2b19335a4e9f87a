"""The task protocol: what the one engine needs to know about a workflow.

A task is everything that differs between workflows (meta-learning an INR, classifying
INR weights, meta-continual learning): how its model is built from a config, its
parameter groups, the batches of one worker, the loss and logged statistics of a batch,
its validation score (lower is better) and its test-split report. The engine
(:class:`~pipelines.engine.trainer.Trainer` and :func:`~pipelines.engine.loop.train_loop`)
does everything else the same way for every task: the optimiser and schedule, one flat
all-reduce of gradients and statistics, the finite-loss check, clipping, progress, best
and last checkpoints, resume, MLflow, Ray Train.

A task object lives on one worker; the classmethods run on the driver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from mia_core.config import Config


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
        report: the test-split report of a run directory (a ``staticmethod``), called as
            ``report(run_dir, log=..., track=..., figures=...)`` by :meth:`evaluate`.
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
    ) -> Any:
        """Evaluate the run's selected checkpoint on the test split; write its report.

        Calls the task's ``report`` function, ``(run_dir, log=, track=, figures=)``.
        """
        return cls.report(run_dir, log=log, track=track, figures=figures)

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

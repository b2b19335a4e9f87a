"""The one training loop, shared by the single-process run and every Ray Train worker.

``train_loop`` drives a :class:`~pipelines.engine.trainer.Trainer` over a task's batches:
progress lines (loss, the task's statistics, signals/s, ETA) on rank 0, validation every
``run.eval_every`` steps on rank 0 (never the test split) with the best score kept,
checkpoints every ``run.checkpoint_every`` steps and at every validation, exact resume,
MLflow metrics, and the full state at every step of ``run.snapshot_steps`` as
``checkpoints/step_<N>.pt`` (budget curves from one run). Where the other checkpoints go
is the caller's :class:`CheckpointSink`: files in the run directory (one process) or Ray
Train's storage (``pipelines.engine.ray_train``).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mia_core.config import Config, ConfigError
from mia_core.runtime import synchronize
from pipelines.engine.checkpoint import check_model_state, save_checkpoint
from pipelines.engine.run_dir import RESUME_HINT, refuse_fewer_steps, run_dir_of, snapshot_path
from pipelines.engine.task import Task, WorkerContext
from pipelines.engine.trainer import Trainer

# Ray keeps checkpoints ranked by "val_score"; one reported at a step without validation
# gets this score, so it is never preferred to a validated one (it is kept as the latest).
UNVALIDATED = 1.0e30


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        run_dir: folder with config, checkpoints and results.
        step: last completed outer step.
        best_step: step of the checkpoint selected on validation.
        best_val: its validation score (the task's, lower is better).
        evaluation: the task's report (``None`` when not evaluated).
        evaluation_split: the split that report scored (``val`` at the end of
            ``mia-inr train``, ``test`` for a study's final table), ``None`` when none.
        history: logged training records (rank 0).
    """

    run_dir: Path
    step: int
    best_step: int
    best_val: float
    evaluation: Any = None
    history: list[dict] = field(default_factory=list)
    evaluation_split: str | None = None

    @property
    def test_rows(self) -> list:
        """The test-split evaluation when it is a list of rows (meta-learning), else ``[]``."""
        rows = self.evaluation if self.evaluation_split == "test" else None
        return rows if isinstance(rows, list) else []


class CheckpointSink(Protocol):
    """Where the loop's checkpoints go (every worker calls it at the same steps)."""

    def __call__(
        self, trainer: Trainer, metrics: dict[str, float], improved: bool, last: bool
    ) -> None:
        """Save ``trainer``'s state at its step.

        Args:
            trainer: the worker's trainer (rank 0 writes; other ranks only report).
            metrics: ``step``, ``loss``, ``best_val`` and ``val_score`` (the score of
                this step's validation, or ``UNVALIDATED``).
            improved: this step's validation is the best so far.
            last: a ``run.checkpoint_every`` step or the final step.
        """


def _progress(rec: dict[str, float], cfg: Config, rate: float, eta: float) -> str:
    extra = " ".join(
        f"{k.split('/')[-1] if k.startswith('loss/') else k}={v:.4g}"
        for k, v in rec.items()
        if k not in ("loss", "grad_norm", "lr", "step", "epoch", "signals_per_s")
    )
    return (
        f"step {rec['step']:>6}/{cfg.run.steps} loss {rec['loss']:.4g} [{extra}] "
        f"{rate:.1f} signals/s eta {eta:.0f}s"
    )


def _maybe_inject_fault(cfg: Config, step: int, rank: int) -> None:
    if rank != 0 or step != cfg.run.fault_injection_step:
        return
    marker = run_dir_of(cfg) / f".fault_injected_{step}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        if cfg.run.fault_injection_kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault at step {step} (run.fault_injection_step)")


def train_loop(
    task_cls: type[Task],
    cfg: Config,
    ctx: WorkerContext,
    sink: CheckpointSink,
    resume_state: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    tracker: Any = None,
    init_hook: Callable[[Trainer], None] | None = None,
    on_ready: Callable[[Trainer], None] | None = None,
) -> tuple[Trainer, list[dict]]:
    """Train ``task_cls`` until ``run.steps``; see the module docstring.

    Args:
        task_cls: the registered task of ``cfg.method.name``.
        cfg: resolved config.
        ctx: this worker's device, rank, world size and data shard.
        sink: saves checkpoints (see :class:`CheckpointSink`).
        resume_state: a checkpoint to resume from, or ``None``.
        log: line printer (only rank 0 prints).
        tracker: :class:`~pipelines.tracking.tracker.Tracker` on rank 0, or ``None``.
        init_hook: called with the new trainer before any resume (the ablation study
            loads and freezes a trained CAVIA's INRs there).
        on_ready: called once the resume state has loaded into the model of ``cfg`` (at
            once without one), before any step: the single-process run saves its
            ``config.yaml`` there.

    Raises:
        CheckpointError: ``resume_state`` holds a model of another shape.
        ConfigError: ``run.steps`` is below the steps ``resume_state`` has trained.
    """
    torch.manual_seed(cfg.run.seed)
    task = task_cls(cfg, ctx)
    trainer = Trainer(task, cfg)
    say = log if ctx.rank == 0 else (lambda _s: None)
    if init_hook is not None:
        init_hook(trainer)
    if resume_state is not None:
        where = f"the checkpoint of run {cfg.run.name}"
        check_model_state(trainer.model, resume_state.get("model"), where, RESUME_HINT)
        trainer.load_state_dict(resume_state)
        refuse_fewer_steps(cfg, trainer.step)
        say(f"resumed at step {trainer.step} (epoch {trainer.epoch})")
    if on_ready is not None:
        on_ready(trainer)
    say(
        f"run {cfg.run.name}: {task.describe()}, device {ctx.device}, "
        f"{ctx.world} worker(s), steps {trainer.step}->{cfg.run.steps}"
    )
    history: list[dict] = []
    start_step, t0, seen = trainer.step, time.perf_counter(), 0
    wall0 = trainer.wall_seconds
    if cfg.run.steps == 0:  # no training: validate and keep the initialisation itself
        if ctx.rank == 0:
            score, values = task.validate()
            trainer.best_val, trainer.best_step = score, 0
            history.append({"step": 0, "val_score": score, **values})
            say(f"step 0 (run.steps=0: the initialisation) validation {values}")
        metrics = {"step": 0, "loss": math.nan, "best_val": trainer.best_val}
        sink(trainer, {**metrics, "val_score": trainer.best_val}, ctx.rank == 0, True)
        return trainer, history
    while trainer.step < cfg.run.steps:
        batches = 0
        for batch in task.batches(trainer.epoch, trainer.batch_in_epoch):
            batches += 1
            trainer.batch_in_epoch += 1
            step = trainer.step + 1
            _maybe_inject_fault(cfg, step, ctx.rank)
            rec = trainer.train_step(batch)
            seen += task.batch_size(batch)
            final = step == cfg.run.steps
            if step % cfg.run.log_every == 0 or final:
                synchronize(ctx.device)  # time the queued steps, not their launch
                elapsed = time.perf_counter() - t0
                rate = seen * ctx.world / elapsed
                eta = (cfg.run.steps - step) * elapsed / max(1, step - start_step)
                rec.update(step=step, signals_per_s=rate, epoch=trainer.epoch)
                history.append(rec)
                say(_progress(rec, cfg, rate, eta))
                if tracker is not None:
                    tracker.metrics({k: v for k, v in rec.items() if k != "step"}, step)
            validated = step % cfg.run.eval_every == 0 or final
            score, improved = UNVALIDATED, False
            if validated and ctx.rank == 0:
                score, values = task.validate()
                improved = score < trainer.best_val
                if improved:
                    trainer.best_val, trainer.best_step = score, step
                history.append({"step": step, "val_score": score, **values})
                shown = " ".join(f"{k.removeprefix('val_')} {v:.4g}" for k, v in values.items())
                say(f"step {step:>6} validation {shown}{' (best)' if improved else ''}")
                if tracker is not None:
                    tracker.metrics(values, step)
            last = step % cfg.run.checkpoint_every == 0 or final
            if ctx.rank == 0 and step in cfg.run.snapshot_steps:
                save_checkpoint(trainer.state_dict(), snapshot_path(run_dir_of(cfg), step))
            if validated or last:
                synchronize(ctx.device)
            trainer.wall_seconds = wall0 + time.perf_counter() - t0
            if validated or last:
                metrics = {
                    "step": step,
                    "loss": rec["loss"],
                    "best_val": trainer.best_val,
                    "val_score": score,
                }
                sink(trainer, metrics, improved, last)
            if trainer.step >= cfg.run.steps:
                break
        if batches == 0 and trainer.batch_in_epoch == 0:
            raise ConfigError(
                f"run {cfg.run.name}: the training split yields no batch of "
                f"{cfg.run.batch_size} signals per worker; lower run.batch_size"
            )
        if trainer.step < cfg.run.steps:
            trainer.epoch += 1
            trainer.batch_in_epoch = 0
    return trainer, history

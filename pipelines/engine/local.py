"""Run a task in this process, without Ray: checkpoints in the run directory.

``checkpoints/best.pt`` is written whenever validation improves and
``checkpoints/last.pt`` every ``run.checkpoint_every`` steps (atomically, the one it
replaces kept as ``previous.pt``); a later call with the same run name resumes from
``last.pt``, or from ``previous.pt`` with a warning when ``last.pt`` is unreadable. The
resume follows the run-record rules of :mod:`pipelines.engine.run_dir` (a changed config
is refused; ``config.yaml`` is written once the checkpoint has loaded). A checkpoint that
cannot be written for lack of space stops the job with a one-line ``DiskFull`` naming the
folder and the size of the state, the last good checkpoint kept; another failed write
(e.g. a transient I/O error) is reported and skipped, and the next one is tried again.
"""

from __future__ import annotations

from collections.abc import Callable

from mia_core.config import Config, save_config
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.data.stores.errors import DiskFull, is_disk_full
from pipelines.engine.checkpoint import (
    PREVIOUS,
    resume_checkpoint,
    save_checkpoint,
    state_nbytes,
)
from pipelines.engine.loop import TrainResult, train_loop
from pipelines.engine.run_dir import (
    checkpoint_dir,
    has_checkpoint,
    refuse_changed_resume,
    refuse_fewer_steps,
    run_dir_of,
    shown_path,
)
from pipelines.engine.task import Task, WorkerContext
from pipelines.engine.trainer import Trainer
from pipelines.tracking.tracker import Tracker


class RunDirSink:
    """Checkpoints as files in ``<run_dir>/checkpoints`` (see the module docstring)."""

    def __init__(self, cfg: Config, log: Callable[[str], None] = print) -> None:
        self.dir = checkpoint_dir(run_dir_of(cfg))
        self.log = log

    def __call__(
        self, trainer: Trainer, metrics: dict[str, float], improved: bool, last: bool
    ) -> None:
        """Write ``best.pt`` when ``improved`` and ``last.pt`` when ``last``."""
        if improved or last:
            state = trainer.state_dict()
            for name, wanted in (("best.pt", improved), ("last.pt", last)):
                if not wanted:
                    continue
                try:
                    save_checkpoint(state, self.dir / name, keep_previous=name == "last.pt")
                except OSError as err:
                    if is_disk_full(err):  # stop now rather than train on without a record
                        raise DiskFull(shown_path(self.dir), state_nbytes(state), name) from err
                    self.log(
                        f"warning: step {trainer.step}: could not write {self.dir / name} "
                        f"({err.strerror or err}); the previous checkpoint stays"
                    )


def run_local(
    task_cls: type[Task],
    cfg: Config,
    log: Callable[[str], None] = print,
    resume: bool = True,
    init_hook: Callable[[Trainer], None] | None = None,
) -> TrainResult:
    """Train ``task_cls`` on ``cfg`` in this process; returns the result (not evaluated).

    Args:
        task_cls: the registered task of ``cfg.method.name``.
        cfg: resolved config.
        log: line printer.
        resume: continue from ``checkpoints/last.pt`` when present (refused when the
            saved config differs in what the run learns); ``False`` deletes the run's
            checkpoints first.
        init_hook: see :func:`~pipelines.engine.loop.train_loop`.
    """
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    task_cls.configure_process(cfg)
    run_dir = run_dir_of(cfg)
    ckpts = checkpoint_dir(run_dir)
    if not resume:
        for name in ("last.pt", "best.pt", PREVIOUS):
            (ckpts / name).unlink(missing_ok=True)
    elif has_checkpoint(run_dir):
        refuse_changed_resume(cfg)
    task_cls.prepare(cfg)
    state = resume_checkpoint(ckpts / "last.pt", "cpu", log)  # the trainer moves it
    if state is not None:
        refuse_fewer_steps(cfg, int(state.get("step", 0)))
    tracker = Tracker(cfg, run_dir, system_metrics=True)
    try:
        trainer, history = train_loop(
            task_cls,
            cfg,
            WorkerContext(device),
            RunDirSink(cfg, log),
            state,
            log,
            tracker,
            init_hook,
            on_ready=lambda _trainer: save_config(cfg, run_dir / "config.yaml"),
        )
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    return TrainResult(run_dir, trainer.step, trainer.best_step, trainer.best_val, None, history)

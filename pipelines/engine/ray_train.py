"""Run a task on Ray Train (``TorchTrainer``, V2 API) with Ray's own storage.

The driver prepares the task (e.g. builds its store once), asks it for Ray Data
datasets, and starts ``run.num_workers`` workers (gloo on CPU, NCCL with
``run.use_gpu``), each running :func:`~pipelines.engine.loop.train_loop` on its shard.
``RunConfig(name=run.name, storage_path=...)`` (see :mod:`pipelines.engine.storage`)
holds the checkpoints: rank 0 writes each one into a temporary directory and reports it
with its validation score, Ray copies it into the storage (no hard links, so the
temporary directory and the storage may be on different file systems), and
``CheckpointConfig`` keeps the ``run.keep_checkpoints`` best by that score plus the
latest. ``FailureConfig(max_failures)`` restarts a failed worker group from the latest
checkpoint, and a job submitted again with the same run name resumes through Ray's
snapshot in the storage (without one, e.g. a run trained with ``--local`` or moved to
another ``run.out_dir``, from ``<run_dir>/checkpoints/last.pt``, which the workers must
then see). After training the driver copies Ray's best and latest
checkpoints to ``<run_dir>/checkpoints/{best,last}.pt``, where evaluation reads them.
A resume follows the run-record rules of :mod:`pipelines.engine.run_dir`: a changed config
is refused before Ray starts, and ``config.yaml`` is rewritten only after the resumed run
has trained. A worker's user error (a refused resume, a checkpoint of another shape, a full
disk) ends the job with that error, after Ray's own report of it.

Output (:mod:`pipelines.cluster.ray_output`): Ray Train's console logs warnings only (its
log files keep everything), Ray's ``Reporting training result`` line comes from rank 0
only, Ray Data shows no progress bars, and rank 0 alone writes the training lines.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mia_core.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    save_config,
)
from mia_core.runtime import set_matmul_precision
from pipelines.cluster.connect import init_ray
from pipelines.cluster.ray_output import TRAIN_LOG_LEVEL, quiet_rank
from pipelines.data.stores.errors import DiskFull, StoreError, is_disk_full
from pipelines.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    state_nbytes,
)
from pipelines.engine.loop import UNVALIDATED, TrainResult, train_loop
from pipelines.engine.run_dir import (
    checkpoint_dir,
    has_checkpoint,
    refuse_changed_resume,
    refuse_fewer_steps,
    run_dir_of,
)
from pipelines.engine.storage import RayStorage, copy_checkpoint_file
from pipelines.engine.task import Task, WorkerContext
from pipelines.engine.trainer import Trainer
from pipelines.tracking.tracker import Tracker

STATE_FILE = "state.pt"  # the trainer state inside every reported Ray checkpoint
SCORE = "val_score"


def _restored_state() -> dict[str, Any] | None:
    """Inside a worker: the state of the checkpoint Ray restored (restart or resubmit).

    Loaded onto the CPU whatever the worker's device: ``load_state_dict`` moves the
    parameters, and the RNG states must stay CPU tensors.
    """
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder:
        return load_checkpoint(Path(folder) / STATE_FILE, "cpu")


def report_to_ray(trainer: Trainer, metrics: dict[str, float], improved: bool, last: bool) -> None:
    """The Ray :class:`~pipelines.engine.loop.CheckpointSink`: rank 0 reports a checkpoint.

    Every worker reports at the same steps (Ray needs all of them); only rank 0 attaches
    the checkpoint, written into a fresh temporary directory that Ray uploads. A write or
    upload that fails for lack of space raises :class:`DiskFull` (the folder, the size of
    the state): the job ends with it once ``run.max_failures`` restarts have failed too.
    """
    import ray.train

    if trainer.task.ctx.rank != 0:
        ray.train.report(metrics)
        return
    state = trainer.state_dict()
    with tempfile.TemporaryDirectory(prefix="mia-ckpt-") as tmp:
        where = Path(tmp).parent
        try:
            save_checkpoint(state, Path(tmp) / STATE_FILE)
            where = RayStorage.of(trainer.cfg).path
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        except Exception as err:
            if is_disk_full(err):
                raise DiskFull(where, state_nbytes(state), "a checkpoint") from err
            raise


def _user_error(error: BaseException) -> BaseException | None:
    """The first worker's user error (config, checkpoint, store, full disk) behind ``error``."""
    failures = getattr(error, "worker_failures", None) or {}
    for _rank, exc in sorted(failures.items()):
        if isinstance(exc, ConfigError | CheckpointError | StoreError | DiskFull):
            return exc
        if is_disk_full(exc):
            return DiskFull(Path(str(getattr(exc, "filename", None) or "./x")).parent)
    return None


def _quiet_data() -> None:
    """No Ray Data progress bars: in a job's output they interleave with the training log."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def _say(line: str) -> None:
    """Print one training log line from a Ray Train worker, once.

    Ray Train V2 replaces ``print`` in its workers by one that both writes to the
    worker's stdout (Ray wraps it) and logs to the root logger (stderr): Ray forwards
    both files, so every printed line reached ``ray job submit`` twice. Writing to the
    stream directly keeps one copy (the structured Train log then does not hold it;
    the same records are in MLflow and the run's history).
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _worker(loop_config: dict[str, Any]) -> None:
    """Body of every Ray Train worker."""
    import ray.train
    import ray.train.torch as rtt

    cfg: Config = config_from_dict(loop_config["config"], "train_loop_config")
    task_cls: type[Task] = loop_config["task"]
    _quiet_data()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    quiet_rank(rank)
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    set_matmul_precision(cfg.run.matmul_precision)
    device = rtt.get_device()
    shard = ray.train.get_dataset_shard("train") if loop_config["shard"] else None
    worker = WorkerContext(device, rank, ctx.get_world_size(), shard)
    state, hook = _restored_state(), loop_config["hook"]
    if state is None and loop_config.get("local_state"):  # the run's own checkpoints
        state = load_checkpoint(loop_config["local_state"], "cpu")
    if state is not None:  # before the tracker: a refused resume leaves the MLflow run be
        refuse_fewer_steps(cfg, int(state.get("step", 0)))
    tracker = Tracker(cfg, run_dir_of(cfg), system_metrics=True) if rank == 0 else None
    try:
        train_loop(task_cls, cfg, worker, report_to_ray, state, _say, tracker, hook)
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    if tracker is not None:
        tracker.close()


def run_on_ray(
    task_cls: type[Task],
    cfg: Config,
    address: str | None = None,
    resume: bool = True,
    callbacks: list | None = None,
    read_cpus: float | None = None,
    init_hook: Callable[[Trainer], None] | None = None,
) -> TrainResult:
    """Train ``task_cls`` on ``cfg`` with Ray Train; see the module docstring.

    Args:
        task_cls: the registered task of ``cfg.method.name``.
        cfg: resolved config.
        address: Ray cluster address (default: ``RAY_ADDRESS`` or a new local instance).
        resume: continue the run of the same name from Ray's storage; ``False`` forgets
            it first (its checkpoints and snapshot).
        callbacks: Ray Train ``UserCallback``s (a Tune trial passes ``TuneReportCallback``).
        read_cpus: CPUs per Ray Data read task (default ``run.read_cpus``).
        init_hook: see :func:`~pipelines.engine.loop.train_loop`; pickled (cloudpickle)
            to every worker, so what it reads must be reachable from the workers' nodes.
    """
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    run_dir = run_dir_of(cfg)
    storage = RayStorage.of(cfg)
    in_storage = resume and storage.holds_run(cfg.run.name)
    resuming = in_storage or (resume and has_checkpoint(run_dir))
    if resuming:  # before Ray starts: a refused resume costs nothing
        refuse_changed_resume(cfg, _local_step(run_dir))
    # A run trained in one process, or moved with its run directory, has no Ray storage:
    # its workers resume from the run directory's last.pt (they must see the folder).
    last = checkpoint_dir(run_dir) / "last.pt"
    local_state = str(last) if resuming and not in_storage and last.is_file() else None
    init_ray(address)
    _quiet_data()
    if not resume:
        storage.delete_run(cfg.run.name)
        shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)
    task_cls.prepare(cfg)
    if not resuming:  # else once training has loaded the checkpoint (see the end)
        save_config(cfg, run_dir / "config.yaml")
    datasets = task_cls.ray_datasets(cfg, read_cpus or cfg.run.read_cpus)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "config": config_to_dict(cfg),
            "task": task_cls,
            "shard": "train" in datasets,
            "hook": init_hook,
            "local_state": local_state,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.cpus_per_worker},
            placement_strategy=cfg.run.placement_strategy,
        ),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.run.keep_checkpoints,
                checkpoint_score_attribute=SCORE,
                checkpoint_score_order="min",
            ),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level=TRAIN_LOG_LEVEL),
        ),
        datasets=datasets or None,
    )
    result = trainer.fit()
    if result.error:
        raise _user_error(result.error) or result.error
    collected = _collect(result, run_dir)
    if resuming:
        save_config(cfg, run_dir / "config.yaml")
    return collected


def _local_step(run_dir: Path) -> int | None:
    """The step of ``run_dir``'s ``last.pt`` (a finished run's), if readable."""
    last = checkpoint_dir(run_dir) / "last.pt"
    try:
        return int(load_checkpoint(last)["step"]) if last.is_file() else None
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None  # Ray resumes from its own storage; the worker checks its step


def _collect(result: Any, run_dir: Path) -> TrainResult:
    """Copy Ray's best and latest checkpoints into ``run_dir/checkpoints``."""
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished run {run_dir.name} without a checkpoint")
    ckpts = checkpoint_dir(run_dir)
    last = copy_checkpoint_file(result.checkpoint, STATE_FILE, ckpts / "last.pt")
    best = result.get_best_checkpoint(SCORE, "min")
    scored = [m.get(SCORE, UNVALIDATED) for c, m in (result.best_checkpoints or []) if c == best]
    if best is not None and scored and scored[0] < UNVALIDATED:
        copy_checkpoint_file(best, STATE_FILE, ckpts / "best.pt")
    state = load_checkpoint(last)
    return TrainResult(
        run_dir, int(state["step"]), int(state["best_step"]), float(state["best_val"])
    )

"""Distributed meta-training with Ray Train (``TorchTrainer``, V2 API).

The driver resolves the store (building the synthetic one if needed), creates a Ray Data
dataset of the training split (chunk-sharded reads, see ``datasource.py``) and a
``TorchTrainer`` with ``run.num_workers`` workers (gloo on CPU, NCCL with
``run.use_gpu``). Ray splits the dataset into one shard per worker; each worker turns
its shard into episodes and runs :func:`pipelines.engine.loop.train_loop`, averaging
meta-gradients with an all-reduce. Rank 0 validates, keeps the best checkpoint, writes
``last.pt`` every ``run.checkpoint_every`` steps and reports it to Ray Train, so
``FailureConfig(max_failures)`` restarts the worker group from it; a new driver on the
same run directory resumes from ``last.pt`` as well. After training the driver
evaluates the selected checkpoint on the test split.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

from mia_core.config import Config, config_from_dict, config_to_dict, save_config
from pipelines.engine.loop import TrainResult, run_dir_of

# Credentials and endpoints reach Ray workers only through the runtime environment.
FORWARDED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "RAY_AUTH_MODE",
)


def worker_resume_state(device: Any) -> dict[str, Any] | None:
    """Inside a Ray Train worker: the ``last.pt`` of Ray's checkpoint, if it restored one."""
    import ray.train

    from pipelines.engine.checkpoint import load_checkpoint

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        path = Path(d) / "last.pt"
        return load_checkpoint(path, device) if path.exists() else None


def report_to_ray(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
    """Report ``metrics`` to Ray Train, with ``ckpt_dir/last.pt`` as checkpoint when given.

    The file is hard-linked into a temporary directory, so Ray copies only ``last.pt``
    and not the other checkpoints beside it.
    """
    import ray.train

    if ckpt_dir is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.link(ckpt_dir / "last.pt", Path(tmp) / "last.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Body of every Ray Train worker."""
    import ray.train
    import ray.train.torch as rtt
    import torch

    from mia_core.runtime import set_matmul_precision
    from pipelines.data.resolve import episode_spec, open_training_store
    from pipelines.data.streams import dataset_episodes
    from pipelines.engine.loop import train_loop
    from pipelines.tracking.tracker import Tracker

    cfg: Config = config_from_dict(loop_config["config"], "train_loop_config")
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    set_matmul_precision(cfg.run.matmul_precision)
    device = rtt.get_device()
    store = open_training_store(cfg)
    spec = episode_spec(cfg, store)
    shard = ray.train.get_dataset_shard("train")

    def episodes(epoch: int, skip: int):
        # Streaming shards have no stable order: skipping keeps the step count per epoch.
        it = dataset_episodes(shard, store, spec, cfg.run.batch_size, epoch, drop_last=True)
        return itertools.islice(it, skip, None)

    resume_state = worker_resume_state(device)
    report = report_to_ray
    tracker = Tracker(cfg, run_dir_of(cfg)) if rank == 0 else None
    try:
        train_loop(cfg, store, episodes, device, rank, report, resume_state, print, tracker)
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    if tracker is not None:
        tracker.close()


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}}
    if not address:
        kwargs.update(include_dashboard=False, log_to_driver=True)
    ray.init(address=address, **kwargs)


def fit_torch_trainer(
    cfg: Config,
    worker: Any,
    run_dir: Path,
    datasets: dict[str, Any] | None = None,
    callbacks: list | None = None,
) -> None:
    """Run ``worker`` on a ``TorchTrainer`` sized by ``cfg.run``; raise its error.

    Each driver start is a new Ray run ``attempt-<n>`` under ``run_dir/ray``; within it
    ``FailureConfig`` restarts the worker group from the last reported checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray_dir = run_dir / "ray"
    attempt = len(list(ray_dir.glob("attempt-*"))) if ray_dir.exists() else 0
    trainer = TorchTrainer(
        worker,
        train_loop_config={"config": config_to_dict(cfg)},
        scaling_config=ScalingConfig(
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.cpus_per_worker},
            placement_strategy=cfg.run.placement_strategy,
        ),
        run_config=RunConfig(
            name=f"attempt-{attempt}",
            storage_path=str(ray_dir),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.error:
        raise result.error


def run_ray_training(
    cfg: Config,
    address: str | None = None,
    resume: bool = True,
    evaluate_after: bool = True,
    callbacks: list | None = None,
    read_cpus: float | None = None,
) -> TrainResult:
    """Run the distributed job for ``cfg``; see the module docstring.

    Args:
        cfg: resolved config.
        address: Ray cluster address (default: ``RAY_ADDRESS`` or a new local instance).
        resume: continue from the run directory's ``last.pt`` if present.
        evaluate_after: evaluate the selected checkpoint on the test split.
        callbacks: Ray Train ``UserCallback``s for ``RunConfig`` (a Tune trial passes
            ``TuneReportCallback`` so the workers' reports reach Tune).
        read_cpus: CPUs per Ray Data read task (default ``run.read_cpus``); fractions let concurrent
            runs (Tune trials) read side by side on a small cluster.
    """
    if cfg.method.name == "mwt":  # INR classification has its own job: pipelines/engine/mwt_ray.py
        from pipelines.engine.mwt_ray import run_mwt_ray

        return run_mwt_ray(cfg, address, resume, evaluate_after)
    from pipelines.data.ray_source import read_store
    from pipelines.data.resolve import open_training_store
    from pipelines.reports.evaluate_run import evaluate_run

    _init_ray(address)
    run_dir = run_dir_of(cfg)
    last = run_dir / "checkpoints" / "last.pt"
    if not resume and last.exists():
        last.unlink()
    store = open_training_store(cfg)
    save_config(cfg, run_dir / "config.yaml")
    train_ds = read_store(
        store.location,
        store.modalities,
        "train",
        cfg.data.time_stride,
        num_cpus=read_cpus or cfg.run.read_cpus,
    )
    fit_torch_trainer(
        cfg, _worker_loop, run_dir, datasets={"train": train_ds}, callbacks=callbacks
    )
    from pipelines.engine.checkpoint import load_checkpoint

    state = load_checkpoint(last)
    rows = evaluate_run(run_dir) if evaluate_after else []
    return TrainResult(
        run_dir, int(state["step"]), int(state["best_step"]), float(state["best_val"]), rows
    )

"""The meta-training loop, shared by the single-process run and every Ray Train worker.

``train_loop`` drives a :class:`~pipelines.engine.trainer.MetaTrainer` over an episode stream:
periodic progress lines (loss, signals/s, ETA), validation on the validation split with
the best checkpoint kept (never the test split), checkpoints every N steps, resume from
the latest checkpoint, MLflow metrics on rank 0. ``run_training`` is the single-process
entry (no Ray): it reads the store directly and evaluates the selected checkpoint on the
test split at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mia_core.config import Config, save_config
from mia_core.data import Episode
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.data.resolve import episode_spec, modality_dims, open_training_store
from pipelines.data.stores import Store
from pipelines.data.streams import store_episodes
from pipelines.engine.checkpoint import load_checkpoint, save_checkpoint
from pipelines.engine.trainer import MetaTrainer
from pipelines.reports.evaluation import EvalRow, evaluate, mean_metric

Report = Callable[[dict[str, Any], Path | None], None]


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        run_dir: folder with config, checkpoints and results.
        step: last completed outer step.
        best_step: step of the checkpoint selected on validation.
        best_val: its validation score (mean normalised MSE, lower is better).
        test_rows: test-split evaluation of the selected checkpoint.
        history: logged training records.
    """

    run_dir: Path
    step: int
    best_step: int
    best_val: float
    test_rows: list[EvalRow] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


def run_dir_of(cfg: Config) -> Path:
    """``<run.out_dir>/<run.name>`` as an absolute path."""
    return Path(cfg.run.out_dir).resolve() / cfg.run.name


def validate(trainer: MetaTrainer, store: Store, cfg: Config) -> float:
    """Mean normalised MSE on the validation split over the training ratio range."""
    spec = episode_spec(cfg, store)
    lo = min(r[0] for r in spec.ratio_ranges.values())
    hi = max(r[1] for r in spec.ratio_ranges.values())
    trainer.learner.eval()
    rows = evaluate(
        trainer.learner,
        store,
        "val",
        [(lo, hi)],
        1,
        cfg.run.eval_batch_size,
        cfg.run.seed + 1,
        trainer.device,
        cfg.data.psnr_range,
        cfg.data.spatial_stride,
        cfg.data.time_stride,
    )
    trainer.learner.train()
    return mean_metric(rows, "nmse_all")


def train_loop(
    cfg: Config,
    store: Store,
    episodes: Callable[[int, int], Iterable[Episode]],
    device: torch.device,
    rank: int = 0,
    report: Report | None = None,
    resume_state: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    tracker: Any = None,
    init_hook: Callable[[MetaTrainer], None] | None = None,
) -> tuple[MetaTrainer, list[dict]]:
    """Meta-train until ``run.steps``; see the module docstring.

    Args:
        cfg: resolved config.
        store: opened training store (for dimensions and validation).
        episodes: ``(epoch, skip) -> iterable of episode batches`` for this worker,
            starting after the first ``skip`` batches of the epoch (exact resume).
        device: this worker's device.
        rank: worker rank; rank 0 validates, writes checkpoints and tracks.
        report: called on every worker at each checkpoint step with the metrics and
            (rank 0) the checkpoint directory; Ray Train passes ``ray.train.report``.
        resume_state: a checkpoint to resume from (Ray's), else the run directory's
            ``last.pt`` when present.
        log: line printer (rank 0 only prints).
        tracker: :class:`~pipelines.tracking.tracker.Tracker` on rank 0, or ``None``.
        init_hook: called with the new trainer before any resume (e.g. the ablation
            study loads and freezes a trained CAVIA's INRs there).
    """
    run_dir = run_dir_of(cfg)
    ckpt_dir = run_dir / "checkpoints"
    trainer = MetaTrainer(cfg, modality_dims(store), device)
    if init_hook is not None:
        init_hook(trainer)
    if resume_state is None and (ckpt_dir / "last.pt").exists():
        resume_state = load_checkpoint(ckpt_dir / "last.pt", device)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
        if rank == 0:
            log(f"resumed at step {trainer.step} (epoch {trainer.epoch})")
    say = log if rank == 0 else (lambda _s: None)
    n_params = sum(p.numel() for p in trainer.learner.parameters())
    say(
        f"run {cfg.run.name}: {cfg.method.name} on {cfg.model.family} "
        f"({n_params:,} meta-parameters), "
        f"store {store.location.display} modalities {store.modalities}, device {device}, "
        f"steps {trainer.step}->{cfg.run.steps}"
    )
    history: list[dict] = []
    start_step, t0, seen = trainer.step, time.perf_counter(), 0

    def checkpoint(name: str) -> Path:
        return save_checkpoint(trainer.state_dict(), ckpt_dir / name)

    while trainer.step < cfg.run.steps:
        batches = 0
        for episode in episodes(trainer.epoch, trainer.batch_in_epoch):
            batches += 1
            trainer.batch_in_epoch += 1
            step = trainer.step + 1
            if rank == 0 and step == cfg.run.fault_injection_step:
                marker = run_dir / f".fault_injected_{step}"
                if not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.touch()
                    raise RuntimeError(f"injected fault at step {step} (run.fault_injection_step)")
            rec = trainer.train_step(episode)
            seen += next(iter(episode.values())).batch_size
            if step % cfg.run.log_every == 0 or step == cfg.run.steps:
                elapsed = time.perf_counter() - t0
                rate = seen / elapsed
                eta = (cfg.run.steps - step) * elapsed / max(1, step - start_step)
                rec.update(step=step, signals_per_s=rate, epoch=trainer.epoch)
                history.append(rec)
                per_mod = " ".join(
                    f"{k[5:]}={v:.4g}" for k, v in rec.items() if k.startswith("loss/")
                )
                say(
                    f"step {step:>6}/{cfg.run.steps} loss {rec['loss']:.4g} [{per_mod}] "
                    f"{rate * trainer.world:.1f} signals/s eta {eta:.0f}s"
                )
                if tracker is not None:
                    tracker.metrics({k: v for k, v in rec.items() if k != "step"}, step)
            if rank == 0 and (step % cfg.run.eval_every == 0 or step == cfg.run.steps):
                val = validate(trainer, store, cfg)
                improved = val < trainer.best_val
                if improved:
                    trainer.best_val, trainer.best_step = val, step
                    checkpoint("best.pt")
                history.append({"step": step, "val_nmse": val})
                say(f"step {step:>6} validation nmse {val:.4g}{' (best)' if improved else ''}")
                if tracker is not None:
                    tracker.metrics({"val_nmse": val}, step)
            if step % cfg.run.checkpoint_every == 0 or step == cfg.run.steps:
                path = checkpoint("last.pt") if rank == 0 else None
                if report is not None:
                    report(
                        {"step": step, "loss": rec["loss"], "best_val": trainer.best_val},
                        path.parent if path else None,
                    )
            if trainer.step >= cfg.run.steps:
                break
        if batches == 0 and trainer.batch_in_epoch == 0:
            raise ValueError(
                f"{store.location.display}: the training split yields no batch of "
                f"{cfg.run.batch_size} signals per worker; lower run.batch_size"
            )
        if trainer.step < cfg.run.steps:
            trainer.epoch += 1
            trainer.batch_in_epoch = 0
    return trainer, history


def run_training(
    cfg: Config,
    log: Callable[[str], None] = print,
    resume: bool = True,
    init_hook: Callable[[MetaTrainer], None] | None = None,
    figures: bool = True,
) -> TrainResult:
    """Single-process meta-training + test evaluation (no Ray); see the module docstring.

    ``init_hook`` is passed to :func:`train_loop`, ``figures`` to
    :func:`~pipelines.reports.evaluate_run.evaluate_run`.
    """
    if cfg.method.name == "mwt":  # INR classification has its own job: pipelines/tasks/mwt.py
        from pipelines.tasks.mwt import run_mwt_training

        return run_mwt_training(cfg, log, resume)
    from pipelines.reports.evaluate_run import evaluate_run
    from pipelines.tracking.tracker import Tracker

    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    run_dir = run_dir_of(cfg)
    if not resume and (run_dir / "checkpoints" / "last.pt").exists():
        (run_dir / "checkpoints" / "last.pt").unlink()
    store = open_training_store(cfg)
    save_config(cfg, run_dir / "config.yaml")
    spec = episode_spec(cfg, store)

    def episodes(epoch: int, skip: int) -> Iterable[Episode]:
        return store_episodes(
            store, spec, cfg.run.batch_size, "train", epoch, True, cfg.data.time_stride, skip
        )

    tracker = Tracker(cfg, run_dir)
    try:
        trainer, history = train_loop(
            cfg, store, episodes, device, log=log, tracker=tracker, init_hook=init_hook
        )
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    rows = evaluate_run(run_dir, log=log, figures=figures)
    return TrainResult(run_dir, trainer.step, trainer.best_step, trainer.best_val, rows, history)


__all__ = ["TrainResult", "run_dir_of", "run_training", "train_loop", "validate"]

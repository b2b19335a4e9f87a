"""Meta-continual learning job: task sequences from a store, meta-training, evaluation.

``run_continual(cfg)`` runs one continual method (``method.name`` in
``CONTINUAL_METHOD_NAMES``) end to end in one process:

1. task sequences from the store's first ``data.modalities`` entry, per split: every
   signal cut into ``method.mcl.num_tasks`` strips (``spatial``/``segments``), or
   non-overlapping windows of consecutive time steps (``temporal``, one frame per task);
2. meta-training (MAML over the task sequence) with AdamW for ``run.steps`` steps on
   batches of ``run.batch_size`` training sequences, drawn from a generator seeded by
   ``(run.seed, step)`` so a resumed run draws the same batches; validation (mean
   final PSNR after ``method.inner_steps`` steps per task) every ``run.eval_every``
   steps picks ``best.pt``; ``last.pt`` every ``run.checkpoint_every`` steps (resume);
3. test-time continual learning of the test sequences from ``best.pt`` with each budget
   of ``method.mcl.eval_budgets`` steps per task: PSNR of every task after every later
   task, written by :mod:`pipelines.reports.continual` (``results.md``, ``results.csv``,
   ``metrics.json``, ``figures/``) and logged to MLflow with the config and checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mia_core.config import Config, save_config
from mia_core.config.schema import CONTINUAL_METHOD_NAMES
from mia_core.mcl import SequenceLearner, TaskSequence, grid_task_sequence
from mia_core.mcl.build import build_sequence_learner
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.data.resolve import open_training_store
from pipelines.data.stores import Store, StoreError
from pipelines.engine.checkpoint import load_checkpoint, save_checkpoint

SPLITS = {"train": 0, "val": 1, "test": 2}


def split_values(store: Store, modality: str, split: str) -> np.ndarray:
    """``(n, P, C)`` values of the signals of ``split``, in store order."""
    idx = np.flatnonzero(store.split == SPLITS[split])
    if idx.size == 0:
        return np.zeros((0, store.info[modality].num_points, store.info[modality].channels))
    vals = store.read(int(idx[0]), int(idx[-1]) + 1)[modality]
    return vals[idx - idx[0]]


def store_sequences(cfg: Config, store: Store, split: str) -> TaskSequence | None:
    """All task sequences of ``split`` as one batch (``None`` when the split has none).

    Raises:
        StoreError: the modality is not a grid, or ``temporal`` windows do not fit.
    """
    m, mcl = cfg.data.modalities[0], cfg.method.mcl
    info = store.info[m]
    if info.coords is None:
        raise StoreError(f"{store.location}: modality {m!r} has per-signal coordinates")
    if mcl.tasks == "spatial" and mcl.axis >= len(info.grid_shape):
        raise StoreError(
            f"{store.location}: method.mcl.axis={mcl.axis} but modality {m!r} has grid "
            f"{info.grid_shape}"
        )
    vals = split_values(store, m, split)
    if mcl.tasks == "temporal":
        n = vals.shape[0] // mcl.num_tasks
        vals = vals[: n * mcl.num_tasks].reshape(n, mcl.num_tasks, *vals.shape[1:])
    if vals.shape[0] == 0:
        return None
    return grid_task_sequence(
        torch.from_numpy(np.ascontiguousarray(vals, np.float32)),
        torch.from_numpy(info.coords),
        mcl.tasks,
        mcl.num_tasks,
        mcl.axis,
    )


def subset(seq: TaskSequence, idx: torch.Tensor) -> TaskSequence:
    """The sequences ``idx`` of a batch."""
    return TaskSequence(seq.coords, seq.values[idx], seq.partition)


def build_learner_for(cfg: Config, seq: TaskSequence) -> SequenceLearner:
    """The configured continual learner for sequences shaped like ``seq``."""
    return build_sequence_learner(
        cfg.model, cfg.method, seq.coords.shape[1], seq.values.shape[2], seq.partition
    )


def mean_final_psnr(
    learner: SequenceLearner, seq: TaskSequence, steps: int, cfg: Config, batch: int
) -> float:
    """Mean over tasks and sequences of the final model's PSNR after ``steps`` per task."""
    vals = []
    for s in range(0, seq.batch_size, batch):
        part = subset(seq, torch.arange(s, min(seq.batch_size, s + batch)))
        mat = learner.continual_eval(part, [steps], cfg.data.psnr_range, _eval_lr(cfg))[steps]
        vals.append(mat[-1])
    return float(torch.cat(vals, 1).nanmean())


def _eval_lr(cfg: Config) -> float:
    return cfg.method.mcl.eval_lr or cfg.method.inner_lr


def evaluate_budgets(
    learner: SequenceLearner, seq: TaskSequence, cfg: Config, batch: int
) -> dict[int, np.ndarray]:
    """Budget -> ``(T, T, B)`` PSNR matrices of :meth:`SequenceLearner.continual_eval`."""
    mcl = cfg.method.mcl
    parts: dict[int, list[torch.Tensor]] = {b: [] for b in mcl.eval_budgets}
    for s in range(0, seq.batch_size, batch):
        part = subset(seq, torch.arange(s, min(seq.batch_size, s + batch)))
        res = learner.continual_eval(
            part, list(mcl.eval_budgets), cfg.data.psnr_range, _eval_lr(cfg), mcl.eval_optimizer
        )
        for b, mat in res.items():
            parts[b].append(mat)
    return {b: torch.cat(v, 2).cpu().numpy() for b, v in parts.items()}


def run_continual(
    cfg: Config, log: Callable[[str], None] = print, resume: bool = True
) -> dict[str, object]:
    """Meta-train and evaluate one continual method (module docstring); returns metrics."""
    from pipelines.engine.loop import run_dir_of
    from pipelines.reports.continual import write_report
    from pipelines.tracking.tracker import Tracker

    if cfg.method.name not in CONTINUAL_METHOD_NAMES:
        raise ValueError(
            f"method.name={cfg.method.name!r} is not a continual method "
            f"{CONTINUAL_METHOD_NAMES}; use ray_jobs/train.py"
        )
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    run_dir = run_dir_of(cfg)
    ckpt_dir = run_dir / "checkpoints"
    if not resume:
        for name in ("last.pt", "best.pt"):
            (ckpt_dir / name).unlink(missing_ok=True)
    store = open_training_store(cfg)
    seqs = {s: store_sequences(cfg, store, s) for s in SPLITS}
    if seqs["train"] is None:
        raise StoreError(f"{store.location}: the training split yields no task sequence")
    seqs = {s: (None if q is None else q.to(device)) for s, q in seqs.items()}
    val = seqs["val"] if seqs["val"] is not None else seqs["train"]
    test = seqs["test"] if seqs["test"] is not None else val
    for split, used in (("val", "train"), ("test", "val" if seqs["val"] is not None else "train")):
        if seqs[split] is None:
            log(f"warning: the {split} split yields no task sequence; using the {used} split")
    save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.run.seed)
    learner = build_learner_for(cfg, seqs["train"]).to(device)
    opt = torch.optim.AdamW(
        learner.parameters(), lr=cfg.run.outer_lr, weight_decay=cfg.run.weight_decay
    )
    state = {"step": 0, "best_val": -float("inf"), "best_step": 0}
    if resume and (ckpt_dir / "last.pt").exists():
        ck = load_checkpoint(ckpt_dir / "last.pt", device)
        learner.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state.update({k: ck[k] for k in state})
        log(f"resumed at step {state['step']}")
    n_params = sum(p.numel() for p in learner.parameters())
    log(
        f"run {cfg.run.name}: {cfg.method.name} on {cfg.model.family} ({n_params:,} "
        f"meta-parameters), {seqs['train'].batch_size} training sequences of "
        f"{cfg.method.mcl.num_tasks} {cfg.method.mcl.tasks} tasks, device {device}"
    )
    tracker = Tracker(cfg, run_dir)

    def checkpoint(name: str) -> Path:
        return save_checkpoint(
            {"model": learner.state_dict(), "optimizer": opt.state_dict(), **state},
            ckpt_dir / name,
        )

    try:
        t0, start = time.perf_counter(), state["step"]
        train = seqs["train"]
        while state["step"] < cfg.run.steps:
            step = state["step"] + 1
            gen = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + step)
            idx = torch.randperm(train.batch_size, generator=gen)[: cfg.run.batch_size]
            loss = learner(subset(train, idx.to(device)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.run.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.run.grad_clip)
            opt.step()
            state["step"] = step
            if step % cfg.run.log_every == 0 or step == cfg.run.steps:
                rate = (step - start) / (time.perf_counter() - t0)
                log(f"step {step:>6}/{cfg.run.steps} loss {loss.item():.4g} {rate:.2f} steps/s")
                tracker.metrics({"loss": loss.item()}, step)
            if step % cfg.run.eval_every == 0 or step == cfg.run.steps:
                v = mean_final_psnr(
                    learner, val, cfg.method.inner_steps, cfg, cfg.run.eval_batch_size
                )
                best = v > state["best_val"]
                if best:
                    state["best_val"], state["best_step"] = v, step
                    checkpoint("best.pt")
                log(f"step {step:>6} validation psnr {v:.3f}{' (best)' if best else ''}")
                tracker.metrics({"val_psnr": v}, step)
            if step % cfg.run.checkpoint_every == 0 or step == cfg.run.steps:
                checkpoint("last.pt")
        if (ckpt_dir / "best.pt").exists():
            learner.load_state_dict(load_checkpoint(ckpt_dir / "best.pt", device)["model"])
        if cfg.method.mcl.eval_signals:
            test = subset(test, torch.arange(min(test.batch_size, cfg.method.mcl.eval_signals)))
        t1 = time.perf_counter()
        mats = evaluate_budgets(learner, test, cfg, cfg.run.eval_batch_size)
        log(f"test-time evaluation of {test.batch_size} sequences: {time.perf_counter() - t1:.1f}s")
        metrics = write_report(run_dir, cfg, mats, n_params, state, log)
        tracker.metrics(
            {k: v for k, v in metrics["flat"].items() if isinstance(v, float)}, state["step"]
        )
        for name in ("config.yaml", "results.md", "results.csv", "metrics.json"):
            tracker.artifact(run_dir / name)
        tracker.artifact(run_dir / "figures", "figures")
        tracker.artifact(ckpt_dir, "checkpoints")
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    return metrics


__all__ = [
    "build_learner_for",
    "evaluate_budgets",
    "run_continual",
    "store_sequences",
    "subset",
]


def run_continual_on_ray(
    cfg: Config, address: str | None = None, resume: bool = True
) -> dict[str, object]:
    """Run :func:`run_continual` as one Ray task.

    The task reserves ``run.cpus_per_worker`` CPUs (and a GPU when ``run.use_gpu``) on
    the cluster at ``address``, or on a local instance.
    """
    import ray

    from pipelines.engine.ray_train import _init_ray

    _init_ray(address)  # forwards S3 credentials/endpoints to the task's environment
    task = ray.remote(num_cpus=cfg.run.cpus_per_worker, num_gpus=1 if cfg.run.use_gpu else 0)(
        run_continual
    )
    return ray.get(task.remote(cfg, resume=resume))

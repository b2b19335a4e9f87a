"""Meta-continual learning (MCL-NF and its baselines) as a task of the one engine.

``method.name`` in ``CONTINUAL_METHOD_NAMES``; trained with ``mia-inr train`` (or
``mia-inr continual``) like every task:

1. task sequences from the store's first ``data.modalities`` entry, per split: every
   signal cut into ``method.mcl.num_tasks`` strips (``spatial``/``segments``), or
   non-overlapping windows of consecutive time steps (``temporal``, one frame per task);
2. meta-training (MAML over the task sequence): each batch is ``run.batch_size``
   training sequences drawn from ``(run.seed, epoch, batch, rank)``, so a resumed run
   draws the same batches; the validation score is minus the mean final PSNR after
   ``method.inner_steps`` steps per task (lower is better, as for every task);
3. the report: test-time continual learning of the sequences of a split (``test``; the
   end of ``mia-inr train`` scores ``val``) from the selected checkpoint with each budget
   of ``method.mcl.eval_budgets`` steps per task, PSNR of every task after every later
   task, written by :mod:`pipelines.reports.continual` (``results.md``, ``results.csv``,
   ``metrics.json``, ``figures/``; ``_val`` suffixes for ``val``) and logged to MLflow.

Training reads only the train and val sequences; the test sequences are read by the test
report alone (docs/splits.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mia_core.config import Config
from mia_core.config.methods import CONTINUAL, get_method, method_names
from mia_core.mcl import SequenceLearner, TaskSequence, grid_task_sequence
from mia_core.mcl.build import build_sequence_learner
from mia_core.meta.metrics import psnr
from mia_core.runtime import autocast_off, resolve_device, set_matmul_precision
from pipelines.data.resolve import open_training_store
from pipelines.data.stores import Store, StoreError
from pipelines.engine.checkpoint import OTHER_MODEL_HINT, check_model_state, load_checkpoint
from pipelines.engine.run_dir import load_run_config, selected_checkpoint
from pipelines.engine.task import Task, WorkerContext, check_split, split_file
from pipelines.reports.continual import write_report
from pipelines.tracking.tracker import Tracker

SPLITS = {"train": 0, "val": 1, "test": 2}


def split_values(store: Store, modality: str, split: str) -> np.ndarray:
    """``(n, P, C)`` values of the signals of ``split``, in store order (noted as served)."""
    idx = store.split_indices(split)
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


def signal_psnr(final: torch.Tensor, seq: TaskSequence, data_range: float) -> torch.Tensor:
    """``(B,)`` PSNR of each whole signal under the final model from its ``(T, B)`` task PSNRs.

    The whole signal's MSE is the point-weighted mean of its tasks' MSEs (each recovered
    from its PSNR), so a task that is fitted almost exactly (e.g. a blank image border,
    whose PSNR only measures float rounding) weighs by its points, not by its decibels.
    """
    mask = (~torch.isnan(seq.values)).all(-1).to(final.dtype)
    counts = torch.stack([mask[:, seq.task_of == i].sum(1) for i in range(seq.num_tasks)])
    mse = data_range**2 * torch.pow(10.0, -final.double() / 10.0)
    total = (mse * counts).sum(0) / counts.sum(0).clamp(min=1.0)
    return psnr(total, data_range).to(final.dtype)


def evaluate_budgets(
    learner: SequenceLearner, seq: TaskSequence, cfg: Config, batch: int
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """The test-time evaluation of ``seq`` at every budget, ``batch`` sequences at a time.

    Returns:
        Budget -> ``(T, T, B)`` PSNR matrices of :meth:`SequenceLearner.continual_eval`,
        and budget -> ``(B,)`` whole-signal PSNRs of the final model (:func:`signal_psnr`).
    """
    mcl = cfg.method.mcl
    parts: dict[int, list[torch.Tensor]] = {b: [] for b in mcl.eval_budgets}
    signals: dict[int, list[torch.Tensor]] = {b: [] for b in mcl.eval_budgets}
    for s in range(0, seq.batch_size, batch):
        part = subset(seq, torch.arange(s, min(seq.batch_size, s + batch)))
        res = learner.continual_eval(
            part, list(mcl.eval_budgets), cfg.data.psnr_range, _eval_lr(cfg), mcl.eval_optimizer
        )
        for b, mat in res.items():
            parts[b].append(mat)
            signals[b].append(signal_psnr(mat[-1], part, cfg.data.psnr_range))
    mats = {b: torch.cat(v, 2).cpu().numpy() for b, v in parts.items()}
    return mats, {b: torch.cat(v).cpu().numpy() for b, v in signals.items()}


def _splits(
    cfg: Config, store: Store, log: Callable[[str], None], names: tuple[str, ...] = tuple(SPLITS)
) -> dict[str, TaskSequence]:
    """The sequences of ``names`` (train first); a missing val/test split falls back.

    Training asks for ``("train", "val")`` only: it never reads a test sequence.
    """
    seqs = {s: store_sequences(cfg, store, s) for s in names}
    if seqs["train"] is None:
        raise StoreError(f"{store.location}: the training split yields no task sequence")
    for split, fallback in (("val", "train"), ("test", "val")):
        if split in seqs and seqs[split] is None:
            log(f"warning: the {split} split yields no task sequence; using the {fallback} split")
            seqs[split] = seqs[fallback]
    return seqs


def evaluate_continual_run(
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    track: bool = True,
    figures: bool = True,
    split: str = "test",
) -> dict[str, Any]:
    """Continual-learning report of a finished run on ``split`` (module docstring, step 3).

    The PSNR-vs-budget and forgetting figures are part of the report and always drawn
    (``figures`` is accepted for the task protocol). ``split="val"`` reads no test
    sequence and writes the ``_val`` files.
    """
    check_split(split)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    names = ("train", "val") if split == "val" else tuple(SPLITS)
    seqs = _splits(cfg, open_training_store(cfg), log, names)
    ckpt = selected_checkpoint(run_dir)
    state = load_checkpoint(ckpt, "cpu")  # load_state_dict moves it to the device
    learner = build_learner_for(cfg, seqs["train"]).to(device)
    check_model_state(learner, state.get("model"), f"checkpoint {ckpt}", OTHER_MODEL_HINT)
    learner.load_state_dict(state["model"])
    seq = seqs[split].to(device)
    if cfg.method.mcl.eval_signals:
        seq = subset(seq, torch.arange(min(seq.batch_size, cfg.method.mcl.eval_signals)))
    t1 = time.perf_counter()
    mats, signals = evaluate_budgets(learner, seq, cfg, cfg.run.eval_batch_size)
    took = time.perf_counter() - t1
    log(f"test-time evaluation of {seq.batch_size} {split} sequences: {took:.1f}s")
    n_params = sum(p.numel() for p in learner.parameters())
    summary = {
        "step": int(state["step"]),
        "best_step": int(state["best_step"]),
        "best_val": -float(state["best_val"]),  # the validation PSNR
    }
    metrics = write_report(run_dir, cfg, mats, n_params, summary, log, signals, split)
    if track:
        tracker = Tracker(cfg, run_dir)
        flat = {k: v for k, v in metrics["flat"].items() if isinstance(v, float)}
        tracker.metrics(flat, summary["step"])
        for name in ("config.yaml", "results.md", "results.csv", "metrics.json"):
            tracker.artifact(run_dir / split_file(name, split))
        figures_dir = split_file("figures", split)
        tracker.artifact(run_dir / figures_dir, figures_dir)
        tracker.artifact(run_dir / "checkpoints", "checkpoints")
        tracker.close()
    return metrics


class ContinualTask(Task):
    """Meta-continual learning of a task sequence; see the module docstring."""

    nonfinite_hint = "Lower method.inner_lr or run.outer_lr."
    report = staticmethod(evaluate_continual_run)

    def __init__(self, cfg: Config, ctx: WorkerContext) -> None:
        super().__init__(cfg, ctx)
        if not get_method(cfg.method.name).continual:
            raise ValueError(
                f"method.name={cfg.method.name!r} is not a continual method "
                f"{method_names(CONTINUAL)}"
            )
        say = print if ctx.rank == 0 else (lambda _s: None)
        self.store = open_training_store(cfg)
        seqs = _splits(cfg, self.store, say, ("train", "val"))  # never the test split
        self.seqs = {s: q.to(ctx.device) for s, q in seqs.items()}
        self.model = build_learner_for(cfg, self.seqs["train"]).to(ctx.device)

    @classmethod
    def prepare(cls, cfg: Config) -> None:
        """Resolve the store once on the driver."""
        open_training_store(cfg)

    def batches(self, epoch: int, skip: int) -> Iterable[TaskSequence]:
        """Random batches of training sequences; one epoch is ``ceil(n / batch)`` of them."""
        train, size = self.seqs["train"], self.cfg.run.batch_size
        count = max(1, -(-train.batch_size // size))
        for b in range(skip, count):
            seed = ((self.cfg.run.seed * 1_000_003 + epoch) * 10_007 + b) * 101 + self.ctx.rank
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(train.batch_size, generator=gen)[:size]
            yield subset(train, idx.to(self.ctx.device))

    def loss(self, batch: TaskSequence, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The continual learner's meta-loss over the sequence batch, never autocast.

        Nearly all of it is the second-order walk through the sequence (an inner loop);
        the outer part is one forward of the final model (see ``autocast_off``).
        """
        with autocast_off(self.ctx.device):
            return self.model(batch), {}

    def batch_size(self, batch: TaskSequence) -> int:
        """Sequences in the batch."""
        return batch.batch_size

    def validate(self) -> tuple[float, dict[str, float]]:
        """Minus the validation sequences' mean final PSNR (lower is better)."""
        cfg = self.cfg
        v = mean_final_psnr(
            self.model, self.seqs["val"], cfg.method.inner_steps, cfg, cfg.run.eval_batch_size
        )
        return -v, {"val_psnr": v}

    def describe(self) -> str:
        """Method, INR family, sizes and the task sequences."""
        cfg = self.cfg
        n = sum(p.numel() for p in self.model.parameters())
        return (
            f"{cfg.method.name} on {cfg.model.family} ({n:,} meta-parameters), "
            f"{self.seqs['train'].batch_size} training sequences of "
            f"{cfg.method.mcl.num_tasks} {cfg.method.mcl.tasks} tasks"
        )

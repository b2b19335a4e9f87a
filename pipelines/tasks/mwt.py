"""Training job for ``method.name: mwt`` (MWT, and WT with ``method.mwt.w_cls: 0``).

Reached through the usual entry points (``ray_jobs/train.py`` with or without
``--local``): ``pipelines/engine/loop.py`` and ``pipelines/engine/ray_train.py`` hand MWT configs to
:func:`run_mwt_training` / :func:`pipelines.engine.mwt_ray.run_mwt_ray`. The loop mirrors the
meta-training job: AdamW (``run.outer_lr`` for the SIREN initialisation and the
classifier, ``method.mwt.alpha_lr`` for the inner learning rates), warm-up/cosine
schedule, gradient clipping, validation accuracy every ``run.eval_every`` steps with
``best.pt`` chosen on it (never on test), ``last.pt`` every ``run.checkpoint_every``
steps, exact resume (batch order from ``(seed, epoch)``, augmentations and pixel subsets
from ``(seed, step, rank)``), MLflow metrics. After training the selected checkpoint is
evaluated on the test split: accuracy and PSNR, next to a logistic regression on raw
pixels (``method.mwt.pixel_baseline``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from mia_core.config import Config, load_config, save_config
from mia_core.mwt import MWT, build_augment, build_mwt, count_lrs
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.data.labelled_images import LabelledImages, load_labelled, pixel_baseline
from pipelines.engine.checkpoint import load_checkpoint, save_checkpoint
from pipelines.engine.loop import TrainResult, run_dir_of
from pipelines.engine.trainer import make_scheduler

Report = Callable[[dict[str, Any], Path | None], None]


@dataclass
class MWTResult(TrainResult):
    """:class:`TrainResult` of an MWT run; ``best_val`` is the validation error rate.

    Attributes:
        test_metrics: test accuracy, PSNR, MSE and the pixel baseline.
    """

    test_metrics: dict[str, float] = field(default_factory=dict)


def make_model(cfg: Config, data: LabelledImages) -> MWT:
    """The MWT for ``data``'s image shape and classes (seeded by ``run.seed``)."""
    torch.manual_seed(cfg.run.seed)
    _, h, w, c = data.images.shape
    return build_mwt(cfg.model, cfg.method, (h, w), c, len(data.classes))


class MWTTrainer:
    """One worker's MWT, optimiser and schedule; gradients all-reduced across workers."""

    def __init__(self, cfg: Config, data: LabelledImages, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = make_model(cfg, data).to(device)
        groups = [
            {"params": self.model.meta_parameters(), "weight_decay": 0.0},
            {"params": self.model.lr_parameters(), "weight_decay": 0.0},
            {"params": list(self.model.classifier.parameters())},
        ]
        groups[1]["lr"] = cfg.method.mwt.alpha_lr
        self.opt = torch.optim.AdamW(groups, lr=cfg.run.outer_lr, weight_decay=cfg.run.weight_decay)
        self.sched = make_scheduler(self.opt, cfg)
        self.augment = build_augment(cfg.method)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_val, self.best_step = math.inf, -1
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def generator(self, rank: int) -> torch.Generator:
        """RNG of this step's augmentations and pixel subsets."""
        return torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + self.step * 97 + rank)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, rank: int = 0) -> dict:
        """One outer step on a batch ``(B, H, W, C)``; returns the logged values."""
        gen = self.generator(rank)
        images = self.augment(images, gen).to(self.device)
        out = self.model(images, labels.to(self.device), gen)
        self.opt.zero_grad(set_to_none=True)
        if torch.isfinite(out.loss):
            out.loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        acc = (out.logits.argmax(-1) == labels.to(self.device)).float().mean()
        stats = torch.stack([out.loss.detach(), out.rec_loss.detach(), out.cls_loss.detach(), acc])
        flat = _flatten_dense_tensors([*grads, stats])
        if self.world > 1:
            dist.all_reduce(flat)
            flat /= self.world
        synced = _unflatten_dense_tensors(flat, [*grads, stats])
        vals = synced[-1]
        if not torch.isfinite(vals[0]):
            raise FloatingPointError(
                f"non-finite MWT loss at step {self.step + 1} (rec {float(vals[1])}, "
                f"cls {float(vals[2])}); the last checkpoint is intact. Lower "
                "method.mwt.lr_init, method.mwt.alpha_lr or run.outer_lr."
            )
        for p, g in zip(params, synced[:-1], strict=True):
            p.grad = g
        clip = self.cfg.run.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else torch.tensor(math.nan)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {
            "loss": float(vals[0]),
            "loss/rec": float(vals[1]),
            "loss/cls": float(vals[2]),
            "train_accuracy": float(vals[3]),
            "grad_norm": float(norm),
            "lr": self.sched.get_last_lr()[0],
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (``weights_only``-loadable)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_val": self.best_val,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_val, self.best_step = float(state["best_val"]), int(state["best_step"])


def epoch_batches(
    data: LabelledImages, cfg: Config, epoch: int, rank: int = 0, world: int = 1
) -> list[np.ndarray]:
    """This worker's training batches of ``epoch`` (seeded order, last partial dropped).

    The permutation is cut to a multiple of ``world`` first so that every worker gets
    the same number of batches (a worker with one batch more would wait forever in the
    gradient all-reduce).
    """
    idx = data.indices("train")
    rng = np.random.default_rng([cfg.run.seed, epoch])
    perm = idx[rng.permutation(len(idx))]
    shard = perm[: len(perm) - len(perm) % world][rank::world]
    bs = cfg.run.batch_size
    return [shard[i : i + bs] for i in range(0, len(shard) - bs + 1, bs)]


def evaluate_split(
    model: MWT, data: LabelledImages, split: str, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Accuracy, PSNR (dB, data range 1) and MSE of ``split``, fitting every image in k steps."""
    with torch.no_grad():  # the inner loop re-enables gradients for its own steps
        return _evaluate_split(model, data, split, batch_size, device)


def _evaluate_split(
    model: MWT, data: LabelledImages, split: str, batch_size: int, device: torch.device
) -> dict[str, float]:
    model.eval()
    idx = data.indices(split)
    correct, psnr, mse = 0, 0.0, 0.0
    for i in range(0, len(idx), batch_size):
        j = torch.from_numpy(idx[i : i + batch_size])
        out = model(data.images[j].to(device), data.labels[j].to(device), create_graph=False)
        correct += int((out.logits.argmax(-1).cpu() == data.labels[j]).sum())
        psnr += float(out.psnr().sum())
        mse += float(out.mse.sum())
    model.train()
    n = max(1, len(idx))
    return {"accuracy": correct / n, "psnr": psnr / n, "mse": mse / n, "n": len(idx)}


def mwt_loop(
    cfg: Config,
    data: LabelledImages,
    device: torch.device,
    rank: int = 0,
    report: Report | None = None,
    resume_state: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    tracker: Any = None,
) -> tuple[MWTTrainer, list[dict]]:
    """Train until ``run.steps`` (see the module docstring); rank 0 validates and saves."""
    ckpt_dir = run_dir_of(cfg) / "checkpoints"
    tr = MWTTrainer(cfg, data, device)
    if resume_state is None and (ckpt_dir / "last.pt").exists():
        resume_state = load_checkpoint(ckpt_dir / "last.pt", device)
    say = log if rank == 0 else (lambda _s: None)
    if resume_state is not None:
        tr.load_state_dict(resume_state)
        say(f"resumed at step {tr.step} (epoch {tr.epoch})")
    n_lr, _ = count_lrs(tr.model.siren)
    n_cls = sum(p.numel() for p in tr.model.classifier.parameters())
    say(
        f"run {cfg.run.name}: mwt (w_cls={cfg.method.mwt.w_cls}) on {data.display}, "
        f"images {tuple(data.images.shape[1:])}, {len(data.classes)} classes, "
        f"SIREN {cfg.model.width}x{cfg.model.depth} k={cfg.method.inner_steps} "
        f"({n_lr:,} learning rates), classifier {n_cls:,} parameters, device {device}, "
        f"steps {tr.step}->{cfg.run.steps}"
    )
    history: list[dict] = []
    t0, start = time.perf_counter(), tr.step
    while tr.step < cfg.run.steps:
        batches = epoch_batches(data, cfg, tr.epoch, rank, tr.world)
        if not batches:
            raise ValueError(
                f"{data.display}: the training split yields no batch of {cfg.run.batch_size} "
                "images per worker; lower run.batch_size"
            )
        for b in batches[tr.batch_in_epoch :]:
            j = torch.from_numpy(b)
            rec = tr.train_step(data.images[j], data.labels[j], rank)
            tr.batch_in_epoch += 1
            step = tr.step
            if step % cfg.run.log_every == 0 or step == cfg.run.steps:
                el = time.perf_counter() - t0
                rec.update(step=step, epoch=tr.epoch, seconds=el)
                history.append(rec)
                eta = (cfg.run.steps - step) * el / max(1, step - start)
                say(
                    f"step {step:>6}/{cfg.run.steps} loss {rec['loss']:.4g} "
                    f"rec {rec['loss/rec']:.4g} cls {rec['loss/cls']:.4g} "
                    f"acc {rec['train_accuracy']:.3f} eta {eta:.0f}s"
                )
                if tracker is not None:
                    tracker.metrics({k: v for k, v in rec.items() if k != "step"}, step)
            if rank == 0 and (step % cfg.run.eval_every == 0 or step == cfg.run.steps):
                val = evaluate_split(tr.model, data, "val", cfg.run.eval_batch_size, device)
                err = 1.0 - val["accuracy"]
                improved = err < tr.best_val
                if improved:
                    tr.best_val, tr.best_step = err, step
                    save_checkpoint(tr.state_dict(), ckpt_dir / "best.pt")
                history.append({"step": step, **{f"val_{k}": v for k, v in val.items()}})
                say(
                    f"step {step:>6} validation accuracy {val['accuracy']:.4f} "
                    f"psnr {val['psnr']:.2f} dB{' (best)' if improved else ''}"
                )
                if tracker is not None:
                    tracker.metrics({f"val_{k}": v for k, v in val.items()}, step)
            if step % cfg.run.checkpoint_every == 0 or step == cfg.run.steps:
                path = save_checkpoint(tr.state_dict(), ckpt_dir / "last.pt") if rank == 0 else None
                if report is not None:
                    report(
                        {"step": step, "loss": rec["loss"], "best_val": tr.best_val},
                        path.parent if path else None,
                    )
            if tr.step >= cfg.run.steps:
                break
        if tr.step < cfg.run.steps:
            tr.epoch += 1
            tr.batch_in_epoch = 0
    return tr, history


def evaluate_mwt_run(
    run_dir: str | Path, log: Callable[[str], None] = print, track: bool = True
) -> dict[str, Any]:
    """Evaluate ``best.pt`` (else ``last.pt``) on the test split; write and log the results.

    Writes ``metrics.json`` and ``results.md`` into ``run_dir``; with ``track`` logs the
    ``test/*`` metrics and both files (and the config) to the run's MLflow run.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    data = load_labelled(cfg)
    ckpt = run_dir / "checkpoints" / "best.pt"
    ckpt = ckpt if ckpt.exists() else run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt, device)
    model = make_model(cfg, data).to(device)
    model.load_state_dict(state["model"])
    test = evaluate_split(model, data, "test", cfg.run.eval_batch_size, device)
    metrics: dict[str, Any] = {f"test_{k}": v for k, v in test.items()}
    if cfg.method.mwt.pixel_baseline:
        metrics.update(pixel_baseline(data, cfg.run.seed))
    summary = {
        "checkpoint": ckpt.name,
        "step": int(state["step"]),
        "best_step": int(state["best_step"]),
        "best_val_accuracy": 1.0 - float(state["best_val"]),
        "w_cls": cfg.method.mwt.w_cls,
        **metrics,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    rows = [("MWT" if cfg.method.mwt.w_cls > 0 else "WT", test["accuracy"], f"{test['psnr']:.2f}")]
    if "logreg_test_accuracy" in metrics:
        rows.append(("logistic regression (pixels)", metrics["logreg_test_accuracy"], "-"))
    table = "| model | test accuracy | PSNR (dB) |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {acc * 100:.2f}% | {p} |" for name, acc, p in rows
    )
    (run_dir / "results.md").write_text(
        f"# {cfg.run.name}: test split ({ckpt.name}, step {state['step']}, "
        f"{test['n']} images)\n\n{table}\n"
    )
    log(f"test split, {ckpt.name} of step {state['step']}:\n{table}")
    if track:
        from pipelines.tracking.tracker import Tracker

        tracker = Tracker(cfg, run_dir)
        tracker.metrics({f"test/{k}": v for k, v in metrics.items()}, int(state["step"]))
        for name in ("config.yaml", "results.md", "metrics.json"):
            tracker.artifact(run_dir / name)
        tracker.close()
        log(f"logged to MLflow run {tracker.run_id} at {tracker.display_uri}")
    return summary


def run_mwt_training(
    cfg: Config, log: Callable[[str], None] = print, resume: bool = True
) -> MWTResult:
    """Single-process MWT training + test evaluation (no Ray)."""
    from pipelines.tracking.tracker import Tracker

    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    # As many threads as one Ray worker: the tensors are small, and extra OpenMP threads
    # mostly spin-wait (10x slower per step on a shared 2-core machine).
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    run_dir = run_dir_of(cfg)
    if not resume and (run_dir / "checkpoints" / "last.pt").exists():
        (run_dir / "checkpoints" / "last.pt").unlink()
    data = load_labelled(cfg)
    save_config(cfg, run_dir / "config.yaml")
    tracker = Tracker(cfg, run_dir)
    try:
        tr, history = mwt_loop(cfg, data, device, log=log, tracker=tracker)
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    metrics = evaluate_mwt_run(run_dir, log=log)
    return MWTResult(run_dir, tr.step, tr.best_step, tr.best_val, [], history, metrics)

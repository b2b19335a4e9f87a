"""The MWT task (``method.name: mwt``; WT with ``method.mwt.w_cls: 0``) and its report.

Trained by the one engine like every task (``mia-inr train``, in one process or on Ray
Train): AdamW with ``run.outer_lr`` for the SIREN initialisation and the classifier and
``method.mwt.alpha_lr`` for the inner learning rates, validation accuracy every
``run.eval_every`` steps choosing ``best.pt`` (never on test). Every worker loads the
small in-memory labelled store itself and takes every ``world``-th image of each epoch's
seeded permutation, so no Ray Data pipeline is needed. The report evaluates the selected
checkpoint on a split: accuracy and PSNR, and on the test split next to a logistic
regression on raw pixels (``method.mwt.pixel_baseline``); the end of ``mia-inr train``
reports the validation split (``metrics_val.json``, ``results_val.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mia_core.config import Config
from mia_core.mwt import MWT, build_augment, build_mwt, count_lrs
from mia_core.runtime import host_to_device, resolve_device, set_matmul_precision
from pipelines.data.labelled_images import (
    SPLIT_CODES,
    LabelledImages,
    load_labelled,
    pixel_baseline,
    resolve_labelled_store,
)
from pipelines.engine.checkpoint import OTHER_MODEL_HINT, check_model_state, load_checkpoint
from pipelines.engine.run_dir import load_run_config, selected_checkpoint
from pipelines.engine.task import Task, WorkerContext, check_split, split_file
from pipelines.tracking.tracker import Tracker


def make_model(cfg: Config, data: LabelledImages) -> MWT:
    """The MWT for ``data``'s image shape and classes (seeded by ``run.seed``)."""
    torch.manual_seed(cfg.run.seed)
    _, h, w, c = data.images.shape
    return build_mwt(cfg.model, cfg.method, (h, w), c, len(data.classes))


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
    """Accuracy, PSNR (dB) and MSE of ``split``, fitting every image in k steps."""
    with torch.no_grad():  # the inner loop re-enables gradients for its own steps
        return _evaluate_split(model, data, split, batch_size, device)


def _evaluate_split(
    model: MWT, data: LabelledImages, split: str, batch_size: int, device: torch.device
) -> dict[str, float]:
    model.eval()
    idx = data.indices(split)
    correct, psnr, mse = 0, 0.0, 0.0
    gen = torch.Generator().manual_seed(SPLIT_CODES[split])  # eval_subsample's pixels
    for i in range(0, len(idx), batch_size):
        j = torch.from_numpy(idx[i : i + batch_size])
        images, labels = data.images[j].to(device), data.labels[j].to(device)
        out = model(images, labels, gen, create_graph=False)
        correct += int((out.logits.argmax(-1).cpu() == data.labels[j]).sum())
        psnr += float(out.psnr().sum())
        mse += float(out.mse.sum())
    model.train()
    n = max(1, len(idx))
    return {"accuracy": correct / n, "psnr": psnr / n, "mse": mse / n, "n": len(idx)}


def evaluate_mwt_run(
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    track: bool = True,
    figures: bool = True,
    split: str = "test",
) -> dict[str, Any]:
    """Evaluate ``best.pt`` (else ``last.pt``) on ``split``; write and log the results.

    Writes ``metrics.json`` and ``results.md`` into ``run_dir`` (``metrics_val.json`` and
    ``results_val.md`` for ``split="val"``, without the pixel baseline, which scores the
    test split); with ``track`` logs the ``<split>/*`` metrics and both files (and the
    config) to the run's MLflow run. The report has no figures (``figures`` is accepted
    for the task protocol).
    """
    check_split(split)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    data = load_labelled(cfg)
    ckpt = selected_checkpoint(run_dir)
    state = load_checkpoint(ckpt, "cpu")  # load_state_dict moves it to the device
    model = make_model(cfg, data).to(device)
    check_model_state(model, state.get("model"), f"checkpoint {ckpt}", OTHER_MODEL_HINT)
    model.load_state_dict(state["model"])
    scored = evaluate_split(model, data, split, cfg.run.eval_batch_size, device)
    metrics: dict[str, Any] = {f"{split}_{k}": v for k, v in scored.items()}
    if cfg.method.mwt.pixel_baseline and split == "test":
        metrics.update(pixel_baseline(data, cfg.run.seed))
    summary = {
        "checkpoint": ckpt.name,
        "step": int(state["step"]),
        "best_step": int(state["best_step"]),
        "best_val_accuracy": 1.0 - float(state["best_val"]),
        "w_cls": cfg.method.mwt.w_cls,
        "split": split,
        **metrics,
    }
    names = {n: split_file(n, split) for n in ("results.md", "metrics.json")}
    (run_dir / names["metrics.json"]).write_text(json.dumps(summary, indent=1))
    rows = [
        ("MWT" if cfg.method.mwt.w_cls > 0 else "WT", scored["accuracy"], f"{scored['psnr']:.2f}")
    ]
    if "logreg_test_accuracy" in metrics:
        rows.append(("logistic regression (pixels)", metrics["logreg_test_accuracy"], "-"))
    table = f"| model | {split} accuracy | PSNR (dB) |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {acc * 100:.2f}% | {p} |" for name, acc, p in rows
    )
    (run_dir / names["results.md"]).write_text(
        f"# {cfg.run.name}: {split} split ({ckpt.name}, step {state['step']}, "
        f"{scored['n']} images)\n\n{table}\n"
    )
    log(f"{split} split, {ckpt.name} of step {state['step']}:\n{table}")
    if track:
        tracker = Tracker(cfg, run_dir)
        tracker.metrics({f"{split}/{k}": v for k, v in metrics.items()}, int(state["step"]))
        for name in ("config.yaml", *names.values()):
            tracker.artifact(run_dir / name)
        tracker.close()
        log(f"logged to MLflow run {tracker.run_id} at {tracker.display_uri}")
    return summary


class MWTTask(Task):
    """MWT / WT: a meta-learned SIREN per image and a classifier of its adapted weights.

    Parameter groups: the SIREN initialisation (no weight decay), the inner learning
    rates (``method.mwt.alpha_lr``, no weight decay) and the classifier (``run``'s lr
    and weight decay). Augmentations and pixel subsets are drawn from
    ``(seed, step, rank)``, batches from ``(seed, epoch)``, so a resumed run repeats an
    uninterrupted one. The validation score is the error rate.
    """

    nonfinite_hint = "Lower method.mwt.lr_init, method.mwt.alpha_lr or run.outer_lr."
    report = staticmethod(evaluate_mwt_run)

    def __init__(self, cfg: Config, ctx: WorkerContext) -> None:
        super().__init__(cfg, ctx)
        self.data = load_labelled(cfg)
        self.model = make_model(cfg, self.data).to(ctx.device)
        self.augment = build_augment(cfg.method)

    @classmethod
    def prepare(cls, cfg: Config) -> None:
        """Build the labelled store (digits) once, before the workers start."""
        resolve_labelled_store(cfg)

    @classmethod
    def configure_process(cls, cfg: Config) -> None:
        """As many threads as one Ray worker.

        The tensors are small and extra OpenMP threads mostly spin-wait (10x slower per
        step on a shared 2-core machine).
        """
        torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))

    def param_groups(self) -> list[dict[str, Any]]:
        """SIREN init, inner rates (``alpha_lr``) and classifier.

        ``run.weight_decay`` applies to the classifier, and to the other two groups only
        with ``method.mwt.decay_siren`` (the official code decays all three). The groups
        are also the units of ``run.grad_clip_groups``.
        """
        decay = self.cfg.run.weight_decay if self.cfg.method.mwt.decay_siren else 0.0
        return [
            {"params": self.model.meta_parameters(), "weight_decay": decay},
            {
                "params": self.model.lr_parameters(),
                "weight_decay": decay,
                "lr": self.cfg.method.mwt.alpha_lr,
            },
            {"params": list(self.model.classifier.parameters())},
        ]

    def batches(self, epoch: int, skip: int) -> Iterable[np.ndarray]:
        """This worker's image indices of ``epoch`` (see :func:`epoch_batches`)."""
        return epoch_batches(self.data, self.cfg, epoch, self.ctx.rank, self.ctx.world)[skip:]

    def loss(self, batch: np.ndarray, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction + ``w_cls`` x classification loss; accuracy as a statistic."""
        seed = self.cfg.run.seed * 1_000_003 + (step - 1) * 97 + self.ctx.rank
        gen = torch.Generator().manual_seed(seed)
        j = torch.from_numpy(batch)
        # Augmented on the training device; ``gen`` only draws the parameters (on CPU).
        images = self.augment(host_to_device(self.data.images[j], self.ctx.device), gen)
        labels = host_to_device(self.data.labels[j], self.ctx.device)
        out = self.model(images, labels, gen)
        acc = (out.logits.argmax(-1) == labels).float().mean()
        stats = {"loss/rec": out.rec_loss, "loss/cls": out.cls_loss, "train_accuracy": acc}
        return out.loss, stats

    def batch_size(self, batch: np.ndarray) -> int:
        """Images in the batch."""
        return len(batch)

    def validate(self) -> tuple[float, dict[str, float]]:
        """Error rate on the validation split; accuracy, PSNR and MSE logged."""
        val = evaluate_split(
            self.model, self.data, "val", self.cfg.run.eval_batch_size, self.ctx.device
        )
        return 1.0 - val["accuracy"], {f"val_{k}": v for k, v in val.items() if k != "n"}

    def describe(self) -> str:
        """Images, classes, SIREN size, learning rates and classifier size."""
        cfg, data = self.cfg, self.data
        n_lr, _ = count_lrs(self.model.siren)
        n_cls = sum(p.numel() for p in self.model.classifier.parameters())
        return (
            f"mwt (w_cls={cfg.method.mwt.w_cls}) on {data.display}, images "
            f"{tuple(data.images.shape[1:])}, {len(data.classes)} classes, SIREN "
            f"{cfg.model.width}x{cfg.model.depth} k={cfg.method.inner_steps} "
            f"({n_lr:,} learning rates), classifier {n_cls:,} parameters"
        )

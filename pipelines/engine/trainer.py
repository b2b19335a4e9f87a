"""The outer-loop state of one worker: learner, optimiser, schedule, gradient sync.

Used unchanged by the single-process loop and by every Ray Train worker. Meta-gradients
are averaged across workers with one flat ``all_reduce`` per step instead of
``DistributedDataParallel``: DDP's reducer hooks do not support the inner
``autograd.grad(create_graph=True)`` of second-order meta-learning. The loss is reduced
in the same buffer, so a non-finite loss on any worker stops every worker at the same
step (no worker left waiting in a collective).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from mia_core.builders import build_learner
from mia_core.config import Config
from mia_core.data import Episode


def make_scheduler(opt: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine decay to zero at ``run.steps``."""
    warm, total, kind = cfg.run.warmup_steps, cfg.run.steps, cfg.run.lr_schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class MetaTrainer:
    """One worker's meta-learner and outer optimiser.

    Args:
        cfg: resolved config.
        dims: modality -> ``(d_in, d_out)``.
        device: where the learner lives.
    """

    def __init__(self, cfg: Config, dims: dict[str, tuple[int, int]], device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.run.seed)
        self.learner = build_learner(cfg.model, cfg.method, dims).to(device)
        self.opt = torch.optim.AdamW(
            self.learner.parameters(), lr=cfg.run.outer_lr, weight_decay=cfg.run.weight_decay
        )
        self.sched = make_scheduler(self.opt, cfg)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_val, self.best_step = math.inf, -1
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _autocast(self):
        if self.cfg.run.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, episode: Episode) -> dict[str, float]:
        """One meta-iteration on this worker's episode batch; returns logged values."""
        episode = {m: b.to(self.device) for m, b in episode.items()}
        with self._autocast():
            out = self.learner(episode)
        self.opt.zero_grad(set_to_none=True)
        if torch.isfinite(out.loss):
            out.loss.backward()
        params = [p for p in self.learner.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        losses = torch.stack([out.loss.detach().float(), *[v.float() for v in out.losses.values()]])
        flat = _flatten_dense_tensors([*grads, losses.to(grads[0].dtype)])
        if self.world > 1:
            dist.all_reduce(flat)
            flat /= self.world
        synced = _unflatten_dense_tensors(flat, [*grads, losses])
        loss_vals = synced[-1]
        if not torch.isfinite(loss_vals[0]):
            per_mod = {m: float(v) for m, v in zip(out.losses, loss_vals[1:], strict=True)}
            raise FloatingPointError(
                f"non-finite outer loss at step {self.step + 1} (per modality: {per_mod}); "
                "the last checkpoint is intact. Lower method.inner_lr or run.outer_lr."
            )
        for p, g in zip(params, synced[:-1], strict=True):
            p.grad = g
        clip = self.cfg.run.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else torch.tensor(math.nan)
        self.opt.step()
        self.sched.step()
        self.step += 1
        rec = {
            "loss": float(loss_vals[0]),
            "grad_norm": float(norm),
            "lr": self.sched.get_last_lr()[0],
        }
        rec.update({f"loss/{m}": float(v) for m, v in zip(out.losses, loss_vals[1:], strict=True)})
        return rec

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (``weights_only``-loadable)."""
        return {
            "model": self.learner.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_val": self.best_val,
            "best_step": self.best_step,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.learner.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.best_val, self.best_step = float(state["best_val"]), int(state["best_step"])
        torch.set_rng_state(state["torch_rng"])

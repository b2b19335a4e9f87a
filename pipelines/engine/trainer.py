"""The one outer-loop Trainer: optimiser, schedule, gradient sync, checks, for every task.

Used unchanged by the single-process loop and by every Ray Train worker. Gradients are
averaged across workers with one flat ``all_reduce`` per step instead of
``DistributedDataParallel``: DDP's reducer hooks do not support the inner
``autograd.grad(create_graph=True)`` of second-order meta-learning. The loss and the
task's statistics are reduced in the same buffer, so a non-finite loss on any worker
stops every worker at the same step (no worker left waiting in a collective).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from mia_core.config import Config
from pipelines.engine.task import Task


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


class Trainer:
    """One worker's task, outer optimiser and schedule.

    Args:
        task: the task (its model already on the worker's device).
        cfg: resolved config (``run`` gives the optimiser, schedule and clipping).

    Attributes:
        model: ``task.model`` (init hooks may freeze parts of it and edit ``opt``).
        opt: AdamW over ``task.param_groups()``.
        step: completed outer steps; ``epoch`` / ``batch_in_epoch``: the data position.
        best_val / best_step: the best validation score so far and its step.
        wall_seconds: training wall time over every session of the run (validation and
            data loading included; the loop updates it), what meta-pretraining cost.
    """

    def __init__(self, task: Task, cfg: Config) -> None:
        self.task, self.cfg = task, cfg
        self.model = task.model
        self.device = task.ctx.device
        self.opt = torch.optim.AdamW(
            task.param_groups(), lr=cfg.run.outer_lr, weight_decay=cfg.run.weight_decay
        )
        self.sched = make_scheduler(self.opt, cfg)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_val, self.best_step = math.inf, -1
        self.wall_seconds = 0.0
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _autocast(self):
        if self.cfg.run.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.opt.param_groups for p in g["params"] if p.requires_grad]

    def _clip(self) -> torch.Tensor:
        """Clip to ``run.grad_clip`` (globally or per group); the global norm before it."""
        clip = self.cfg.run.grad_clip
        if clip <= 0:
            return torch.tensor(math.nan)
        if not self.cfg.run.grad_clip_groups:
            return torch.nn.utils.clip_grad_norm_(self._params(), clip)
        norms = [
            torch.nn.utils.clip_grad_norm_([p for p in g["params"] if p.requires_grad], clip)
            for g in self.opt.param_groups
        ]
        return torch.stack(norms).square().sum().sqrt()

    def train_step(self, batch: Any) -> dict[str, float]:
        """One outer step on this worker's ``batch``; returns the logged values."""
        with self._autocast():
            loss, stats = self.task.loss(batch, self.step + 1)
        self.opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
        params = self._params()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        names = list(stats)
        values = torch.stack([loss.detach().float(), *[stats[k].detach().float() for k in names]])
        dtype = grads[0].dtype if grads else values.dtype
        flat = _flatten_dense_tensors([*grads, values.to(device=self.device, dtype=dtype)])
        if self.world > 1:
            dist.all_reduce(flat)
            flat /= self.world
        synced = _unflatten_dense_tensors(flat, [*grads, values])
        vals = synced[-1]
        if not torch.isfinite(vals[0]):
            detail = {k: float(v) for k, v in zip(names, vals[1:], strict=True)}
            raise FloatingPointError(
                f"non-finite outer loss at step {self.step + 1} ({detail}); the last "
                f"checkpoint is intact. {self.task.nonfinite_hint}"
            )
        for p, g in zip(params, synced[:-1], strict=True):
            p.grad = g
        norm = self._clip()
        self.opt.step()
        self.sched.step()
        self.step += 1
        rec = {"loss": float(vals[0]), "grad_norm": float(norm), "lr": self.sched.get_last_lr()[0]}
        rec.update({k: float(v) for k, v in zip(names, vals[1:], strict=True)})
        return rec

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
            "wall_seconds": self.wall_seconds,
            "torch_rng": torch.get_rng_state(),
            **self._cuda_rng(),
        }

    def _cuda_rng(self) -> dict[str, torch.Tensor]:
        """This worker's CUDA generator state (``inner_points`` draws there), if on CUDA."""
        if self.device.type != "cuda":
            return {}
        return {"cuda_rng": torch.cuda.get_rng_state(self.device)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, whatever device its tensors were loaded onto.

        ``load_state_dict`` moves parameters and optimiser moments to the model's device;
        the optimiser's step counters stay on the CPU as torch expects (no host sync per
        parameter per step); RNG states are given to torch as CPU byte tensors. A CUDA
        RNG state is restored on a CUDA worker and ignored elsewhere.
        """
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.best_val, self.best_step = float(state["best_val"]), int(state["best_step"])
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        for group in self.opt.param_groups:
            if group.get("capturable") or group.get("fused"):
                continue  # these keep their step counters on the parameters' device
            for p in group["params"]:
                step = self.opt.state.get(p, {}).get("step")
                if torch.is_tensor(step) and step.device.type != "cpu":
                    self.opt.state[p]["step"] = step.to("cpu")
        if "torch_rng" in state:
            torch.set_rng_state(_cpu_bytes(state["torch_rng"]))
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(_cpu_bytes(state["cuda_rng"]), self.device)


def _cpu_bytes(rng_state: torch.Tensor) -> torch.Tensor:
    """An RNG state as the CPU ``ByteTensor`` torch's ``set_rng_state`` functions need."""
    return rng_state.to(device="cpu", dtype=torch.uint8)

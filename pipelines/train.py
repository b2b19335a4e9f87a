"""Single-process meta-training: the loop the Ray Train job will run on each worker.

``run_training(cfg)`` builds data, learner and outer optimiser from a resolved config,
meta-trains with periodic validation and checkpoints (resuming from the last one when
the run directory has it), picks the best checkpoint on the validation split, and
evaluates it on the test split binned by support ratio.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mia_core.builders import build_learner
from mia_core.config import Config, config_to_dict, save_config
from mia_core.meta import MetaLearner
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.checkpoint import load_checkpoint, save_checkpoint
from pipelines.evaluation import EvalRow, evaluate, markdown_table, mean_metric
from pipelines.signals import EpisodeSampler, load_signals, ratio_ranges


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
    test_rows: list[EvalRow]
    history: list[dict] = field(default_factory=list)


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


def _validate(learner: MetaLearner, cfg: Config, signals, device) -> float:
    learner.eval()
    rng = ratio_ranges(cfg.data)
    lo = min(r[0] for r in rng.values())
    hi = max(r[1] for r in rng.values())
    rows = evaluate(
        learner,
        signals,
        [(lo, hi)],
        1,
        cfg.run.eval_batch_size,
        cfg.run.seed + 1,
        device,
        cfg.data.psnr_range,
    )
    learner.train()
    return mean_metric(rows, "nmse_all")


def run_training(
    cfg: Config, log: Callable[[str], None] = print, resume: bool = True
) -> TrainResult:
    """Meta-train, select on validation, evaluate on test; see the module docstring."""
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    torch.manual_seed(cfg.run.seed)
    data = load_signals(cfg.data)
    learner = build_learner(cfg.model, cfg.method, data.dims).to(device)
    opt = torch.optim.AdamW(
        learner.parameters(), lr=cfg.run.outer_lr, weight_decay=cfg.run.weight_decay
    )
    sched = make_scheduler(opt, cfg)
    sampler = EpisodeSampler(data.train, ratio_ranges(cfg.data), cfg.run.batch_size, cfg.run.seed)
    run_dir = Path(cfg.run.out_dir) / cfg.run.name
    ckpt_dir = run_dir / "checkpoints"
    save_config(cfg, run_dir / "config.yaml")

    start, best_val, best_step = 0, math.inf, -1
    if resume and (ckpt_dir / "last.pt").exists():
        state = load_checkpoint(ckpt_dir / "last.pt", device)
        learner.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        start, best_val, best_step = state["step"], state["best_val"], state["best_step"]
        log(f"resumed from {ckpt_dir / 'last.pt'} at step {start}")

    def checkpoint(step: int, name: str) -> None:
        save_checkpoint(
            {
                "model": learner.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "sampler": sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "best_val": best_val,
                "best_step": best_step,
                "config": config_to_dict(cfg),
            },
            ckpt_dir / name,
        )

    n_params = sum(p.numel() for p in learner.parameters())
    log(
        f"run {cfg.run.name}: {cfg.method.name} on {cfg.model.family} "
        f"({n_params:,} meta-parameters), {cfg.data.name} train/val/test "
        f"{data.train.num_signals}/{data.val.num_signals}/{data.test.num_signals}, "
        f"device {device}, steps {start}->{cfg.run.steps}"
    )
    history: list[dict] = []
    t0, seen = time.perf_counter(), 0
    learner.train()
    for step in range(start + 1, cfg.run.steps + 1):
        episode = {m: b.to(device) for m, b in sampler.sample().items()}
        out = learner(episode)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(
                f"non-finite outer loss at step {step} (per modality: "
                f"{ {m: float(v) for m, v in out.losses.items()} }); the last checkpoint in "
                f"{ckpt_dir} is intact. Lower method.inner_lr or run.outer_lr."
            )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.run.grad_clip)
            if cfg.run.grad_clip > 0
            else torch.tensor(float("nan"))
        )
        opt.step()
        sched.step()
        seen += episode[learner.modalities[0]].batch_size
        if step % cfg.run.log_every == 0 or step == cfg.run.steps:
            elapsed = time.perf_counter() - t0
            rate = seen / elapsed
            eta = (cfg.run.steps - step) * elapsed / max(1, step - start)
            rec = {
                "step": step,
                "loss": float(out.loss.detach()),
                "grad_norm": float(grad_norm),
                "signals_per_s": rate,
                **{f"loss/{m}": float(v) for m, v in out.losses.items()},
            }
            history.append(rec)
            per_mod = " ".join(f"{m}={float(v):.4g}" for m, v in out.losses.items())
            log(
                f"step {step:>6}/{cfg.run.steps} loss {float(out.loss.detach()):.4g} [{per_mod}] "
                f"{rate:.1f} signals/s eta {eta:.0f}s"
            )
        if step % cfg.run.eval_every == 0 or step == cfg.run.steps:
            val = _validate(learner, cfg, data.val, device)
            history.append({"step": step, "val_nmse": val})
            improved = val < best_val
            if improved:
                best_val, best_step = val, step
                checkpoint(step, "best.pt")
            log(f"step {step:>6} validation nmse {val:.4g}{' (best)' if improved else ''}")
        if step % cfg.run.checkpoint_every == 0 or step == cfg.run.steps:
            checkpoint(step, "last.pt")

    final_step = max(start, cfg.run.steps)
    if (ckpt_dir / "best.pt").exists():
        learner.load_state_dict(load_checkpoint(ckpt_dir / "best.pt", device)["model"])
    learner.eval()
    rows = evaluate(
        learner,
        data.test,
        [tuple(b) for b in cfg.run.eval_bins],
        cfg.run.eval_repeats,
        cfg.run.eval_batch_size,
        cfg.run.seed + 2,
        device,
        cfg.data.psnr_range,
    )
    table = markdown_table(rows, "nmse_all", 100.0)
    log(
        f"test split, checkpoint of step {best_step} "
        f"(normalised MSE x 1e2, {cfg.run.eval_repeats} repeats):"
    )
    log(table)
    (run_dir / "results.md").write_text(
        f"# {cfg.run.name}: test split, normalised MSE x 1e2\n\n{table}\n\n"
        f"{markdown_table(rows, 'mse_all')}\n\n{markdown_table(rows, 'psnr_all')}\n"
    )
    (run_dir / "metrics.json").write_text(
        json.dumps(
            {
                "best_step": best_step,
                "best_val_nmse": best_val,
                "test": [
                    {"modality": r.modality, "r_min": r.r_min, "r_max": r.r_max, **r.metrics}
                    for r in rows
                ],
                "history": history,
            },
            indent=1,
        )
    )
    return TrainResult(run_dir, final_step, best_step, best_val, rows, history)

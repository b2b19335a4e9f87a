"""Bootstrapped meta-test evaluation, binned by support ratio.

For every support-ratio bin ``[R_min, R_max]`` and every repeat, fresh support sets are
drawn for all evaluated signals, the learner adapts (no meta-gradients) and per-signal
metrics are collected; the table reports their mean per modality and bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mia_core.data import SignalSet, make_episode
from mia_core.meta import MetaLearner

METRICS = (
    "mse_all",
    "mse_support",
    "mse_nonsupport",
    "nmse_all",
    "nmse_support",
    "nmse_nonsupport",
    "psnr_all",
    "psnr_support",
    "psnr_nonsupport",
)


@dataclass
class EvalRow:
    """Mean metrics of one modality in one support-ratio bin."""

    modality: str
    r_min: float
    r_max: float
    metrics: dict[str, float]


def evaluate(
    learner: MetaLearner,
    signals: SignalSet,
    bins: list[tuple[float, float]],
    repeats: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    psnr_range: float = 1.0,
) -> list[EvalRow]:
    """Evaluate ``learner`` on ``signals`` for each support-ratio bin.

    Args:
        learner: the meta-learner (put in eval mode by the caller).
        signals: signals to evaluate (validation or test split).
        bins: support-ratio ranges; every modality uses the bin's range.
        repeats: resamplings of the support sets (bootstrap factor).
        batch_size: signals per adaptation batch.
        seed: seed of the support sampling, so evaluations are comparable.
        device: where the learner lives.
        psnr_range: peak-to-peak value range for PSNR.

    Returns:
        One row per (bin, modality), in bin order then modality order.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    n = signals.num_signals
    for lo, hi in bins:
        sums: dict[str, dict[str, list[torch.Tensor]]] = {
            m: {k: [] for k in METRICS} for m in learner.modalities
        }
        for _ in range(repeats):
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(n, start + batch_size))
                episode = make_episode(signals, idx, {m: (lo, hi) for m in learner.modalities}, gen)
                episode = {m: b.to(device) for m, b in episode.items()}
                metrics, _ = learner.evaluate(episode, psnr_range)
                for m, md in metrics.items():
                    for k in METRICS:
                        sums[m][k].append(md[k].detach().cpu())
        for m in learner.modalities:
            row = {}
            for k in METRICS:
                vals = torch.cat(sums[m][k])
                vals = vals[~torch.isnan(vals)]
                row[k] = float(vals.mean()) if vals.numel() else math.nan
            rows.append(EvalRow(m, lo, hi, row))
    return rows


def mean_metric(rows: list[EvalRow], key: str) -> float:
    """Mean of one metric over all rows (model-selection score)."""
    vals = [r.metrics[key] for r in rows if not math.isnan(r.metrics[key])]
    return sum(vals) / len(vals) if vals else math.nan


def markdown_table(rows: list[EvalRow], key: str = "nmse_all", scale: float = 1.0) -> str:
    """Paper-shaped table: one row per metric, one column per (modality, bin).

    Args:
        rows: from :func:`evaluate`.
        key: metric family prefix (``nmse`` or ``mse`` or ``psnr``) plus region suffix
            is taken from each of all/support/nonsupport.
        scale: multiply values (MIA prints normalised MSE x 1e2: pass 100).
    """
    family = key.split("_")[0]
    cols = [(r.modality, r.r_min, r.r_max) for r in rows]
    head = "| metric | " + " | ".join(f"{m} [{lo:g}, {hi:g}]" for m, lo, hi in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = [head, sep]
    for region in ("all", "support", "nonsupport"):
        vals = [r.metrics[f"{family}_{region}"] * scale for r in rows]
        lines.append(f"| {family} {region} | " + " | ".join(f"{v:.4g}" for v in vals) + " |")
    return "\n".join(lines)

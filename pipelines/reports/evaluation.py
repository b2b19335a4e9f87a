"""Bootstrapped meta-test evaluation, binned by support ratio.

For every support-ratio bin ``[R_min, R_max]`` and every repeat, fresh support sets are
drawn for all signals of the evaluated split, the learner adapts (no meta-gradients) and per-signal
metrics are collected; the table reports their mean per modality and bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mia_core.meta import MetaLearner
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.stores import Store
from pipelines.data.streams import store_episodes

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
    store: Store,
    split: str,
    bins: list[tuple[float, float]],
    repeats: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    psnr_range: float = 1.0,
    spatial_stride: int = 1,
    time_stride: int = 1,
) -> list[EvalRow]:
    """Evaluate ``learner`` on one split of ``store`` for each support-ratio bin.

    Args:
        learner: the meta-learner (put in eval mode by the caller).
        store: the signal or field store.
        split: ``val`` or ``test`` (``train`` for diagnostics).
        bins: support-ratio ranges; every modality uses the bin's range.
        repeats: resamplings of the support sets (bootstrap factor); repeat ``r`` uses
            episode epoch ``r``, so every evaluation of a split sees the same episodes.
        batch_size: signals per adaptation batch.
        seed: seed of the support sampling.
        device: where the learner lives.
        psnr_range: peak-to-peak value range for PSNR.
        spatial_stride: grid subsampling (as in training).
        time_stride: signal subsampling (as in training).

    Returns:
        One row per (bin, modality), in bin order then modality order.
    """
    rows = []
    for b, (lo, hi) in enumerate(bins):
        spec = EpisodeSpec(
            {m: (lo, hi) for m in store.modalities},
            seed + 7919 * b,
            spatial_stride,
            store.location.display,
        )
        sums: dict[str, dict[str, list[torch.Tensor]]] = {
            m: {k: [] for k in METRICS} for m in learner.modalities
        }
        for r in range(repeats):
            for episode in store_episodes(
                store, spec, batch_size, split, epoch=r, shuffle=False, time_stride=time_stride
            ):
                episode = {m: mb.to(device) for m, mb in episode.items()}
                metrics, _ = learner.evaluate(episode, psnr_range)
                for m, md in metrics.items():
                    for k in METRICS:
                        sums[m][k].append(md[k].detach().cpu())
        for m in learner.modalities:
            row = {}
            for k in METRICS:
                vals = torch.cat(sums[m][k]) if sums[m][k] else torch.empty(0)
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


def write_csv(rows: list[EvalRow], path) -> None:
    """One line per (modality, bin) with every metric."""
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["modality", "r_min", "r_max", *METRICS])
        for r in rows:
            w.writerow([r.modality, r.r_min, r.r_max, *(r.metrics[k] for k in METRICS)])

"""Bootstrapped meta-test evaluation, binned by support ratio.

Two protocols (``run.eval_protocol``):

``paper`` (default; MIA App. D.1 and Table 1): for every repeat, each modality of each
signal draws its own ratio ``R ~ U(R_min, R_max)`` over the whole evaluation range (the
union ``[min R_min, max R_max]`` of the bins; ``[0.01, 0.1]`` for the synthetic table),
the learner adapts on all modalities at once, and each modality's per-signal metrics go
to the bins of that modality's *realised* ratio ``|support| / |valid points|``. A
modality in the lowest bin therefore sees the other modalities at any ratio, as in
training. As in the official code (yhytoto12/MIA, ``mia/training.py``, ``validation``:
``(Rmin <= R) & (R <= Rmax)`` per ``Rrange_lists`` bin) bins are closed, so a ratio on a
shared edge (e.g. 4 of 200 points = 0.02) counts in both neighbouring bins; ratios that
rounding puts just outside the range count in the nearest end bin, ratios in a gap between
non-adjacent bins in none.

``joint`` (the earlier protocol): one pass per bin in which every modality draws its ratio
from that bin's range; every signal of the pass counts in that bin.

Repeat ``r`` uses episode epoch ``r``, so every evaluation of a split sees the same
episodes. A bin that received no signal reports NaN metrics (never a zero error) and a
count of 0.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mia_core.data import ModalityBatch
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
PROTOCOLS = ("paper", "joint")
_TOL = 1e-6  # ratios are k / n: equal to an edge up to float rounding


@dataclass
class EvalRow:
    """Mean metrics of one modality in one support-ratio bin.

    Attributes:
        modality: modality name.
        r_min: bin lower edge.
        r_max: bin upper edge.
        metrics: metric -> mean over the (signal, repeat) draws in the bin (NaN if none).
        count: (signal, repeat) draws that fell into the bin (an edge draw counts in both
            neighbouring bins).
    """

    modality: str
    r_min: float
    r_max: float
    metrics: dict[str, float]
    count: int = 0


def realised_ratio(mb: ModalityBatch) -> Tensor:
    """``(B,)`` float64 support size over valid query points, per signal."""
    return mb.support_mask.double().sum(1).cpu() / mb.query_mask.double().sum(1).clamp_min(1).cpu()


def bin_members(ratio: Tensor, bins: list[tuple[float, float]]) -> Tensor:
    """Which closed bins each ratio falls in (see the module docstring).

    Args:
        ratio: ``(B,)`` realised ratios.
        bins: ``n`` bins ``(lo, hi)``.

    Returns:
        ``(B, n)`` bool; a row may have two entries (a shared edge) or none (a gap).
    """
    ratio = ratio.double().clamp(min(lo for lo, _ in bins), max(hi for _, hi in bins))
    lo = torch.tensor([b[0] for b in bins], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in bins], dtype=torch.float64)
    return (ratio[:, None] >= lo - _TOL) & (ratio[:, None] <= hi + _TOL)


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
    protocol: str = "paper",
) -> list[EvalRow]:
    """Evaluate ``learner`` on one split of ``store`` per modality and support-ratio bin.

    Args:
        learner: the meta-learner (put in eval mode by the caller).
        store: the signal or field store.
        split: ``val`` or ``test`` (``train`` for diagnostics).
        bins: support-ratio ranges ``(R_min, R_max)``.
        repeats: resamplings of the support sets (bootstrap factor).
        batch_size: signals per adaptation batch.
        seed: seed of the support sampling (``joint`` bin ``b`` uses ``seed + 7919 b``,
            ``paper`` uses ``seed``, so one bin gives the same episodes either way).
        device: where the learner lives.
        psnr_range: peak-to-peak value range for PSNR.
        spatial_stride: grid subsampling (as in training).
        time_stride: signal subsampling (as in training).
        protocol: one of ``PROTOCOLS`` (see the module docstring).

    Returns:
        One row per (bin, modality), in bin order then modality order.

    Raises:
        ValueError: an unknown protocol or no bins.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown eval protocol {protocol!r}; known: {list(PROTOCOLS)}")
    if not bins:
        raise ValueError("evaluate needs at least one support-ratio bin")
    if protocol == "joint":
        passes = [((lo, hi), seed + 7919 * b, b) for b, (lo, hi) in enumerate(bins)]
    else:
        full = (min(lo for lo, _ in bins), max(hi for _, hi in bins))
        passes = [(full, seed, None)]
    values = {
        (b, m): {k: [] for k in METRICS} for b in range(len(bins)) for m in learner.modalities
    }
    counts = {key: 0 for key in values}
    for ratio_range, pass_seed, fixed_bin in passes:
        spec = EpisodeSpec(
            {m: ratio_range for m in store.modalities},
            pass_seed,
            spatial_stride,
            store.location.display,
        )
        for r in range(repeats):
            for episode in store_episodes(
                store, spec, batch_size, split, epoch=r, shuffle=False, time_stride=time_stride
            ):
                episode = {m: mb.to(device) for m, mb in episode.items()}
                metrics, _ = learner.evaluate(episode, psnr_range)
                for m, md in metrics.items():
                    n = episode[m].batch_size
                    if fixed_bin is None:
                        members = bin_members(realised_ratio(episode[m]), bins)
                    else:
                        members = torch.zeros(n, len(bins), dtype=torch.bool)
                        members[:, fixed_bin] = True
                    for b in members.any(0).nonzero().flatten().tolist():
                        sel = members[:, b]
                        counts[b, m] += int(sel.sum())
                        for k in METRICS:
                            values[b, m][k].append(md[k].detach().cpu()[sel])
    rows = []
    for b, (lo, hi) in enumerate(bins):
        for m in learner.modalities:
            row = {}
            for k in METRICS:
                parts = values[b, m][k]
                vals = torch.cat(parts) if parts else torch.empty(0)
                vals = vals[~torch.isnan(vals)]
                row[k] = float(vals.mean()) if vals.numel() else math.nan
            rows.append(EvalRow(m, lo, hi, row, counts[b, m]))
    return rows


def mean_metric(rows: list[EvalRow], key: str) -> float:
    """Mean of one metric over all rows, NaN rows (empty bins) left out (model selection)."""
    vals = [r.metrics[key] for r in rows if not math.isnan(r.metrics[key])]
    return sum(vals) / len(vals) if vals else math.nan


def markdown_table(rows: list[EvalRow], key: str = "nmse_all", scale: float = 1.0) -> str:
    """Paper-shaped table: one row per metric, one column per (modality, bin).

    The last line gives the (signal, repeat) draws per column; an empty bin shows ``nan``.

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
    lines.append("| signals | " + " | ".join(str(r.count) for r in rows) + " |")
    return "\n".join(lines)


def write_csv(rows: list[EvalRow], path) -> None:
    """One line per (modality, bin) with every metric and the draws in the bin."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["modality", "r_min", "r_max", *METRICS, "n_signals"])
        for r in rows:
            w.writerow([r.modality, r.r_min, r.r_max, *(r.metrics[k] for k in METRICS), r.count])

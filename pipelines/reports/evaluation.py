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

Classical rows (opt-in, ``classical``): fitted classical reconstructors
(:mod:`pipelines.reports.classical`) predict every query point from the very support sets
the learner adapts to (the same episodes, the same pass), and their predictions are scored
and binned like the learner's; without a learner only they are scored. A signal a method
cannot run on (too few support points) has NaN metrics, left out of the bin's means, and
counts in the row's ``n_failed``.

Repeat ``r`` uses episode epoch ``r``, so every evaluation of a split sees the same
episodes. A bin that received no signal reports NaN metrics (never a zero error) and a
count of 0.

Beside the paper's metrics (``METRICS``: per-point means, the normalised MSE of MIA's
tables), every row has the climate tools' metrics (``AREA_METRICS``), on the same regions
(all, support, non-support points): per signal the squared error averaged over channels
is averaged over points weighted by their area (``cos(latitude)`` on lat-lon field stores
with a latitude coordinate, uniform otherwise: the row's ``weighting``,
:mod:`pipelines.data.stores.geometry`), giving ``nmse_area_*`` (divided by the signal's
scale squared, like ``nmse_*``) and ``psnr_area_*``; ``rmse_phys_*`` is the area-weighted
RMSE in the variable's physical units (the row's ``units``): each channel's normalised
error times its normalisation scale, and the square root of the bin's mean of the
per-signal mean squared errors (RMSE over time as WeatherBench 2 defines it).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mia_core.data import ModalityBatch
from mia_core.meta import MetaLearner
from mia_core.meta.metrics import REGIONS, signal_metrics
from pipelines.data.episode_base import SupportBase, subtract_base
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.stores import Store
from pipelines.data.stores.geometry import COS_LAT, UNIFORM, Geometry, store_geometry
from pipelines.data.stores.reader import keep_rows
from pipelines.data.stores.writer import SPLITS
from pipelines.data.streams import store_episodes
from pipelines.reports.area_metrics import AREA_METRICS, AreaWeights
from pipelines.reports.classical_base import Reconstructor

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
        units: physical units of ``rmse_phys_*`` (``""`` when the store does not say).
        weighting: the area weights of ``AREA_METRICS`` (``cos(latitude)`` or uniform).
        method: ``""`` for the learner, else the classical row's name.
        n_failed: draws of the bin the classical method could not run on (NaN metrics,
            left out of the means; always 0 for the learner).
    """

    modality: str
    r_min: float
    r_max: float
    metrics: dict[str, float]
    count: int = 0
    units: str = ""
    weighting: str = UNIFORM
    method: str = ""
    n_failed: int = 0


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
    learner: MetaLearner | None,
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
    classical: Mapping[str, Reconstructor] | None = None,
    base: SupportBase | None = None,
) -> list[EvalRow]:
    """Evaluate ``learner`` on one split of ``store`` per modality and support-ratio bin.

    Args:
        learner: the meta-learner (put in eval mode by the caller); ``None`` scores only
            the ``classical`` rows (on the same episodes a learner would see).
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
        classical: row name -> fitted classical reconstructor (opt-in: training-time
            validation does not pay for it), scored on the learner's support sets.
        base: the learner's ``data.residual_base`` (it adapts to ``y - base`` and
            predicts ``base + INR``; :mod:`pipelines.data.episode_base`), or ``None``.

    Returns:
        One row per (bin, modality), in bin order then modality order, with ``METRICS``
        and ``AREA_METRICS`` (module docstring): the learner's rows first, then each
        classical row's (``method`` set, ``n_failed`` counted).

    Raises:
        ValueError: an unknown protocol, no bins, or neither a learner nor classical rows.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown eval protocol {protocol!r}; known: {list(PROTOCOLS)}")
    if not bins:
        raise ValueError("evaluate needs at least one support-ratio bin")
    classical = dict(classical or {})
    if learner is None and not classical:
        raise ValueError("evaluate needs a learner or classical reconstructors")
    if protocol == "joint":
        passes = [((lo, hi), seed + 7919 * b, b) for b, (lo, hi) in enumerate(bins)]
    else:
        full = (min(lo for lo, _ in bins), max(hi for _, hi in bins))
        passes = [(full, seed, None)]
    keys = (*METRICS, *AREA_METRICS)
    modalities = list(learner.modalities if learner is not None else store.modalities)
    methods = ([""] if learner is not None else []) + list(classical)
    cells = [(x, b, m) for x in methods for b in range(len(bins)) for m in modalities]
    values = {c: {k: [] for k in keys} for c in cells}
    mods = [m for m in modalities if m in store.info]
    geometry = {m: store_geometry(store, m, strict=False) for m in mods}
    area = {m: AreaWeights(store, m, g, spatial_stride, device) for m, g in geometry.items()}
    order = np.flatnonzero(keep_rows(store.split, store.valid, 0, SPLITS[split], time_stride))
    counts = {c: 0 for c in cells}
    failed = {c: 0 for c in cells}
    for ratio_range, pass_seed, fixed_bin in passes:
        spec = EpisodeSpec(
            {m: ratio_range for m in store.modalities},
            pass_seed,
            spatial_stride,
            store.location.display,
        )
        for r in range(repeats):
            done = 0  # signals of the split's order already seen (store_episodes, no shuffle)
            for cpu in store_episodes(
                store, spec, batch_size, split, epoch=r, shuffle=False, time_stride=time_stride
            ):
                episode = {m: mb.to(device) for m, mb in cpu.items()}
                index = order[done : done + next(iter(episode.values())).batch_size]
                done += len(index)
                scored = []
                if learner is not None:
                    scored.append(("", *_learner_scores(learner, episode, index, base, psnr_range)))
                for name, rec in classical.items():
                    got = _classical_scores(rec, cpu, episode, index, psnr_range, modalities)
                    scored.append((name, *got))
                for method, metrics, preds in scored:
                    for m, md in metrics.items():
                        if m in preds and m in area:
                            md = {**md, **area[m].metrics(preds[m], episode[m], index, psnr_range)}
                        n = episode[m].batch_size
                        if fixed_bin is None:
                            members = bin_members(realised_ratio(episode[m]), bins)
                        else:
                            members = torch.zeros(n, len(bins), dtype=torch.bool)
                            members[:, fixed_bin] = True
                        bad = md.get("failed", torch.zeros(n)).detach().cpu() > 0
                        for b in members.any(0).nonzero().flatten().tolist():
                            sel = members[:, b]
                            counts[method, b, m] += int(sel.sum())
                            failed[method, b, m] += int((sel & bad).sum())
                            for k in keys:
                                if k in md:
                                    values[method, b, m][k].append(md[k].detach().cpu()[sel])
    rows = []
    for method in methods:
        for b, (lo, hi) in enumerate(bins):
            for m in modalities:
                row = {}
                for k in keys:
                    parts = values[method, b, m][k]
                    vals = torch.cat(parts) if parts else torch.empty(0)
                    vals = vals[~torch.isnan(vals)]
                    row[k] = float(vals.mean()) if vals.numel() else math.nan
                    if k.startswith("rmse_phys") and vals.numel():  # per-signal MSEs -> RMSE
                        row[k] = math.sqrt(row[k])
                g = geometry.get(m, Geometry(np.ones(1), np.ones(1)))
                c = (method, b, m)
                rows.append(
                    EvalRow(m, lo, hi, row, counts[c], g.units, g.weighting, method, failed[c])
                )
    return rows


def _learner_scores(
    learner: MetaLearner,
    episode: dict[str, ModalityBatch],
    index: np.ndarray,
    base: SupportBase | None,
    psnr_range: float,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
    """The learner's per-signal metrics and predictions (``base + INR`` with a base)."""
    if base is None:
        return learner.evaluate(episode, psnr_range)
    residual, bases = subtract_base(episode, base, index)
    metrics, preds = learner.evaluate(residual, psnr_range)
    return metrics, {m: p + bases[m] if m in bases else p for m, p in preds.items()}


def _classical_scores(
    rec: Reconstructor,
    cpu: dict[str, ModalityBatch],
    episode: dict[str, ModalityBatch],
    index: np.ndarray,
    psnr_range: float,
    modalities: list[str],
) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
    """A classical reconstructor's per-signal metrics and predictions of ``modalities``.

    Signals it could not run on (NaN predictions at valid points) get NaN metrics (the
    area ones too, from the NaN prediction) and ``failed`` 1.
    """
    metrics, preds = {}, {}
    for m, pred in rec.predict(cpu, index).items():
        if m not in modalities:
            continue
        mb = episode[m]
        p = torch.as_tensor(pred, dtype=torch.float32, device=mb.query_y.device)
        bad = ~torch.isfinite(p).all(-1) & (mb.query_mask > 0)
        failed = bad.any(1)
        p = torch.where(torch.isfinite(p), p, torch.zeros_like(p))  # masked points
        p[failed] = math.nan  # every metric of a failed signal is NaN (area ones too)
        md = signal_metrics(p, mb.query_y, mb.query_mask, mb.query_support, mb.scale, psnr_range)
        md["failed"] = failed.float()
        metrics[m], preds[m] = md, p
    return metrics, preds


def mean_metric(rows: list[EvalRow], key: str) -> float:
    """Mean of one metric over all rows, NaN rows (empty bins) left out (model selection)."""
    vals = [r.metrics[key] for r in rows if not math.isnan(r.metrics[key])]
    return sum(vals) / len(vals) if vals else math.nan


def markdown_table(rows: list[EvalRow], key: str = "nmse_all", scale: float = 1.0) -> str:
    """Tables of a metric family: per metric and region, a row per modality, a column per bin.

    A table per region of the family, then the (signal, repeat) draws per cell (``signals``),
    separated by blank lines; an empty bin shows ``nan``. Beside normalised MSE (``nmse``)
    come the area-weighted RMSE in physical units (units beside the modality) and, beside
    PSNR on a ``cos(latitude)``-weighted grid, the area-weighted PSNR (module docstring).

    Args:
        rows: from :func:`evaluate`.
        key: metric family (``nmse``, ``mse``, ``psnr``, ``nmse_area``, ``psnr_area`` or
            ``rmse_phys``) plus a region suffix; the tables show all/support/nonsupport.
        scale: multiply the family's values (MIA prints normalised MSE x 1e2: pass 100).
    """
    family = key.rsplit("_", 1)[0] if key.endswith(REGIONS) else key
    shown = [(family, scale)]
    if family == "nmse" and rows and all("rmse_phys_all" in r.metrics for r in rows):
        shown.append(("rmse_phys", 1.0))
    if family == "psnr" and rows and all(r.weighting == COS_LAT for r in rows):
        shown.append(("psnr_area", 1.0))
    weights = sorted({r.weighting for r in rows})
    blocks = []
    for fam, factor in shown:
        weighted = fam.endswith(("_area", "_phys"))
        note = f" ({weights[0] if len(weights) == 1 else 'area'} weights)" if weighted else ""
        for region in REGIONS:
            title = f"{fam.split('_')[0]} {region}{note}"
            blocks.append(_block(rows, title, f"{fam}_{region}", factor, fam == "rmse_phys"))
    blocks.append(_block(rows, "signals", None))
    return "\n\n".join(blocks)


def console_table(rows: list[EvalRow], key: str = "nmse_all", scale: float = 100.0) -> str:
    """The table a job prints: ``key`` times ``scale``, a row per modality, a column per bin.

    The report files hold every metric and the draws per cell (:func:`markdown_table`).
    """
    return _block(rows, key.replace("_", " "), key, scale, key.startswith("rmse_phys"))


def _block(
    rows: list[EvalRow], title: str, key: str | None, scale: float = 1.0, units: bool = False
) -> str:
    """One table: ``title`` in the corner, a row per (method and) modality, a column per bin.

    ``key=None`` shows the (signal, repeat) draws; ``units`` puts units beside the modality.
    """
    bins = list(dict.fromkeys((r.r_min, r.r_max) for r in rows))
    grid: dict[str, dict[tuple[float, float], EvalRow]] = {}
    for r in rows:  # a classical row is named by its method too
        grid.setdefault(f"{r.method} {r.modality}".strip(), {})[r.r_min, r.r_max] = r
    lines = [f"| {title} | " + " | ".join(f"[{lo:g}, {hi:g}]" for lo, hi in bins) + " |"]
    lines.append("|---|" + "---|" * len(bins))
    for name, by_bin in grid.items():
        unit = next(iter(by_bin.values())).units if units else ""
        vals = [
            "" if r is None else str(r.count) if key is None else f"{r.metrics[key] * scale:.4g}"
            for r in (by_bin.get(b) for b in bins)
        ]
        lines.append(f"| {name}{f' ({unit})' if unit else ''} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_csv(rows: list[EvalRow], path) -> None:
    """One line per (modality, bin): every metric, the draws in the bin, units and weighting.

    ``AREA_METRICS`` a row lacks (rows not made by :func:`evaluate`) are written NaN.
    """
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        keys = (*METRICS, *AREA_METRICS)
        w.writerow(["modality", "r_min", "r_max", *keys, "n_signals", "units", "weighting"])
        for r in rows:
            vals = (r.metrics.get(k, math.nan) for k in keys)
            w.writerow([r.modality, r.r_min, r.r_max, *vals, r.count, r.units, r.weighting])

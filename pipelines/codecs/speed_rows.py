"""The rows of the speed comparison (:mod:`pipelines.codecs.comparison`) at each target.

A fit's curve and steps to each target (:class:`FitCurve`), a baseline's learning-rate
sweep grown until its best rate is interior (:func:`sweep_lrs`), the four rows, speedups
and break-even count at one target (:func:`at_target`), and the results file's ``speed``
entry (:func:`speed_at`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.codecs.fitting import FitResult
from pipelines.codecs.meta_model import EncodeError

LR_STEP = 3.0  # about half a decade
MAX_EXTENSIONS = 6
ROWS = ("encoder_cold", "encoder_warm", "baseline_cold", "baseline_warm")
CURVE_POINTS = 200  # plotted points kept per fit (log-spaced steps)


@dataclasses.dataclass
class FitCurve:
    """One fit of the batch.

    Attributes:
        label: ``encoder cold (...)``, ``adam lr=...`` and so on.
        lr: its learning rate (the encoder's rule: NaN).
        seconds_per_step: wall seconds of one step of the whole batch.
        curve: ``(step, mean PSNR over the time steps)`` at log-spaced tracked steps.
        steps_to: target -> per time step, the first tracked step at or above it (-1:
            never within the fit).
        max_steps: the fit's budget.
        final_psnr: mean PSNR at the last tracked step (-inf: diverged).
    """

    label: str
    lr: float
    seconds_per_step: float
    curve: list[tuple[int, float]]
    steps_to: dict[float, list[int]]
    max_steps: int
    final_psnr: float


@dataclasses.dataclass
class Sweep:
    """A baseline's learning-rate sweep: its fits by rate (the final grid)."""

    name: str
    lrs: list[float]
    fits: list[FitCurve]
    extensions: int
    cap_hit: bool


@dataclasses.dataclass
class Row:
    """One way of fitting (``ROWS``) at one target.

    Attributes:
        name: one of ``ROWS``.
        label: its fit (a baseline: the sweep's best rate at this target).
        lr: that rate (encoder: NaN).
        seconds: median wall seconds per time step to the target (NaN: the median
            time step never gets there).
        steps: median steps to it (NaN likewise).
        reached: share of time steps reaching it within the fit's budget.
    """

    name: str
    label: str
    lr: float
    seconds: float
    steps: float
    reached: float


@dataclasses.dataclass
class TargetResult:
    """The four rows at one PSNR and the speedups (see the module docstring).

    Attributes:
        target_db: the PSNR.
        rows: ``ROWS`` name -> :class:`Row`.
        speedup_cold / speedup_warm: baseline / encoder seconds (NaN: encoder misses).
        lower_bound_cold / lower_bound_warm: the baseline's median missed (``>=``).
        best_lr_interior: ``baseline_cold`` / ``baseline_warm`` -> the best rate is
            strictly inside its sweep's grid.
        break_even_frames: time steps after which meta-pretraining has paid for itself
            on the smaller of the cold and warm gains (``inf``: never; NaN: unknown).
    """

    target_db: float
    rows: dict[str, Row]
    speedup_cold: float
    speedup_warm: float
    lower_bound_cold: bool
    lower_bound_warm: bool
    best_lr_interior: dict[str, bool]
    break_even_frames: float


def curve_of(
    label: str, lr: float, fit: FitResult, targets: list[float], budget: int, sps: float
) -> FitCurve:
    """``fit``'s :class:`FitCurve`: ``budget`` steps, ``sps`` seconds per batch step."""
    steps = np.asarray([k for k, _, _ in fit.trajectory])
    keep = set(np.unique(np.geomspace(1, max(steps.max(), 1), CURVE_POINTS).round()).tolist())
    means = [float(np.nanmean(v)) for _, _, v in fit.trajectory]
    curve = [(int(k), m) for k, m in zip(steps, means, strict=True) if k in keep or k == 0]
    final = means[-1] if means and math.isfinite(means[-1]) else -math.inf
    steps_to = {t: fit.first_reaching(t)[0].tolist() for t in targets}
    return FitCurve(label, lr, sps, curve, steps_to, budget, final)


def _rank(b: FitCurve, t: float) -> tuple[float, float, float]:
    """Smaller is better: most time steps reaching ``t``, then fewest median steps.

    Every Adam rate costs the same per step, so steps rank rates without the timing
    noise; where no time step reaches ``t``, the highest final PSNR ranks them.
    """
    s = np.asarray(b.steps_to[t])
    reached = float((s >= 0).mean())
    if reached == 0:
        return 0.0, math.inf, -b.final_psnr
    return -reached, float(np.median(np.where(s >= 0, s, b.max_steps))), 0.0


def best_fit(fits: list[FitCurve], t: float) -> FitCurve:
    """The best of a sweep's fits at target ``t`` (see :func:`_rank`).

    Rates tied for best (e.g. every rate reaching ``t`` at the warm start, step 0)
    give the middle one of them: a flat optimum is not an edge.
    """
    ranks = [_rank(b, t) for b in fits]
    tied = sorted((b for b, r in zip(fits, ranks, strict=True) if r == min(ranks)), key=_lr)
    return tied[(len(tied) - 1) // 2]


def _lr(b: FitCurve) -> float:
    return b.lr


def sweep_lrs(
    name: str,
    fit_at: Callable[[float], FitCurve],
    lrs: tuple[float, ...],
    targets: list[float],
    max_extensions: int = MAX_EXTENSIONS,
) -> Sweep:
    """Fit every rate of ``lrs``, then extend the grid until each target's best is interior."""
    fits = {float(lr): fit_at(float(lr)) for lr in sorted(set(lrs))}
    added = 0
    while True:
        grid = sorted(fits)
        best = {best_fit([fits[x] for x in grid], t).lr for t in targets}
        want = [grid[-1] * LR_STEP] if grid[-1] in best else []
        want += [grid[0] / LR_STEP] if grid[0] in best else []
        if not want or added >= max_extensions:
            break
        for lr in want[: max_extensions - added]:
            fits[lr], added = fit_at(lr), added + 1
    grid = sorted(fits)
    edge = any(best_fit([fits[x] for x in grid], t).lr in (grid[0], grid[-1]) for t in targets)
    return Sweep(name, grid, [fits[x] for x in grid], added, edge)


def interior(sweep: Sweep, t: float) -> bool:
    """Whether the sweep's best rate at ``t`` lies strictly inside its grid."""
    return sweep.lrs[0] < best_fit(sweep.fits, t).lr < sweep.lrs[-1]


def _steps(fc: FitCurve, t: float, capped: bool) -> np.ndarray:
    """Per time step, steps to ``t`` (>= 1); a miss counts ``max_steps`` or ``inf``."""
    s = np.asarray(fc.steps_to[t], float)
    return np.where(s >= 0, np.maximum(s, 1), fc.max_steps if capped else math.inf)


def _row(name: str, fc: FitCurve, t: float, batch: int) -> Row:
    med = float(np.median(_steps(fc, t, capped=False)))
    if math.isinf(med):
        med = math.nan
    reached = float((np.asarray(fc.steps_to[t]) >= 0).mean())
    return Row(name, fc.label, fc.lr, med * fc.seconds_per_step / batch, med, reached)


def _speedup(enc: Row, base: FitCurve, t: float, batch: int) -> tuple[float, bool]:
    lower = math.isinf(float(np.median(_steps(base, t, capped=False))))
    capped = float(np.median(_steps(base, t, capped=True))) * base.seconds_per_step / batch
    return capped / enc.seconds, lower and not math.isnan(enc.seconds)


def at_target(
    t: float,
    enc_cold: FitCurve,
    enc_warm: FitCurve,
    cold: Sweep,
    warm: Sweep,
    batch: int,
    pretrain: float,
) -> TargetResult:
    """The four rows at ``t``, the speedups and the break-even count."""
    bc, bw = best_fit(cold.fits, t), best_fit(warm.fits, t)
    rows = {
        "encoder_cold": _row("encoder_cold", enc_cold, t, batch),
        "encoder_warm": _row("encoder_warm", enc_warm, t, batch),
        "baseline_cold": _row("baseline_cold", bc, t, batch),
        "baseline_warm": _row("baseline_warm", bw, t, batch),
    }
    s_cold, lb_cold = _speedup(rows["encoder_cold"], bc, t, batch)
    s_warm, lb_warm = _speedup(rows["encoder_warm"], bw, t, batch)
    gains = [
        rows[e].seconds * (s - 1.0)
        for e, s in (("encoder_cold", s_cold), ("encoder_warm", s_warm))
        if not math.isnan(s)
    ]
    if math.isnan(pretrain) or not gains:
        even = math.nan
    else:
        gain = min(gains)
        even = math.ceil(pretrain / gain) if gain > 0 else math.inf
    return TargetResult(
        t, rows, s_cold, s_warm, lb_cold, lb_warm,
        {"baseline_cold": interior(cold, t), "baseline_warm": interior(warm, t)}, float(even),
    )  # fmt: skip


def speed_at(comparison: Any, psnr_db: float) -> dict[str, Any]:
    """The results file's ``speed`` entry at ``psnr_db`` (a compared target).

    ``comparison``: a :class:`~pipelines.codecs.comparison.Comparison` or its
    ``dataclasses.asdict`` (as in ``report.json``).

    ``*_s``: median wall seconds per time step to the target (NaN: not reached, see
    ``reached``); ``best_lr_interior``: both baseline sweeps bracket their best rate.

    Raises:
        EncodeError: ``psnr_db`` is not one of the comparison's targets.
    """
    c = comparison if isinstance(comparison, dict) else dataclasses.asdict(comparison)
    by_db = {float(t["target_db"]): t for t in c["targets"]}
    if float(psnr_db) not in by_db:
        raise EncodeError(
            f"speed: {psnr_db:g} dB is not a compared target {sorted(by_db)}; add it to --targets"
        )
    t = by_db[float(psnr_db)]
    rows = t["rows"]
    return {
        "psnr_db": float(psnr_db),
        **{f"{name}_s": rows[name]["seconds"] for name in ROWS},
        "best_lr_interior": bool(all(t["best_lr_interior"].values())),
        "speedup_cold": t["speedup_cold"],
        "speedup_warm": t["speedup_warm"],
        "lower_bound": {"cold": t["lower_bound_cold"], "warm": t["lower_bound_warm"]},
        "reached": {name: rows[name]["reached"] for name in ROWS},
        "baseline_lr": {k: rows[k]["lr"] for k in ("baseline_cold", "baseline_warm")},
    }


__all__ = [
    "LR_STEP",
    "MAX_EXTENSIONS",
    "ROWS",
    "FitCurve",
    "Row",
    "Sweep",
    "TargetResult",
    "at_target",
    "best_fit",
    "curve_of",
    "interior",
    "speed_at",
    "sweep_lrs",
]

"""The encoder against fitting from scratch, time-to-equal-PSNR, on held-out time steps.

Both sides fit the *same* time steps in the same process, vectorised the same way, with
the encoder's point sampling and PSNR at full resolution:

* the **encoder**: the code store's meta-model and settings (rule, lr, ``K``), started
  from the meta-learned initialisation, or, for an encoder warm-started in time
  (``chain_length``), from the stored code of the previous time step wherever the
  encoder itself started from it;
* the **baseline**: the same architecture from its random initialisation, every weight
  trained with Adam, one fit per learning rate of a sweep (default 3e-4, 1e-3, 3e-3),
  until every time step reaches the highest target or ``max_steps``.

Each fit records every time step's PSNR along the way, so the steps each needed to reach
30 / 35 / 40 dB (any ``targets``) are read off one run. Time is steps x the fit's
seconds per step; the encoder's fit is repeated between the baselines' and its median
step time is used, so a change in machine load hits both sides alike. Per target, the
baseline is the learning rate that reaches it on the most time steps, fastest (median
over time steps) among equals, and the speedups are
medians over the time steps the encoder reaches the target in ``K`` steps. A baseline
that never gets there within ``max_steps`` counts ``max_steps`` (the speedup is then a
lower bound, flagged).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from mia_core.builders import build_learner
from pipelines.codecs.codestore import read_codes
from pipelines.codecs.fitting import FitResult, fit_batch, fit_encoder
from pipelines.codecs.meta_model import EncodeError, MetaModel, batch_tensors, codes_to_params
from pipelines.data.stores.reader import FieldStore

DEFAULT_LRS = (3e-4, 1e-3, 3e-3)
DEFAULT_TARGETS = (30.0, 35.0, 40.0)


@dataclasses.dataclass
class FitCurve:
    """One fit of the held-out batch.

    Attributes:
        label: ``encoder (...)`` or ``adam lr=...``.
        lr: its learning rate (the encoder's rule: NaN).
        seconds_per_step: wall seconds of one step of the whole batch (median of runs).
        curve: ``(step, mean PSNR over the time steps)`` at every tracked step.
        steps_to: target -> per time step, the first tracked step at or above it (-1:
            never within the fit).
        max_steps: the fit's length.
    """

    label: str
    lr: float
    seconds_per_step: float
    curve: list[tuple[int, float]]
    steps_to: dict[float, list[int]]
    max_steps: int


@dataclasses.dataclass
class TargetResult:
    """Encoder vs the best baseline at one PSNR.

    Attributes:
        target_db: the PSNR.
        encoder_reached: fraction of time steps the encoder reaches it within ``K``.
        encoder_steps: median encoder steps to it (over those time steps).
        baseline: label of the fastest baseline learning rate.
        baseline_reached: fraction of time steps that baseline reaches it.
        baseline_steps: its median steps to it (unreached count ``max_steps``).
        speedup_time / speedup_steps: medians over the time steps the encoder reaches.
        lower_bound: the baseline missed some of those time steps (speedups are ``>=``).
        break_even_frames: time steps after which meta-pretraining has paid for itself
            (``inf``: never; NaN: pretraining time unknown or target not reached).
    """

    target_db: float
    encoder_reached: float
    encoder_steps: float
    baseline: str
    baseline_reached: float
    baseline_steps: float
    speedup_time: float
    speedup_steps: float
    lower_bound: bool
    break_even_frames: float


@dataclasses.dataclass
class Comparison:
    """Everything :func:`compare_fits` measured (``dataclasses.asdict`` goes to JSON)."""

    frames: list[int]
    held_out: bool
    batch: int
    points_per_step: int
    pretrain_seconds: float
    encoder: FitCurve
    baselines: list[FitCurve]
    targets: list[TargetResult]


def select_frames(group: Any, store: FieldStore, n: int) -> tuple[list[int], bool]:
    """``n`` evenly spaced encoded time steps with data, held out from meta-training if any.

    Held out means split 1 or 2 (validation / test) of the field store; a store without
    such steps gives encoded training steps and ``False``.

    Raises:
        EncodeError: no encoded time step with data.
    """
    done = np.asarray(group["done"][...]).astype(bool)
    scored = np.isfinite(np.asarray(group["psnr"][...])).any(1)
    ok = done & scored & np.asarray(store.valid, bool)[: done.size]
    held = ok & (np.asarray(store.split)[: done.size] > 0)
    pool = np.flatnonzero(held if held.any() else ok)
    if pool.size == 0:
        raise EncodeError("the code store has no encoded time step with data to compare on")
    pick = pool[np.unique(np.linspace(0, pool.size - 1, min(n, pool.size)).round().astype(int))]
    return pick.tolist(), bool(held.any())


def warm_init(
    meta: MetaModel, group: Any, attrs: dict[str, Any], frames: list[int]
) -> dict[str, torch.Tensor] | None:
    """The encoder's start for ``frames``: the meta-init, or the previous step's code.

    A time step at chain position ``> 0`` (its unit is a code chunk, chains of
    ``chain_length`` from the chunk's start) starts from the stored (dequantised) code of
    the step before it, as the encoder did; ``None`` when nothing is warm-started.
    """
    length, chunk = int(attrs["encoder"].get("chain_length", 0)), int(attrs["chunk"])
    done = np.asarray(group["done"][...]).astype(bool)
    warm = [
        j for j, f in enumerate(frames)
        if length > 0 and (f % chunk) % length > 0 and done[f - 1]
    ]  # fmt: skip
    if not warm:
        return None
    init = {k: v.clone() for k, v in meta.learner.initial_params(len(frames)).items()}
    prev = torch.from_numpy(read_codes(group, np.asarray([frames[j] - 1 for j in warm])))
    for k, v in codes_to_params(meta.learner, prev).items():
        init[k][warm] = v.to(init[k].dtype)
    return init


def _steps_to(fit: FitResult, targets: list[float]) -> dict[float, list[int]]:
    return {t: fit.first_reaching(t)[0].tolist() for t in targets}


def _curve(fit: FitResult) -> list[tuple[int, float]]:
    return [(k, float(np.nanmean(v))) for k, _, v in fit.trajectory]


def compare_fits(
    meta: MetaModel,
    store: FieldStore,
    group: Any,
    frames: list[int],
    held_out: bool,
    lrs: tuple[float, ...] = DEFAULT_LRS,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    max_steps: int = 2000,
    eval_every: int = 10,
    seed: int = 0,
) -> Comparison:
    """Fit ``frames`` with the encoder and with every baseline lr; see the module docstring.

    Args:
        meta: the code store's meta-model.
        store: the field store the codes were made from.
        group: the code store (its ``mia_codes`` attribute: encoder settings,
            pretraining time; its codes: warm starts).
        frames: time steps to fit (one vectorised batch).
        held_out: whether they are held out from meta-training (reported).
        lrs: baseline Adam learning rates.
        targets: PSNRs (dB).
        max_steps: baseline step budget.
        eval_every: baseline PSNR tracking period (the encoder is tracked every step).
        seed: point sampling and baseline initialisation seed.
    """
    attrs = dict(group.attrs["mia_codes"])
    enc = attrs["encoder"]
    start = warm_init(meta, group, attrs, frames)
    points, data_range = int(enc["points_per_step"]), float(meta.cfg.data.psnr_range)
    rows = {m: [] for m in store.modalities}
    for i in frames:
        r = store.read(i, i + 1)
        for m in store.modalities:
            rows[m].append(r[m][0])
    values, valid = batch_tensors({m: np.stack(v) for m, v in rows.items()})
    coords = {m: torch.from_numpy(store.info[m].coords) for m in store.modalities}
    tlist = sorted(float(t) for t in targets)
    common = dict(points_per_step=points, seed=seed, data_range=data_range)

    def run_encoder() -> FitResult:
        return fit_encoder(
            meta.learner, coords, values, valid, enc, seed=seed, init=start,
            data_range=data_range, track_every=1,
        )  # fmt: skip

    torch.manual_seed(seed)
    scratch = build_learner(
        meta.cfg.model, dataclasses.replace(meta.cfg.method, name="maml"), meta.dims
    ).eval()
    for p in scratch.parameters():
        p.requires_grad_(False)
    enc_fits, base_fits = [run_encoder()], []
    top = torch.full((len(frames),), tlist[-1])
    for lr in lrs:
        base_fits.append(
            fit_batch(
                scratch,
                coords,
                values,
                valid,
                max_steps,
                lr,
                "adam",
                target_psnr=top,
                eval_every=eval_every,
                track_every=eval_every,
                **common,
            )  # fmt: skip
        )
        enc_fits.append(run_encoder())
    enc_sps = float(np.median([f.seconds / max(f.steps, 1) for f in enc_fits]))
    chained = f", warm start in chains of {enc['chain_length']}" if start is not None else ""
    adam = int(enc.get("adam_steps", 0))
    more = f" + {adam} Adam steps at {float(enc['adam_lr']):g}" if adam else ""
    label = f"encoder ({enc['optimizer']}, K={enc['steps']}{more}{chained})"
    e = enc_fits[0]
    encoder = FitCurve(label, math.nan, enc_sps, _curve(e), _steps_to(e, tlist), e.steps)
    baselines = [
        FitCurve(
            f"adam lr={lr:g}",
            lr,
            f.seconds / max(f.steps, 1),
            _curve(f),
            _steps_to(f, tlist),
            max_steps,
        )  # fmt: skip
        for lr, f in zip(lrs, base_fits, strict=True)
    ]
    pretrain = attrs.get("meta_pretrain_seconds")
    pretrain = math.nan if pretrain is None else float(pretrain)
    results = [_at_target(t, encoder, baselines, len(frames), pretrain) for t in tlist]
    return Comparison(
        list(map(int, frames)), held_out, len(frames), points, pretrain, encoder, baselines,
        results,
    )  # fmt: skip


def _at_target(
    t: float, encoder: FitCurve, baselines: list[FitCurve], batch: int, pretrain: float
) -> TargetResult:
    """Pick the fastest baseline at ``t`` and compute the speedups over the encoder's hits."""
    enc = np.asarray(encoder.steps_to[t])
    hit = enc >= 0

    def steps_of(b: FitCurve) -> np.ndarray:
        s = np.asarray(b.steps_to[t], float)
        return np.where(s >= 0, s, b.max_steps)

    def rank(b: FitCurve) -> tuple[float, float]:
        # Reaching the target beats a capped count; then the faster median time.
        reached = float((np.asarray(b.steps_to[t]) >= 0).mean())
        return -reached, float(np.median(steps_of(b))) * b.seconds_per_step

    best = min(baselines, key=rank)
    base = steps_of(best)
    if not hit.any():
        return TargetResult(
            t, 0.0, math.nan, best.label, float((np.asarray(best.steps_to[t]) >= 0).mean()),
            float(np.median(base)), math.nan, math.nan, False, math.nan,
        )  # fmt: skip
    # The meta-learned start may already be there (step 0): count one step, not zero.
    e = np.maximum(enc[hit], 1).astype(float)
    b = base[hit]
    ratio_time = b * best.seconds_per_step / (e * encoder.seconds_per_step)
    per_frame_enc = float(np.median(e)) * encoder.seconds_per_step / batch
    per_frame_base = float(np.median(b)) * best.seconds_per_step / batch
    gain = per_frame_base - per_frame_enc
    if math.isnan(pretrain):
        even = math.nan
    else:
        even = math.ceil(pretrain / gain) if gain > 0 else math.inf
    return TargetResult(
        t,
        float(hit.mean()),
        float(np.median(e)),
        best.label,
        float((np.asarray(best.steps_to[t]) >= 0).mean()),
        float(np.median(b)),
        float(np.median(ratio_time)),
        float(np.median(b / e)),
        bool((np.asarray(best.steps_to[t])[hit] < 0).any()),
        float(even),
    )


__all__ = [
    "DEFAULT_LRS",
    "DEFAULT_TARGETS",
    "Comparison",
    "FitCurve",
    "TargetResult",
    "compare_fits",
    "select_frames",
]

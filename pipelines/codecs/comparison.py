"""The encoder against fitting from scratch, time-to-equal-PSNR, on test time steps.

Only **test-split** time steps (split 2 of the field store) are scored, never the
validation steps (split 1) that chose the checkpoint; each has its previous time step
encoded, so every time step has four ways to be fitted, all in one vectorised batch in
one process, with the encoder's point sampling:

* **encoder cold**: the code store's meta-model and settings (rule, lr, ``K``, Adam
  continuation) from the meta-learned initialisation;
* **encoder warm**: the same from the previous time step's stored, dequantised code
  (``read_codes`` of step ``t - 1``). Time step 0 has no previous step, and a step whose
  previous one is not encoded has no stored code to start from: such a step starts from
  the meta-learned initialisation, as cold (:func:`select_frames` picks none of them);
* **baseline cold**: the same architecture from its random initialisation, every weight
  trained with Adam, one fit per learning rate of a sweep, up to ``max_steps``;
* **baseline warm**: Adam fine-tuning from the baseline's own fit of ``t - 1``: that step
  fitted cold at the cold sweep's best rate for the highest target, until every step
  reaches it (or ``max_steps``), then ``t`` from those weights, with a sweep of its own.

Each fit tracks every time step's full-resolution PSNR at every step (``eval_every``;
tracking is outside the timed seconds), so the steps each needed to reach 30 / 35 / 40 dB
(any ``targets``) are read off one run. Per target, a sweep's best rate reaches it on the
most time steps, then in the fewest steps (median; ties: the middle rate); where no rate
reaches it, the highest final PSNR (:func:`~pipelines.codecs.speed_rows.best_fit`).
A sweep starts from ``lrs`` and grows until every target's best rate is interior: best
at the largest rate adds ``lr * 3``, at the smallest ``lr / 3``, up to
``max_extensions`` added rates per sweep; ``best_lr_interior`` says, per target and
sweep, whether the optimum is bracketed (``False`` also where the cap stopped it).

Seconds per time step are steps x the fit's seconds per step / batch (step 0 counts one
step; the batch is fitted vectorised, so this is the amortised cost); the encoder is
refitted after every baseline fit and its median step time is used, so machine load hits
both sides alike. A row's seconds are the median over the time steps, a miss counting as
never: NaN when the median time step misses (``reached`` is the share that got there).
Speedups are baseline / encoder medians, cold/cold and warm/warm, a baseline miss
counting its budget (the speedup is then a lower bound, flagged).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mia_core.builders import build_learner
from mia_core.meta.codes import codes_to_params
from pipelines.codecs.codestore import read_codes
from pipelines.codecs.fitting import FitResult, fit_batch, fit_encoder
from pipelines.codecs.meta_model import EncodeError, MetaModel, batch_tensors
from pipelines.codecs.speed_rows import (
    MAX_EXTENSIONS,
    ROWS,
    FitCurve,
    Row,
    Sweep,
    TargetResult,
    at_target,
    best_fit,
    curve_of,
    speed_at,
    sweep_lrs,
)
from pipelines.data.stores.reader import FieldStore, read_steps

DEFAULT_LRS = (3e-4, 1e-3, 3e-3)
DEFAULT_TARGETS = (30.0, 35.0, 40.0)


@dataclasses.dataclass
class Comparison:
    """Everything :func:`compare_fits` measured (``dataclasses.asdict`` goes to JSON)."""

    frames: list[int]
    split: str
    batch: int
    points_per_step: int
    eval_every: int
    pretrain_seconds: float
    warm_from_lr: float
    encoder_cold: FitCurve
    encoder_warm: FitCurve
    baseline_cold: Sweep
    baseline_warm: Sweep
    targets: list[TargetResult]


def select_frames(group: Any, store: FieldStore, n: int) -> list[int]:
    """``n`` evenly spaced test-split time steps, each encoded after an encoded step.

    Raises:
        EncodeError: the field store has no test split, or no test time step is
            encoded with data after an encoded time step with data.
    """
    done = np.asarray(group["done"][...]).astype(bool)
    split = np.asarray(store.split)[: done.size]
    if not (split == 2).any():
        raise EncodeError(
            "the field store has no test time steps (split 2) to score the speed comparison "
            "on; rebuild it with --test-fraction > 0"
        )
    scored = np.isfinite(np.asarray(group["psnr"][...])).any(1)
    ok = done & scored & np.asarray(store.valid, bool)[: done.size]
    after = np.zeros_like(ok)
    after[1:] = ok[:-1]
    pool = np.flatnonzero((split == 2) & ok & after)
    if pool.size == 0:
        raise EncodeError(
            "no test time step (split 2) of the code store is encoded after an encoded time "
            "step with data; encode the test steps and the step before each"
        )
    pick = pool[np.unique(np.linspace(0, pool.size - 1, min(n, pool.size)).round().astype(int))]
    return pick.tolist()


def warm_init(meta: MetaModel, group: Any, frames: list[int]) -> dict[str, torch.Tensor]:
    """The encoder-warm start of ``frames``: the stored code of each previous time step.

    A time step with no encoded previous step (time step 0, or ``t - 1`` not done)
    starts from the meta-learned initialisation.
    """
    done = np.asarray(group["done"][...]).astype(bool)
    init = {k: v.clone() for k, v in meta.learner.initial_params(len(frames)).items()}
    warm = [j for j, f in enumerate(frames) if f > 0 and done[f - 1]]
    if warm:
        prev = torch.from_numpy(read_codes(group, np.asarray([frames[j] - 1 for j in warm])))
        for k, v in codes_to_params(meta.learner, prev).items():
            init[k][warm] = v.to(init[k].dtype)
    return init


def _batch(store: FieldStore, frames: list[int]) -> tuple[dict, dict]:
    return batch_tensors(read_steps(store, frames))


def compare_fits(
    meta: MetaModel,
    store: FieldStore,
    group: Any,
    frames: list[int],
    lrs: tuple[float, ...] = DEFAULT_LRS,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    max_steps: int = 2000,
    eval_every: int = 1,
    seed: int = 0,
    max_extensions: int = MAX_EXTENSIONS,
) -> Comparison:
    """Fit ``frames`` the four ways; see the module docstring.

    Args:
        meta: the code store's meta-model.
        store: the field store the codes were made from.
        group: the code store (its ``mia_codes`` attribute: encoder settings,
            pretraining time; its codes: the encoder's warm starts).
        frames: test time steps to fit (one vectorised batch), from :func:`select_frames`.
        lrs: the baseline sweeps' starting Adam learning rates.
        targets: PSNRs (dB).
        max_steps: baseline step budget (also of the baseline's fit of ``t - 1``).
        eval_every: baseline PSNR tracking period (1: every step, like the encoder).
        seed: point sampling and baseline initialisation seed.
        max_extensions: rates each sweep may add to ``lrs``.
    """
    attrs = dict(group.attrs["mia_codes"])
    enc = attrs["encoder"]
    starts = {"cold": None, "warm": warm_init(meta, group, frames)}
    points, data_range = int(enc["points_per_step"]), float(meta.cfg.data.psnr_range)
    values, valid = _batch(store, frames)
    coords = {m: torch.from_numpy(store.info[m].coords) for m in store.modalities}
    tlist = sorted(float(t) for t in targets)
    top = torch.full((len(frames),), tlist[-1])
    common = dict(points_per_step=points, seed=seed, data_range=data_range)
    enc_fits: dict[str, list[FitResult]] = {"cold": [], "warm": []}

    def run_encoder() -> None:
        side = "cold" if len(enc_fits["cold"]) <= len(enc_fits["warm"]) else "warm"
        enc_fits[side].append(
            fit_encoder(
                meta.learner,
                coords,
                values,
                valid,
                enc,
                seed=seed,
                init=starts[side],
                data_range=data_range,
                track_every=1,
            )  # fmt: skip
        )

    torch.manual_seed(seed)
    scratch = build_learner(
        meta.cfg.model, dataclasses.replace(meta.cfg.method, name="maml"), meta.dims
    ).eval()
    for p in scratch.parameters():
        p.requires_grad_(False)

    def adam(lr: float, vals: dict, ok: dict, init: dict | None = None) -> FitResult:
        return fit_batch(
            scratch, coords, vals, ok, max_steps, lr, "adam", init=init, target_psnr=top,
            eval_every=eval_every, track_every=eval_every, **common,
        )  # fmt: skip

    def fitter(side: str, init: dict | None) -> Callable[[float], FitCurve]:
        def fit_at(lr: float) -> FitCurve:
            f = adam(lr, values, valid, init)
            run_encoder()  # interleaved: the same machine load on both sides
            sps = f.seconds / max(f.steps, 1)
            return curve_of(f"adam {side} lr={lr:.3g}", lr, f, tlist, max_steps, sps)

        return fit_at

    run_encoder()
    run_encoder()
    cold = sweep_lrs("baseline_cold", fitter("cold", None), lrs, tlist, max_extensions)
    warm_lr = best_fit(cold.fits, tlist[-1]).lr
    prev_values, prev_valid = _batch(store, [f - 1 for f in frames])
    prev = adam(warm_lr, prev_values, prev_valid).params
    warm = sweep_lrs("baseline_warm", fitter("warm", prev), lrs, tlist, max_extensions)
    every = [f for fs in enc_fits.values() for f in fs]
    enc_sps = float(np.median([f.seconds / max(f.steps, 1) for f in every]))
    adam_k = int(enc.get("adam_steps", 0))
    more = f" + {adam_k} Adam steps at {float(enc['adam_lr']):g}" if adam_k else ""
    how = f"{enc['optimizer']}, K={enc['steps']}{more}"
    curves = {
        side: curve_of(f"encoder {side} ({how})", math.nan, fs[0], tlist, fs[0].steps, enc_sps)
        for side, fs in enc_fits.items()
    }
    pretrain = attrs.get("meta_pretrain_seconds")
    pretrain = math.nan if pretrain is None else float(pretrain)
    results = [
        at_target(t, curves["cold"], curves["warm"], cold, warm, len(frames), pretrain)
        for t in tlist
    ]
    return Comparison(
        list(map(int, frames)), "test", len(frames), points, eval_every, pretrain, warm_lr,
        curves["cold"], curves["warm"], cold, warm, results,
    )  # fmt: skip


__all__ = [
    "DEFAULT_LRS",
    "DEFAULT_TARGETS",
    "MAX_EXTENSIONS",
    "ROWS",
    "Comparison",
    "FitCurve",
    "Row",
    "Sweep",
    "TargetResult",
    "best_fit",
    "compare_fits",
    "select_frames",
    "speed_at",
    "sweep_lrs",
    "warm_init",
]

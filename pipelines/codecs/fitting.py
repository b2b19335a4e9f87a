"""Adapt a batch of fields in ``K`` vectorised steps: the encoder's and the baseline's fit.

Every time step of the batch has its own copy of the adapted tensors (a leading batch
dimension) and each step is one ``autograd.grad`` for the whole batch. The same routine
runs the encoder (from the meta-learned initialisation, with the meta-trained rule) and
the from-scratch baseline (from a random initialisation, with Adam); with ``track_every``
it records every signal's PSNR at full resolution along the way (free when every step
uses every point), so a report can read the steps and seconds each signal needed to
reach any PSNR.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mia_core.adapt import SGD, Adam, UpdateRule, with_support
from mia_core.meta.learner import MetaLearner
from mia_core.meta.metrics import masked_mse, psnr
from mia_core.runtime import synchronize
from pipelines.codecs.meta_model import EncodeError, field_metrics

OPTIMIZERS = ("adam", "sgd", "rule")


@dataclass
class FitResult:
    """Outcome of :func:`fit_batch`.

    Attributes:
        params: adapted tensors ``(B, ...)`` (detached).
        steps: gradient steps taken.
        seconds: wall time of the steps (evaluations excluded).
        steps_to_target: per signal, the first evaluated step reaching its target
            (``-1`` when never reached); empty without targets.
        seconds_to_target: per signal, the step time spent until then.
        history: ``(step, mean psnr)`` at every evaluation.
        trajectory: ``(step, seconds so far, per-signal mean-over-variables PSNR)`` at
            every evaluation (with ``target_psnr`` or ``track_every``); step 0 is the
            starting point.
    """

    params: dict[str, Tensor]
    steps: int
    seconds: float
    steps_to_target: list[int] = field(default_factory=list)
    seconds_to_target: list[float] = field(default_factory=list)
    history: list[tuple[int, float]] = field(default_factory=list)
    trajectory: list[tuple[int, float, list[float]]] = field(default_factory=list)

    def first_reaching(self, psnr_db: float) -> tuple[np.ndarray, np.ndarray]:
        """Per signal, the first tracked step and seconds at ``>= psnr_db`` (-1 / NaN: never)."""
        n = len(self.trajectory[0][2]) if self.trajectory else 0
        steps, secs = np.full(n, -1), np.full(n, math.nan)
        for k, s, values in self.trajectory:
            hit = (np.asarray(values) >= psnr_db) & (steps < 0)
            steps[hit], secs[hit] = k, s
        return steps, secs


def fit_rule(
    learner: MetaLearner, optimizer: str, lr: float, params: Mapping[str, Tensor]
) -> UpdateRule:
    """The rule :func:`fit_batch` steps ``params`` (key -> ``(B, *shape)``) with.

    ``adam`` keeps one Adam state per signal, ``sgd`` uses ``lr`` too, ``rule`` is the
    update rule the learner was meta-trained with (its own rates; ``lr`` unused).

    Raises:
        EncodeError: ``optimizer`` is not one of ``OPTIMIZERS``.
    """
    if optimizer not in OPTIMIZERS:
        raise EncodeError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "rule":
        return learner.rule
    return (Adam if optimizer == "adam" else SGD).for_params(dict(params), lr=lr)


def fit_batch(
    learner: MetaLearner,
    coords: Mapping[str, Tensor],
    values: Mapping[str, Tensor],
    valid: Mapping[str, Tensor],
    steps: int,
    lr: float,
    optimizer: str = "adam",
    points_per_step: int = 0,
    seed: int = 0,
    init: Mapping[str, Tensor] | None = None,
    target_psnr: Tensor | None = None,
    eval_every: int = 10,
    data_range: float = 1.0,
    track_every: int = 0,
) -> FitResult:
    """Adapt a batch of ``B`` fields from the learner's initialisation, vectorised.

    Args:
        learner: the (meta-)model; its own weights are not changed.
        coords: variable -> ``(P, d)`` coordinates shared by the batch.
        values: variable -> ``(B, P, C)`` normalised values (NaN replaced by 0).
        valid: variable -> ``(B, P)`` float, 1 where the value counts.
        steps: gradient steps ``K`` (an upper bound with ``target_psnr``); a learner with
            closed-form heads (adapt mode ``head``) then solves its heads on every point.
        lr: learning rate.
        optimizer: ``adam`` (per-element, batched), ``sgd``, or ``rule`` (the update
            rule the model was meta-trained with, e.g. learned MetaSGD rates).
        points_per_step: points sampled per step (shared by the batch); 0 uses all.
        seed: seed of the point sampling.
        init: starting tensors ``(B, ...)`` instead of the meta-learned ones.
        target_psnr: ``(B,)`` mean-over-variables PSNR at which a signal counts as fitted;
            the fit stops once every signal reached it (checked every ``eval_every``).
        eval_every: evaluation period for ``target_psnr``.
        data_range: PSNR peak-to-peak range.
        track_every: record the trajectory every this many steps (and at step 0); 0
            records it only at the ``target_psnr`` checks.

    Tracking costs no extra forward pass when every step uses every point: step
    ``k``'s loss is then the full-resolution MSE of step ``k - 1``'s weights (one
    evaluation after the last step). With sampled points each tracked step is one
    full-resolution no-grad pass. Either way it is outside the timed seconds; a fit
    stopped by its target has taken the step after the one that reached it.
    """
    bsz = next(iter(values.values())).shape[0]
    start = init if init is not None else learner.initial_params(bsz)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    keys = list(params)
    rule = fit_rule(learner, optimizer, lr, params)
    rule_state = with_support(
        rule.init_state(params), {m: valid[m].reshape(bsz, -1).sum(1) for m in learner.modalities}
    )
    device = next(iter(values.values())).device
    gen = torch.Generator().manual_seed(seed)
    reached = torch.full((bsz,), -1, dtype=torch.long)
    reached_s = torch.full((bsz,), math.nan)
    out = FitResult({}, 0, 0.0)
    period = track_every or eval_every
    # Every point in every step's loss: that loss is the full-resolution MSE of the
    # weights it is taken at, so tracking reads it instead of a second forward pass.
    free = all(not 0 < points_per_step < coords[m].shape[0] for m in learner.modalities)
    empty = {m: ~valid[m].reshape(bsz, -1).bool().any(1) for m in learner.modalities}

    def due(k: int) -> bool:
        if k == 0:
            return bool(track_every)
        return bool(
            (track_every and (k % track_every == 0 or k == steps))
            or (target_psnr is not None and (k % period == 0 or k == steps))
        )

    def record(k: int, seconds: float, p_db: Tensor) -> bool:
        """Track step ``k``; True once every signal reached its target."""
        mean_db = p_db.nanmean(1).cpu()
        out.history.append((k, float(mean_db.nanmean())))
        out.trajectory.append((k, seconds, mean_db.tolist()))
        if target_psnr is None or k == 0:
            return False
        hit = (mean_db >= target_psnr) & (reached < 0)
        reached[hit], reached_s[hit] = k, seconds
        return bool((reached >= 0).all())

    def evaluate(k: int, seconds: float) -> bool:
        _, p_db = field_metrics(learner, coords, values, valid, params, data_range)
        return record(k, seconds, p_db)

    seconds, k, done = 0.0, 0, False
    if due(0) and not (free and steps > 0):
        evaluate(0, 0.0)
    for k in range(1, steps + 1):
        t0 = time.perf_counter()
        loss, errs = 0.0, []
        for m in learner.modalities:
            x, y, mask = coords[m], values[m], valid[m]
            if 0 < points_per_step < x.shape[0]:
                idx = torch.randint(0, x.shape[0], (points_per_step,), generator=gen)
                idx = idx.to(x.device)
                x, y, mask = x[idx], y[:, idx], mask[:, idx]
            err = masked_mse(learner.predict(m, x[None], params), y, mask)
            if free:
                errs.append(err.detach().masked_fill(empty[m], math.nan))
            loss = loss + err.sum()
        # A tensor the prediction does not use (a from-scratch Functa's unused latent
        # in weights mode) gets a zero gradient.
        grads = torch.autograd.grad(loss, [params[key] for key in keys], allow_unused=True)
        with torch.no_grad():
            g = {
                key: torch.zeros_like(params[key]) if gr is None else gr
                for key, gr in zip(keys, grads, strict=True)
            }
            new, rule_state, _ = rule(params, g, rule_state, k - 1)
        params = {key: v.detach().requires_grad_(True) for key, v in new.items()}
        synchronize(device)  # the step's kernels, not their launch, are timed
        before, seconds = seconds, seconds + time.perf_counter() - t0
        if free and due(k - 1):  # this step's loss: the weights of step k - 1
            done = record(k - 1, before, psnr(torch.stack(errs, 1), data_range))
        elif not free and due(k):
            done = evaluate(k, seconds)
        if done:
            break
    if free and steps > 0 and not done and due(k):
        evaluate(k, seconds)  # the last step's weights (no further loss reads them)
    if learner.adapt_mode == "head":  # the closed-form heads, on every valid point
        t0 = time.perf_counter()
        with torch.no_grad():
            sets = {m: (coords[m][None], values[m], valid[m]) for m in learner.modalities}
            params = learner.solve_heads(sets, params)
        synchronize(device)
        seconds += time.perf_counter() - t0
    out.params = {key: v.detach() for key, v in params.items()}
    out.steps, out.seconds = k, seconds
    if target_psnr is not None:
        out.steps_to_target, out.seconds_to_target = reached.tolist(), reached_s.tolist()
    return out


def fit_encoder(
    learner: MetaLearner,
    coords: Mapping[str, Tensor],
    values: Mapping[str, Tensor],
    valid: Mapping[str, Tensor],
    enc: Mapping[str, Any],
    seed: int = 0,
    init: Mapping[str, Tensor] | None = None,
    data_range: float = 1.0,
    track_every: int = 0,
) -> FitResult:
    """The encoder's fit of a batch: the encoding job's and the report's, alike.

    ``enc`` holds the encoder settings as a code store records them (``steps``, ``lr``,
    ``optimizer``, ``points_per_step``, and ``adam_steps`` / ``adam_lr``, absent in code
    stores written before the Adam continuation): ``K`` steps of the optimizer, then
    ``adam_steps`` Adam steps from where they ended. The result counts both phases;
    its trajectory runs on across them (steps and seconds continue).
    """
    common = dict(points_per_step=int(enc["points_per_step"]), data_range=data_range)
    fit = fit_batch(
        learner, coords, values, valid, int(enc["steps"]), float(enc["lr"]), enc["optimizer"],
        seed=seed, init=init, track_every=track_every, **common,
    )  # fmt: skip
    extra = int(enc.get("adam_steps", 0))
    if extra <= 0:
        return fit
    more = fit_batch(
        learner, coords, values, valid, extra, float(enc["adam_lr"]), "adam",
        seed=seed + 1, init=fit.params, track_every=track_every, **common,
    )  # fmt: skip
    shift = [(k + fit.steps, s + fit.seconds, v) for k, s, v in more.trajectory if k > 0]
    return FitResult(
        more.params,
        fit.steps + more.steps,
        fit.seconds + more.seconds,
        history=fit.history + [(k + fit.steps, v) for k, v in more.history if k > 0],
        trajectory=fit.trajectory + shift,
    )


__all__ = ["OPTIMIZERS", "FitResult", "fit_batch", "fit_encoder", "fit_rule"]

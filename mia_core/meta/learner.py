"""The bi-level meta-learner: K inner steps on the support set, loss on the query set.

One INR per modality. The adapted tensors are either each modality's context (CAVIA,
``adapt="context"``) or all of its INR weights as per-signal batched copies (MAML,
``adapt="weights"``). Each inner step evaluates every modality on its support set, sums
the per-signal losses (a sum, so each signal's gradient is its own loss's gradient) and
takes **one** ``autograd.grad`` for the whole batch and all modalities; the update rule
then maps ``(params, grads)`` to new params.

Second order by default (``create_graph=True``). ``first_order`` detaches the inner
gradients; the rule's own parameters and the initial params still receive gradients
through the update expressions.

Every step hands the rule the signals' support sizes in its state
(:func:`~mia_core.adapt.base.with_support`). An optional :class:`~mia_core.meta.prior.PriorPull`
adds a support-dependent pull toward the meta-initialisation to the inner loss (its
gradient joins the support-loss gradient before the rule, whatever the rule).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mia_core.adapt.base import Params, UpdateRule, with_support
from mia_core.data.episode import Episode, ModalityBatch
from mia_core.inr.base import INR
from mia_core.meta.head import HEAD_KEYS, head_keys, ridge_head
from mia_core.meta.metrics import masked_mse, signal_metrics
from mia_core.meta.prior import PriorPull
from mia_core.meta.pruning import gradient_norm_scores, select_top
from mia_core.runtime import autocast_off

ADAPT_MODES = ("context", "weights", "head")


def adapted_shapes(
    inrs: Mapping[str, INR], adapt: str
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Keys, unbatched shapes and modality groups of the tensors the inner loop adapts."""
    if adapt not in ADAPT_MODES:
        raise ValueError(f"adapt must be one of {ADAPT_MODES}, got {adapt!r}")
    shapes, groups = {}, {}
    for m, inr in inrs.items():
        if adapt == "context":
            if inr.context_init is None:
                raise ValueError(
                    f"modality {m!r}: context adaptation needs context_shape with S*D > 0"
                )
            shapes[m], groups[m] = tuple(inr.context_shape), m
        else:
            weights = inr.weights()
            names = HEAD_KEYS if adapt == "head" else tuple(weights)
            if adapt == "head" and not set(HEAD_KEYS) <= set(weights):
                raise ValueError(
                    f"modality {m!r}: a closed-form head needs an INR with a linear head "
                    f"({list(HEAD_KEYS)}), not {type(inr).__name__}"
                )
            for name in names:
                shapes[f"{m}/{name}"], groups[f"{m}/{name}"] = tuple(weights[name].shape), m
    return shapes, groups


@dataclass
class PruningSpec:
    """Context pruning settings (see :mod:`mia_core.meta.pruning`).

    Attributes:
        keep_ratio: fraction of each support set kept for the differentiable steps.
        bootstrap_steps: ``L`` extra first-order steps on the full support that build
            the bootstrap target (0 disables it).
        bootstrap_weight: ``lambda``, weight of the bootstrap term in the outer loss.
    """

    keep_ratio: float = 0.25
    bootstrap_steps: int = 0
    bootstrap_weight: float = 0.0


@dataclass
class MetaOutput:
    """Result of one meta-training forward pass.

    Attributes:
        loss: scalar outer loss (what to backpropagate).
        losses: modality -> detached scalar query MSE.
        params: adapted tensors after ``K`` steps.
        aux: per step, the update rule's aux dict (e.g. MSFT attention).
        bootstrap: detached bootstrap term (0 when disabled).
    """

    loss: Tensor
    losses: dict[str, Tensor]
    params: Params
    aux: list[dict] = field(default_factory=list)
    bootstrap: Tensor | None = None


class MetaLearner(nn.Module):
    """INRs per modality + an update rule + the inner loop.

    Args:
        inrs: modality -> INR.
        rule: the inner-loop update rule (built for :func:`adapted_shapes`).
        inner_steps: ``K``.
        adapt: ``context`` (CAVIA family) or ``weights`` (MAML).
        first_order: detach inner gradients.
        pruning: context pruning during meta-training, or ``None``.
        uncertainty_weighting: weight modality losses by learned log-variances
            (Kendall et al., 2018): ``sum_m exp(-s_m) L_m + s_m``.
        meta_gradient: ``maml``, or ``reptile`` (weights mode): the outer loss is
            ``sum_k 0.5 * mean_b ||theta_k - sg(phi_bk)||^2``, whose gradient is Reptile's
            direction ``theta - mean_b phi_b``, so any outer optimizer applies it.
        inner_points: support points drawn at random (with replacement, shared by the
            batch) at every inner step; 0 uses them all.
        head_ridge: with ``adapt='head'``, the relative ridge of the closed-form head
            solved after the inner steps (:mod:`mia_core.meta.head`).
        prior: support-dependent pull toward the initialisation in the inner loss
            (:mod:`mia_core.meta.prior`), or ``None``.
    """

    def __init__(
        self,
        inrs: Mapping[str, INR],
        rule: UpdateRule,
        inner_steps: int = 3,
        adapt: str = "context",
        first_order: bool = False,
        pruning: PruningSpec | None = None,
        uncertainty_weighting: bool = False,
        meta_gradient: str = "maml",
        inner_points: int = 0,
        head_ridge: float = 0.0,
        prior: PriorPull | None = None,
    ) -> None:
        super().__init__()
        if meta_gradient not in ("maml", "reptile"):
            raise ValueError(f"meta_gradient must be maml or reptile, got {meta_gradient!r}")
        if meta_gradient == "reptile" and adapt != "weights":
            raise ValueError("meta_gradient reptile needs adapt='weights'")
        if (adapt == "head") != (head_ridge > 0):
            raise ValueError("adapt='head' goes with head_ridge > 0 and only with it")
        self.head_ridge = float(head_ridge)
        self.meta_gradient, self.inner_points = meta_gradient, int(inner_points)
        self.inrs = nn.ModuleDict(dict(inrs))
        self.modalities = list(inrs)
        shapes, _ = adapted_shapes(inrs, adapt)
        if set(shapes) != set(rule.shapes):
            raise ValueError("update rule was built for other adapted tensors than this learner's")
        self.rule, self.inner_steps, self.adapt_mode = rule, int(inner_steps), adapt
        self.first_order, self.pruning = first_order, pruning
        self.log_vars = (
            nn.Parameter(torch.zeros(len(self.modalities))) if uncertainty_weighting else None
        )
        self.prior = prior

    def initial_params(self, batch: int) -> Params:
        """Adapted tensors at step 0, as ``(B, ...)`` views of the meta-parameters."""
        if self.adapt_mode == "context":
            return {m: self.inrs[m].initial_context(batch) for m in self.modalities}
        return {
            f"{m}/{n}": w.unsqueeze(0).expand(batch, *w.shape)
            for m in self.modalities
            for n, w in self.inrs[m].weights().items()
            if self.adapt_mode == "weights" or n in HEAD_KEYS
        }

    def solve_heads(
        self,
        sets: Mapping[str, tuple[Tensor, Tensor, Tensor]],
        params: Params,
    ) -> Params:
        """``params`` with every modality's head solved in closed form on ``sets``.

        Args:
            sets: modality -> ``(x (B or 1, P, d), y (B, P, C), mask (B, P))``.
            params: adapted tensors (``head`` mode: the heads), ``(B, ...)``.
        """
        out = dict(params)
        for m, (x, y, mask) in sets.items():
            _, feats = self.predict(m, x, params, return_features=True)
            w_key, b_key = head_keys(m)
            out[w_key], out[b_key] = ridge_head(feats, y, mask, self.head_ridge)
        return out

    def predict(self, modality: str, coords: Tensor, params: Params, return_features: bool = False):
        """Evaluate one modality's INR with adapted tensors (``(B, P, d_out)``)."""
        inr = self.inrs[modality]
        if self.adapt_mode == "context":
            return inr(coords, params[modality], None, return_features)
        prefix = f"{modality}/"
        weights = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        batch = next(iter(weights.values())).shape[0]
        return inr(coords, inr.initial_context(batch), weights, return_features)

    def _support(
        self, episode: Episode, params: Params, prune: bool
    ) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        sets = {}
        for m in self.modalities:
            mb = episode[m]
            x, y, mask = mb.support_x, mb.support_y, mb.support_mask
            if 0 < self.inner_points < x.shape[1]:  # a fresh random draw every step
                idx = torch.randint(0, x.shape[1], (self.inner_points,), device=x.device)
                x, y, mask = x[:, idx], y[:, idx], mask[:, idx]
            if prune and self.pruning is not None:
                with torch.no_grad():
                    pred, feats = self.predict(m, x, params, return_features=True)
                    scores = gradient_norm_scores(pred - y, feats, mask)
                mask, (x, y) = select_top(scores, mask, self.pruning.keep_ratio, x, y)
            sets[m] = (x, y, mask)
        return sets

    def support_sizes(self, episode: Episode) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Modality -> ``(B,)`` support point counts, and -> ``(B,)`` valid point counts."""
        counts = {m: episode[m].support_mask.sum(1) for m in self.modalities}
        return counts, {m: episode[m].query_mask.sum(1) for m in self.modalities}

    def step(
        self, episode: Episode, params: Params, state: dict, k: int, create_graph: bool, prune: bool
    ):
        """One inner step for all signals and modalities; returns ``(params, state, aux, loss)``.

        The inner loss is the summed support MSE plus the prior pull, when configured.
        """
        sets = self._support(episode, params, prune)
        loss = sum(
            masked_mse(self.predict(m, x, params), y, mask).sum()
            for m, (x, y, mask) in sets.items()
        )
        keys = list(params)
        grads = torch.autograd.grad(loss, [params[key] for key in keys], create_graph=create_graph)
        grads = {key: g for key, g in zip(keys, grads, strict=True)}
        counts, totals = self.support_sizes(episode)
        if self.prior is not None:
            pull, pull_grads = self.prior(params, self.initial_params(1), counts, self.rule.groups)
            grads = {key: g + pull_grads[key] for key, g in grads.items()}
            loss = loss + pull
        state = with_support(state, counts, totals)
        return (*self.rule(params, grads, state, k), loss.detach())

    def adapt(
        self,
        episode: Episode,
        create_graph: bool | None = None,
        prune: bool = True,
        steps: int | None = None,
        track_graph: bool = True,
    ) -> tuple[Params, list[dict]]:
        """Run the inner loop.

        Args:
            episode: modality -> batch.
            create_graph: differentiate through the inner gradients; defaults to
                ``not first_order``.
            prune: apply context pruning (when configured).
            steps: number of inner steps (default ``K``).
            track_graph: keep the graph to the meta-parameters; ``False`` detaches the
                params after every step (evaluation: constant memory in ``K``).

        Returns:
            Adapted params and the rule's aux dict of every step.

        Runs in float32 even under autocast (:func:`~mia_core.runtime.autocast_off`):
        only the outer (query) forward of meta-training is autocast.
        """
        create_graph = (not self.first_order) if create_graph is None else create_graph
        first = episode[self.modalities[0]]
        params = self.initial_params(first.batch_size)
        if not track_graph:
            params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        auxs = []
        with autocast_off(first.support_x.device):
            state = self.rule.init_state(params)
            for k in range(self.inner_steps if steps is None else steps):
                params, state, aux, _ = self.step(episode, params, state, k, create_graph, prune)
                if not track_graph:
                    params = {key: v.detach().requires_grad_(True) for key, v in params.items()}
                auxs.append(aux)
            if self.adapt_mode == "head":
                sets = {
                    m: (episode[m].support_x, episode[m].support_y, episode[m].support_mask)
                    for m in self.modalities
                }
                params = self.solve_heads(sets, params)
                if not track_graph:
                    params = {key: v.detach().requires_grad_(True) for key, v in params.items()}
        return params, auxs

    def query_losses(self, episode: Episode, params: Params) -> dict[str, Tensor]:
        """Modality -> scalar query MSE (mean over signals of per-signal MSE)."""
        out = {}
        for m in self.modalities:
            mb = episode[m]
            out[m] = masked_mse(
                self.predict(m, mb.query_x, params), mb.query_y, mb.query_mask
            ).mean()
        return out

    @contextlib.contextmanager
    def reusing_coordinate_layers(self) -> Iterator[None]:
        """Every modality's coordinate-only first layer computed once per coordinate set.

        See :meth:`mia_core.inr.base.INR.reusing_coordinate_layers`: the ``K`` inner steps
        evaluate the same support points, so their first layer (and its backward) is
        shared instead of repeated.
        """
        with contextlib.ExitStack() as stack:
            for inr in self.inrs.values():
                stack.enter_context(inr.reusing_coordinate_layers())
            yield

    def forward(self, episode: Episode) -> MetaOutput:
        """Meta-training pass: adapt on the support sets, loss on the query sets."""
        if self.meta_gradient == "reptile":
            return self._reptile(episode)
        with torch.enable_grad(), self.reusing_coordinate_layers():
            params, auxs = self.adapt(episode)
            losses = self.query_losses(episode, params)
            stacked = torch.stack([losses[m] for m in self.modalities])
            if self.log_vars is not None:
                loss = (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()
            else:
                loss = stacked.sum()
            boot = None
            if (
                self.pruning is not None
                and self.pruning.bootstrap_steps > 0
                and self.pruning.bootstrap_weight > 0
            ):
                boot = self._bootstrap(episode, params)
                loss = loss + self.pruning.bootstrap_weight * boot
        return MetaOutput(
            loss,
            {m: v.detach() for m, v in losses.items()},
            params,
            auxs,
            None if boot is None else boot.detach(),
        )

    def _reptile(self, episode: Episode) -> MetaOutput:
        """Reptile pass: a graph-free inner loop, the distance to its end as the loss."""
        with torch.enable_grad(), self.reusing_coordinate_layers():
            params, auxs = self.adapt(episode, create_graph=False, track_graph=False)
        with torch.no_grad():
            losses = self.query_losses(episode, params)
        theta = self.initial_params(1)
        loss = sum(
            0.5 * (theta[k] - v.detach()).square().sum() / v.shape[0] for k, v in params.items()
        )
        return MetaOutput(loss, losses, params, auxs)

    def _bootstrap(self, episode: Episode, params: Params) -> Tensor:
        """Mean squared distance between adapted params and a detached bootstrap target."""
        target = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        state = self.rule.init_state(target)
        with autocast_off(episode[self.modalities[0]].support_x.device):
            for k in range(self.pruning.bootstrap_steps):
                target, state, _, _ = self.step(
                    episode, target, state, self.inner_steps + k, False, prune=False
                )
                target = {key: v.detach().requires_grad_(True) for key, v in target.items()}
        return sum((params[k] - target[k].detach()).square().mean() for k in params)

    def evaluate(
        self, episode: Episode, data_range: float = 1.0
    ) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
        """Adapt without meta-gradients and score the query sets.

        Returns:
            ``(metrics, preds)``: modality -> per-signal metric tensors
            (:func:`~mia_core.meta.metrics.signal_metrics`) and modality -> ``(B, P, C)``.
        """
        with torch.enable_grad(), self.reusing_coordinate_layers():
            params, _ = self.adapt(episode, create_graph=False, prune=False, track_graph=False)
        metrics, preds = {}, {}
        with torch.no_grad():
            for m in self.modalities:
                mb: ModalityBatch = episode[m]
                preds[m] = self.predict(m, mb.query_x, params)
                metrics[m] = signal_metrics(
                    preds[m], mb.query_y, mb.query_mask, mb.query_support, mb.scale, data_range
                )
        return metrics, preds

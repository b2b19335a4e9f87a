"""Builders: typed config sections -> modules. Modules themselves take plain arguments."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mia_core import adapt
from mia_core.adapt import UpdateRule
from mia_core.config import MethodConfig, ModelConfig
from mia_core.config.methods import get_method
from mia_core.inr import INR, ComposersINR, FunctaINR, ReluFourierMLP, Siren
from mia_core.mcl.fim import FIMLearner
from mia_core.meta.learner import MetaLearner, PruningSpec, adapted_shapes
from mia_core.meta.prior import PriorPull


def adapt_mode(method: MethodConfig) -> str:
    """The parameters the inner loop adapts: ``context``, ``weights`` or ``head``.

    ``weights`` for the methods registered as adapting weights (MAML semantics: ``maml``,
    ``meta_inr``), ``head`` for those with a closed-form head (``method.head_ridge > 0``),
    ``context`` for the CAVIA family (and the kinds with their own inner loop).

    Raises:
        ConfigError: ``method.name`` is not registered.
    """
    if not get_method(method.name).adapts_weights:
        return "context"
    return "head" if getattr(method, "head_ridge", 0.0) > 0 else "weights"


def build_inr(model: ModelConfig, d_in: int, d_out: int, use_context: bool = True) -> INR:
    """One INR of the configured family.

    Args:
        model: the ``model`` config section.
        d_in: coordinate dimension of the modality.
        d_out: channels of the modality.
        use_context: build the context ``(S, D)``; MAML runs without it.
    """
    ctx = (model.context_tokens, model.context_dim) if use_context else (0, 0)
    if model.family == "siren":
        inr: INR = Siren(d_in, d_out, model.width, model.depth, model.omega0, ctx)
    elif model.family == "relu_ff":
        inr = ReluFourierMLP(
            d_in, d_out, model.width, model.depth, model.ff_sigma, model.ff_features, ctx
        )
    elif model.family == "functa":
        inr = FunctaINR(
            d_in,
            d_out,
            model.width,
            model.depth,
            model.omega0,
            ctx,
            model.functa_modulation,
            tuple(model.functa_grid),
            backbone=model.functa_backbone,
            latent_map=model.functa_latent_map,
            layout=model.functa_layout,
            ff_sigma=model.ff_sigma,
            ff_features=model.ff_features,
        )
    elif model.family == "composers":
        if model.context_dim != model.width:
            raise ValueError(
                f"model.context_dim ({model.context_dim}) must equal model.width ({model.width}) "
                "for composers: the context is V_n in W_n = U V_n"
            )
        inr = ComposersINR(
            d_in,
            d_out,
            model.width,
            model.depth,
            model.context_tokens,
            model.ff_sigma,
            model.ff_features,
            layout=model.composers_layout,
        )
    else:
        raise ValueError(f"unknown model.family {model.family!r}")
    if inr.context_init is not None:
        with torch.no_grad():
            inr.context_init.normal_(
                0.0, model.context_init_std
            ) if model.context_init_std > 0 else inr.context_init.zero_()
    return inr


def build_rule(
    method: MethodConfig, shapes: Mapping[str, tuple[int, ...]], groups: Mapping[str, str]
) -> UpdateRule:
    """The inner-loop update rule of ``method.name``, built by its registry entry.

    Raises:
        ConfigError: ``method.name`` is not registered.
        ValueError: the method has no update rule (its own kind of learner).
    """
    spec = get_method(method.name)
    if spec.rule is None:
        raise ValueError(
            f"method.name={method.name!r} has no inner-loop update rule: its learner is built "
            f"by {spec.built_by}"
        )
    return spec.rule(method, shapes, groups, adapt)


def build_learner(
    model: ModelConfig, method: MethodConfig, modalities: Mapping[str, tuple[int, int]]
) -> MetaLearner:
    """The full meta-learner.

    Args:
        model: the ``model`` section.
        method: the ``method`` section.
        modalities: modality -> ``(d_in, d_out)``, in a fixed order.

    Raises:
        ConfigError: ``method.name`` is not registered.
        ValueError: the method is not a meta-learning one (its registry entry names its
            builder).
    """
    spec = get_method(method.name)
    if not spec.meta_learner:
        kind = "meta-continual" if spec.continual else spec.kind
        raise ValueError(
            f"method.name={method.name!r} is a {kind} method: run it with {spec.built_by}"
        )
    mode = adapt_mode(method)
    inrs = {
        m: build_inr(model, d_in, d_out, use_context=mode == "context")
        for m, (d_in, d_out) in modalities.items()
    }
    shapes, groups = adapted_shapes(inrs, mode)
    pruning = None
    if method.pruning.enabled:
        p = method.pruning
        pruning = PruningSpec(p.keep_ratio, p.bootstrap_steps, p.bootstrap_weight)
    rule = build_rule(method, shapes, groups)
    prior = None
    if getattr(method, "prior_pull", 0.0) > 0:
        prior = PriorPull(
            list(modalities), method.prior_pull, method.prior_pull_n0, method.prior_pull_learned
        )
    learner = MetaLearner(
        inrs,
        rule,
        method.inner_steps,
        mode,
        method.first_order,
        pruning,
        method.uncertainty_weighting,
        method.meta_gradient,
        method.inner_points,
        getattr(method, "head_ridge", 0.0),
        prior,
    )
    if method.fim_lambda > 0:  # FIM loss hook (mia_core/mcl/fim.py)
        learner = FIMLearner(learner, method.fim_lambda, method.fim_decay, method.fim_normalise)
    return learner

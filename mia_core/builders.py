"""Builders: typed config sections -> modules. Modules themselves take plain arguments."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mia_core.adapt import ALFA, GAP, SGD, MetaSGD, StateFusionTransformer, UpdateRule
from mia_core.config import MethodConfig, ModelConfig
from mia_core.config.schema import CONTINUAL_METHOD_NAMES
from mia_core.inr import INR, ComposersINR, FunctaINR, ReluFourierMLP, Siren
from mia_core.mcl.fim import FIMLearner
from mia_core.meta.learner import MetaLearner, PruningSpec, adapted_shapes
from mia_core.meta.prior import PriorPull


def adapt_mode(method: MethodConfig) -> str:
    """``weights`` for MAML and Meta-INR (MAML semantics), ``context`` for the CAVIA family.

    ``head`` for MAML and Meta-INR with a closed-form head (``method.head_ridge > 0``).
    """
    if method.name not in ("maml", "meta_inr"):
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
    """The inner-loop update rule named by ``method.name``."""
    lr = method.inner_lr
    if method.name in ("maml", "meta_inr") and method.weight_rates != "fixed":
        steps = method.inner_steps if method.weight_rates == "param_step" else 0
        return MetaSGD(shapes, groups, lr, tuple(method.metasgd_clamp), steps)
    if method.name in ("cavia", "maml", "meta_inr"):
        return SGD(shapes, groups, lr)
    if method.name == "metasgd":
        return MetaSGD(shapes, groups, lr, tuple(method.metasgd_clamp))
    if method.name == "gap":
        return GAP(shapes, groups, lr, method.gap_variant)
    if method.name == "alfa":
        return ALFA(shapes, groups, lr, method.alfa_hidden)
    if method.name == "mia":
        s = method.sft
        return StateFusionTransformer(
            shapes,
            groups,
            dim=s.dim,
            heads=s.heads,
            mlp_dim=s.mlp_dim,
            usft_layers=s.usft_layers,
            msft_layers=s.msft_layers,
            use_usft=s.use_usft,
            use_msft=s.use_msft,
            use_fusion=s.use_fusion,
            state_params=s.state_params,
            state_grads=s.state_grads,
            state_scaling=s.state_scaling,
            eta_init=s.eta_init,
            lr=lr,
            residual_sgd=s.residual_sgd,
            support_state=getattr(s, "support_state", "none"),
        )
    raise ValueError(f"unknown method.name {method.name!r}")


def build_learner(
    model: ModelConfig, method: MethodConfig, modalities: Mapping[str, tuple[int, int]]
) -> MetaLearner:
    """The full meta-learner.

    Args:
        model: the ``model`` section.
        method: the ``method`` section.
        modalities: modality -> ``(d_in, d_out)``, in a fixed order.
    """
    if method.name in CONTINUAL_METHOD_NAMES:
        raise ValueError(
            f"method.name={method.name!r} is a meta-continual method: run it with "
            "ray_jobs/continual.py (mia_core.mcl.build.build_sequence_learner)"
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

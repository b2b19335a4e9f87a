"""Builder: config sections -> a :class:`~mia_core.mcl.sequence.SequenceLearner`."""

from __future__ import annotations

import dataclasses

from mia_core.builders import build_inr
from mia_core.config import MethodConfig, ModelConfig
from mia_core.mcl.sequence import ContinualSpec, SequenceLearner
from mia_core.mcl.tasks import AxisPartition

CONTEXT_FREE_FAMILIES = ("siren", "relu_ff")


def continual_spec(method: MethodConfig) -> ContinualSpec:
    """The method settings of a continual ``method`` section."""
    m = method.mcl
    return ContinualSpec(
        method.name,
        method.inner_steps,
        method.inner_lr,
        method.first_order,
        method.fim_lambda,
        method.fim_decay,
        m.oml_layers,
        m.replay_points,
        m.ewc_lambda,
        method.fim_normalise,
        m.fisher_per_task,
        m.mer_beta,
    )


def build_sequence_learner(
    model: ModelConfig,
    method: MethodConfig,
    d_signal: int,
    d_out: int,
    partition: AxisPartition,
) -> SequenceLearner:
    """The continual learner of ``method.name`` on ``d_signal``-dimensional signals.

    MCL-NF modules take the partition's module coordinates and ``method.mcl.module_width``
    hidden units (the paper keeps the total parameter count of ``T`` modules close to
    one larger network); the baselines' single network takes full signal coordinates.
    """
    if model.family not in CONTEXT_FREE_FAMILIES:
        raise ValueError(
            f"model.family={model.family!r}: continual methods adapt all weights of a "
            f"context-free INR; use one of {CONTEXT_FREE_FAMILIES}"
        )
    spec = continual_spec(method)
    if method.name == "mcl_nf":
        width = method.mcl.module_width or model.width
        inr = build_inr(
            dataclasses.replace(model, width=width), partition.module_dim(d_signal), d_out, False
        )
    else:
        inr = build_inr(model, d_signal, d_out, use_context=False)
    if method.name == "oml" and 2 * method.mcl.oml_layers > len(inr.weight_names()):
        raise ValueError(
            f"method.mcl.oml_layers={method.mcl.oml_layers} exceeds the INR's "
            f"{len(inr.weight_names()) // 2} layers"
        )
    return SequenceLearner(inr, spec)

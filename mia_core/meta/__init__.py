"""The bi-level meta-learning loop, its losses, metrics and context pruning."""

from mia_core.meta.learner import MetaLearner, MetaOutput, PruningSpec, adapted_shapes
from mia_core.meta.metrics import masked_mse, psnr, signal_metrics
from mia_core.meta.prior import PriorPull

__all__ = [
    "MetaLearner",
    "MetaOutput",
    "PriorPull",
    "PruningSpec",
    "adapted_shapes",
    "masked_mse",
    "psnr",
    "signal_metrics",
]

"""Inner-loop update rules sharing one interface (:class:`UpdateRule`)."""

from mia_core.adapt.adam import Adam
from mia_core.adapt.alfa import ALFA
from mia_core.adapt.base import SUPPORT_KEY, Params, UpdateRule, with_support
from mia_core.adapt.gap import GAP
from mia_core.adapt.metasgd import MetaSGD
from mia_core.adapt.sft import StateFusionTransformer
from mia_core.adapt.sgd import SGD

__all__ = [
    "SUPPORT_KEY",
    "ALFA",
    "Adam",
    "GAP",
    "SGD",
    "MetaSGD",
    "Params",
    "StateFusionTransformer",
    "UpdateRule",
    "with_support",
]

"""MWT (Gielisse & van Gemert): end-to-end classification of meta-learned SIREN weights."""

from mia_core.mwt.augment import Augment
from mia_core.mwt.builder import build_augment, build_mwt
from mia_core.mwt.classifier import WeightTransformer
from mia_core.mwt.model import MWT, MWTOutput, count_lrs, scale_grad
from mia_core.mwt.siren import MetaSiren

__all__ = [
    "MWT",
    "Augment",
    "MWTOutput",
    "MetaSiren",
    "WeightTransformer",
    "build_augment",
    "build_mwt",
    "count_lrs",
    "scale_grad",
]

"""Episode tensors and the synthetic benchmark generator."""

from mia_core.data.episode import Episode, ModalityBatch, sample_support
from mia_core.data.synthetic1d import SignalSet, generate_synthetic1d, make_episode

__all__ = [
    "Episode",
    "ModalityBatch",
    "SignalSet",
    "generate_synthetic1d",
    "make_episode",
    "sample_support",
]

"""Signal sets for training: build, split into train / validation / test, episodes.

For now the synthetic 1-D benchmark is generated in memory; the data-pipeline issue
replaces this with Zarr stores read through Ray Data, behind the same
:class:`SplitSignals` shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mia_core.config import DataConfig
from mia_core.data import Episode, SignalSet, generate_synthetic1d, make_episode


@dataclass
class SplitSignals:
    """Train / validation / test signals of one dataset.

    Attributes:
        train: signals the outer loop samples from.
        val: held-out training functions for model selection.
        test: the test split; only the final evaluation reads it.
        dims: modality -> ``(d_in, d_out)``.
    """

    train: SignalSet
    val: SignalSet
    test: SignalSet
    dims: dict[str, tuple[int, int]]


def load_signals(data: DataConfig) -> SplitSignals:
    """Build the dataset named by ``data.name`` and split it."""
    if data.name != "synthetic1d":
        raise ValueError(f"data.name={data.name!r}: only 'synthetic1d' is built in so far")
    sig = generate_synthetic1d(
        data.num_functions,
        data.num_points,
        tuple(data.x_range),
        data.noise_std,
        tuple(data.modalities),
        data.seed,
    )
    n_val = int(data.num_train * data.val_fraction)
    n_fit = data.num_train - n_val
    dims = {m: (sig.x.shape[-1], v.shape[-1]) for m, v in sig.values.items()}
    return SplitSignals(
        train=sig.subset(slice(0, n_fit)),
        val=sig.subset(slice(n_fit, data.num_train)),
        test=sig.subset(slice(data.num_train, data.num_functions)),
        dims=dims,
    )


def ratio_ranges(data: DataConfig) -> dict[str, tuple[float, float]]:
    """Support-ratio range per modality (per-modality overrides win)."""
    out = {}
    for m in data.modalities:
        lo, hi = data.support_ratio_per_modality.get(m, data.support_ratio)
        out[m] = (float(lo), float(hi))
    return out


class EpisodeSampler:
    """Draws random meta-batches of episodes from a signal set, reproducibly.

    Args:
        signals: the signals to sample.
        ranges: modality -> support-ratio range.
        batch_size: signals per episode batch.
        seed: seed of the sampler's own generator.
    """

    def __init__(
        self, signals: SignalSet, ranges: dict[str, tuple[float, float]], batch_size: int, seed: int
    ) -> None:
        self.signals, self.ranges, self.batch_size = signals, ranges, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> Episode:
        """One meta-batch (signals drawn without replacement within the batch)."""
        n = self.signals.num_signals
        idx = torch.randperm(n, generator=self.generator)[: min(self.batch_size, n)]
        return make_episode(self.signals, idx, self.ranges, self.generator)

    def state_dict(self) -> dict:
        """Generator state, saved in checkpoints so a resumed run draws the same data."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

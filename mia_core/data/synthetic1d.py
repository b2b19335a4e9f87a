"""The multimodal 1-D synthetic benchmark (Kim et al., 2022; MIA Sec. 5.1).

Each function ``n`` draws shared parameters ``(a, b, c, d)``; modality ``m`` is
``y = a * Act_m(b * x + c) + d + eps_m`` on a uniform grid of ``x`` in ``x_range``, with
``Act_m`` in {sine, gaussian, tanh, relu} and independent noise per modality, so that
the modalities are correlated through the shared parameters only. The normalised MSE
divides by ``a**2``.

Parameter ranges (the papers do not print them; chosen so every modality shows
structure inside the domain): ``a ~ U(0.5, 2)``, ``b ~ U(0.5, 1.5)``,
``c ~ U(-3, 3)``, ``d ~ U(-1, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mia_core.data.episode import Episode, sample_support

ACTIVATIONS = {
    "sine": np.sin,
    "gaussian": lambda t: np.exp(-(t**2)),
    "tanh": np.tanh,
    "relu": lambda t: np.maximum(t, 0.0),
}


@dataclass
class SignalSet:
    """Signals of several modalities on shared coordinates.

    Attributes:
        x: ``(P, d)`` coordinates, normalised to ``[-1, 1]^d``.
        values: modality -> ``(N, P, C)`` float32 values.
        scale: ``(N,)`` per-signal scale for the normalised MSE.
    """

    x: Tensor
    values: dict[str, Tensor]
    scale: Tensor

    @property
    def num_signals(self) -> int:
        """Number of signals ``N``."""
        return self.scale.shape[0]

    def subset(self, index: Tensor | slice) -> SignalSet:
        """Signals at ``index`` (coordinates are shared)."""
        return SignalSet(self.x, {m: v[index] for m, v in self.values.items()}, self.scale[index])


def generate_synthetic1d(
    num_functions: int = 1000,
    num_points: int = 200,
    x_range: tuple[float, float] = (-5.0, 5.0),
    noise_std: float = 0.02,
    modalities: tuple[str, ...] = ("sine", "gaussian", "tanh", "relu"),
    seed: int = 0,
) -> SignalSet:
    """Generate the benchmark deterministically from ``seed``."""
    unknown = [m for m in modalities if m not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"unknown synthetic modalities {unknown}; known: {sorted(ACTIVATIONS)}")
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, num_functions)
    b = rng.uniform(0.5, 1.5, num_functions)
    c = rng.uniform(-3.0, 3.0, num_functions)
    d = rng.uniform(-1.0, 1.0, num_functions)
    xs = np.linspace(x_range[0], x_range[1], num_points)
    values = {}
    for m in modalities:
        t = b[:, None] * xs[None, :] + c[:, None]
        y = a[:, None] * ACTIVATIONS[m](t) + d[:, None]
        y = y + noise_std * rng.standard_normal(y.shape)
        values[m] = torch.from_numpy(y[..., None].astype(np.float32))
    x = torch.from_numpy(((xs - x_range[0]) / (x_range[1] - x_range[0]) * 2 - 1).astype(np.float32))
    return SignalSet(x[:, None], values, torch.from_numpy(a.astype(np.float32)))


def make_episode(
    signals: SignalSet,
    index: Tensor,
    ratio_ranges: dict[str, tuple[float, float]],
    generator: torch.Generator,
) -> Episode:
    """Episode for the signals at ``index``: a support set per signal and modality."""
    sub = signals.subset(index)
    x = sub.x.unsqueeze(0)
    return {
        m: sample_support(
            x, y, torch.ones(y.shape[:2], dtype=torch.bool), ratio_ranges[m], generator, sub.scale
        )
        for m, y in sub.values.items()
    }

"""The multimodal 1-D synthetic benchmark (Kim et al., 2022; MIA Sec. 5.1).

Modality ``m`` of function ``n`` is ``y = a_m * Act_m(b_m * x + c_m) + d_m`` on a uniform
grid of ``x`` in ``x_range``, with ``Act_m`` in {sine, gaussian, tanh, relu}. Two variants:

``paper`` (default): MIA Sec. 5.1 draws shared parameters ``(a, b, c, d)`` per function
and "adds per-modality Gaussian noises eps_nm ~ N(0, 0.02) to control the cross-modal
correlations", scoring ``MSE / a_nm**2``. We read this as a jitter of the *parameters*:
``a_m = a + eps``, ``b_m = b + eps'``, ``c_m = c + eps''``, ``d_m = d + eps'''``, every
``eps`` an independent ``N(0, noise_std**2)`` per function and modality, no observation
noise on ``y``, and the normalised-MSE scale of modality ``m`` is its own ``a_m``. The
ranges are MTNP's (GitGyun/multi_task_neural_processes, ``data/generate_synthetic_data.py``,
the file that writes the ``synthetic`` data set of its configs):
``a, b ~ exp(U(-0.5, 0.5))``, ``c, d ~ U(-2, 2)`` (MTNP names them ``a, w, b, c``; it
draws ``x ~ U(-5, 5)`` per function, MIA a uniform grid of 200 points). MTNP's
``generate_data_tasknoised.py`` jitters per task in the same way (``a * exp(0.05 z)``,
``b + 0.05 z``), which supports the parameter reading of the MIA sentence. The official
MIA code (yhytoto12/MIA, ``data/synthetic.py``, ``use_jitter: true`` in
``configs/synthetic.yaml``) loads a pre-generated ``meta-dataset.pt`` whose values and
parameters are jittered per modality (``ys_*_jittered_dict_main``,
``ps_*_jittered_main[mode][:, 0]`` = ``a_m``, the nMSE scale in ``mia/training.py``); the
script that writes it is not published, so the jitter's exact form (additive here) is
our reading.

``shared``: the project's earlier generator, kept so that old configs reproduce: the
parameters are shared exactly, ``a ~ U(0.5, 2)``, ``b ~ U(0.5, 1.5)``, ``c ~ U(-3, 3)``,
``d ~ U(-1, 1)``, independent observation noise ``N(0, noise_std**2)`` is added to ``y``
per modality, and the scale is the shared ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
VARIANTS = ("paper", "shared")


@dataclass
class SignalSet:
    """Signals of several modalities on shared coordinates.

    Attributes:
        x: ``(P, d)`` coordinates, normalised to ``[-1, 1]^d``.
        values: modality -> ``(N, P, C)`` float32 values.
        scale: ``(N,)`` per-signal scale for the normalised MSE (the shared amplitude).
        modality_scale: modality -> ``(N,)`` scale of that modality when it differs per
            modality (the ``paper`` variant's ``a_m``); modalities not listed use ``scale``.
    """

    x: Tensor
    values: dict[str, Tensor]
    scale: Tensor
    modality_scale: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_signals(self) -> int:
        """Number of signals ``N``."""
        return self.scale.shape[0]

    def scale_of(self, modality: str) -> Tensor:
        """``(N,)`` normalised-MSE scale of ``modality``."""
        return self.modality_scale.get(modality, self.scale)

    def subset(self, index: Tensor | slice) -> SignalSet:
        """Signals at ``index`` (coordinates are shared)."""
        return SignalSet(
            self.x,
            {m: v[index] for m, v in self.values.items()},
            self.scale[index],
            {m: s[index] for m, s in self.modality_scale.items()},
        )


def _shared_parameters(
    rng: np.random.Generator, n: int, mods: tuple[str, ...]
) -> tuple[dict, np.ndarray]:
    """The same ``(a, b, c, d)``, each ``(n,)``, for every modality; and ``a``."""
    a = rng.uniform(0.5, 2.0, n)
    b = rng.uniform(0.5, 1.5, n)
    c = rng.uniform(-3.0, 3.0, n)
    d = rng.uniform(-1.0, 1.0, n)
    return {m: (a, b, c, d) for m in mods}, a


def _paper_parameters(
    rng: np.random.Generator, n: int, mods: tuple[str, ...], jitter: float
) -> tuple[dict, np.ndarray]:
    a = np.exp(rng.uniform(-0.5, 0.5, n))
    b = np.exp(rng.uniform(-0.5, 0.5, n))
    c = rng.uniform(-2.0, 2.0, n)
    d = rng.uniform(-2.0, 2.0, n)
    params = {}
    for m in mods:
        eps = jitter * rng.standard_normal((4, n))
        params[m] = (a + eps[0], b + eps[1], c + eps[2], d + eps[3])
    return params, a


def generate_synthetic1d(
    num_functions: int = 1000,
    num_points: int = 200,
    x_range: tuple[float, float] = (-5.0, 5.0),
    noise_std: float = 0.02,
    modalities: tuple[str, ...] = ("sine", "gaussian", "tanh", "relu"),
    seed: int = 0,
    variant: str = "paper",
) -> SignalSet:
    """Generate the benchmark deterministically from ``seed``.

    Args:
        num_functions: functions ``N``.
        num_points: grid points ``P`` on ``x_range``.
        x_range: input domain before normalisation to ``[-1, 1]``.
        noise_std: ``paper``: std of the per-modality parameter jitter; ``shared``: std
            of the additive observation noise on ``y``.
        modalities: activation names, in output order.
        seed: generator seed.
        variant: one of ``VARIANTS`` (see the module docstring).

    Returns:
        ``values[m]`` of shape ``(N, P, 1)``; ``scale`` ``(N,)`` is the shared amplitude
        ``a``, and for ``paper`` ``modality_scale[m]`` ``(N,)`` is ``|a_m|``.

    Raises:
        ValueError: an unknown modality or variant.
    """
    unknown = [m for m in modalities if m not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"unknown synthetic modalities {unknown}; known: {sorted(ACTIVATIONS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown synthetic variant {variant!r}; known: {list(VARIANTS)}")
    rng = np.random.default_rng(seed)
    if variant == "paper":
        params, a = _paper_parameters(rng, num_functions, tuple(modalities), noise_std)
    else:
        params, a = _shared_parameters(rng, num_functions, tuple(modalities))
    xs = np.linspace(x_range[0], x_range[1], num_points)
    values, modality_scale = {}, {}
    for m in modalities:
        am, bm, cm, dm = params[m]
        y = am[:, None] * ACTIVATIONS[m](bm[:, None] * xs[None, :] + cm[:, None]) + dm[:, None]
        if variant == "shared":
            y = y + noise_std * rng.standard_normal(y.shape)
        else:
            modality_scale[m] = torch.from_numpy(np.abs(am).astype(np.float32))
        values[m] = torch.from_numpy(y[..., None].astype(np.float32))
    x = torch.from_numpy(((xs - x_range[0]) / (x_range[1] - x_range[0]) * 2 - 1).astype(np.float32))
    return SignalSet(x[:, None], values, torch.from_numpy(a.astype(np.float32)), modality_scale)


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
            x,
            y,
            torch.ones(y.shape[:2], dtype=torch.bool),
            ratio_ranges[m],
            generator,
            sub.scale_of(m),
        )
        for m, y in sub.values.items()
    }

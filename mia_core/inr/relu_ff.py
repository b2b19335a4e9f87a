"""ReLU MLP on random Fourier features (Tancik et al., 2020).

``gamma(x) = [sin(2 pi B x), cos(2 pi B x)]`` with ``B ~ N(0, sigma^2)`` fixed at
construction; ``sigma = 0`` feeds the raw coordinates. The CAVIA context is concatenated
to the encoded input, computed once per signal as in :class:`~mia_core.inr.siren.Siren`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.inr.functional import kaiming_bound, linear, uniform_


class FourierFeatures(torch.nn.Module):
    """Fixed random Fourier encoding; identity when ``sigma == 0``."""

    def __init__(self, d_in: int, n_features: int, sigma: float, seed: int = 0) -> None:
        super().__init__()
        self.sigma = sigma
        if sigma > 0:
            g = torch.Generator().manual_seed(seed)
            self.register_buffer("B", torch.randn(d_in, n_features, generator=g) * sigma)
            self.d_out = 2 * n_features
        else:
            self.B = None
            self.d_out = d_in

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_in) -> (..., d_out)``."""
        if self.B is None:
            return x
        proj = 2 * math.pi * torch.matmul(x, self.B)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ReluFourierMLP(INR):
    """``depth`` ReLU layers on Fourier-encoded coordinates and a linear head.

    Args:
        d_in: coordinate dimension.
        d_out: output channels.
        width: hidden units.
        depth: number of ReLU layers.
        ff_sigma: Fourier feature scale; 0 disables the encoding.
        ff_features: number of random frequencies (the encoding has twice as many).
        context_shape: ``(S, D)``; ``(0, 0)`` disables the context.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        width: int = 128,
        depth: int = 5,
        ff_sigma: float = 0.0,
        ff_features: int = 64,
        context_shape: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__(d_in, d_out, context_shape)
        self.depth = depth
        self.encoding = FourierFeatures(d_in, ff_features, ff_sigma)
        n_ctx = self.context_shape[0] * self.context_shape[1]
        b0 = kaiming_bound(self.encoding.d_out + n_ctx)
        self.w0 = uniform_((width, self.encoding.d_out), b0)
        self.b0 = uniform_((width,), 1.0 / math.sqrt(self.encoding.d_out + n_ctx))
        self.c0 = uniform_((width, n_ctx), b0) if n_ctx else None
        for i in range(1, depth):
            setattr(self, f"w{i}", uniform_((width, width), kaiming_bound(width)))
            setattr(self, f"b{i}", uniform_((width,), 1.0 / math.sqrt(width)))
        self.out_weight = uniform_((d_out, width), 1.0 / math.sqrt(width))
        self.out_bias = uniform_((d_out,), 1.0 / math.sqrt(width))

    def features(
        self, coords: Tensor, context: Tensor | None, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """ReLU features ``(B, P, width)``; see :meth:`INR.forward`."""
        h = linear(self.encoding(coords), self._w(weights, "w0"), self._w(weights, "b0"))
        if context is not None and self.c0 is not None:
            h = h + linear(context.reshape(context.shape[0], 1, -1), self._w(weights, "c0"), None)
        h = torch.relu(h)
        for i in range(1, self.depth):
            h = torch.relu(linear(h, self._w(weights, f"w{i}"), self._w(weights, f"b{i}")))
        return h

"""SIREN (Sitzmann et al., 2020): sine-activated MLP with its initialisation.

Used with CAVIA, the flattened context is concatenated to the input coordinates
(Zintgraf et al., 2019); the first layer is split into a coordinate part and a context
part so that the context's contribution is computed once per signal, not per point.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.inr.functional import linear, siren_bounds, uniform_


class Siren(INR):
    """``depth`` sine layers of ``width`` units and a linear head.

    Args:
        d_in: coordinate dimension.
        d_out: output channels.
        width: hidden units per layer.
        depth: number of sine layers.
        omega0: frequency factor of every sine layer.
        context_shape: ``(S, D)``; ``(0, 0)`` disables the context (plain MAML).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        width: int = 128,
        depth: int = 5,
        omega0: float = 30.0,
        context_shape: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__(d_in, d_out, context_shape)
        self.width, self.depth, self.omega0 = width, depth, omega0
        n_ctx = self.context_shape[0] * self.context_shape[1]
        fan0 = d_in + n_ctx
        b0 = siren_bounds(fan0, omega0, first=True)
        self.w0 = uniform_((width, d_in), b0)
        self.b0 = uniform_((width,), b0)
        self.c0 = uniform_((width, n_ctx), b0) if n_ctx else None
        bh = siren_bounds(width, omega0, first=False)
        for i in range(1, depth):
            setattr(self, f"w{i}", uniform_((width, width), bh))
            setattr(self, f"b{i}", uniform_((width,), 1.0 / width))
        self.out_weight = uniform_((d_out, width), bh)
        self.out_bias = uniform_((d_out,), 1.0 / width)

    def features(
        self, coords: Tensor, context: Tensor | None, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """Sine features ``(B, P, width)``; see :meth:`INR.forward`."""
        h = linear(coords, self._w(weights, "w0"), self._w(weights, "b0"))
        if context is not None and self.c0 is not None:
            ctx = context.reshape(context.shape[0], 1, -1)
            h = h + linear(ctx, self._w(weights, "c0"), None)
        h = torch.sin(self.omega0 * h)
        for i in range(1, self.depth):
            h = torch.sin(
                self.omega0 * linear(h, self._w(weights, f"w{i}"), self._w(weights, f"b{i}"))
            )
        return h

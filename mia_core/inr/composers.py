"""Composers-style low-rank INR (Kim et al., 2023; as used by MIA, appendix B).

The second layer's weight is ``W_n = U V_n``: ``U (width, S)`` is shared, the context
``V_n (S, width)`` is per signal. Computing ``(h V_n^T) U^T`` never materialises
``W_n``; when the coordinates are shared across signals, ``h V^T`` for the whole batch
is a single GEMM of width ``B * S`` instead of ``B`` thin ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.inr.functional import kaiming_bound, linear, uniform_
from mia_core.inr.relu_ff import FourierFeatures


class _ProjectContext(torch.autograd.Function):
    """``t = h V^T`` for per-signal ``h (B, P, W)`` and ``V (B, S, W)``, ``S << W``.

    The forward is ``torch.bmm(h, V^T)`` itself. The backward forms ``V``'s gradient as
    ``g^T h`` (``S`` output rows) instead of autograd's ``(h^T g)^T`` (``S`` output
    columns), which CPU GEMMs run several times faster; it is written with ordinary ops,
    so it is differentiated again for second-order meta-gradients.
    """

    @staticmethod
    def forward(ctx, h: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(h, v)
        return torch.bmm(h, v.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        h, v = ctx.saved_tensors
        grad_h = torch.bmm(grad, v) if ctx.needs_input_grad[0] else None
        grad_v = torch.bmm(grad.transpose(1, 2), h) if ctx.needs_input_grad[1] else None
        return grad_h, grad_v


class ComposersINR(INR):
    """ReLU MLP (optional Fourier features) with a low-rank, context-composed layer.

    Args:
        d_in: coordinate dimension.
        d_out: output channels.
        width: hidden units; also the context width ``D``.
        depth: number of ReLU layers (>= 2; layer 1 is the composed one).
        rank: context tokens ``S`` (the rank of ``U V_n``).
        ff_sigma: Fourier feature scale; 0 feeds raw coordinates.
        ff_features: number of random frequencies.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        width: int = 128,
        depth: int = 5,
        rank: int = 8,
        ff_sigma: float = 0.0,
        ff_features: int = 64,
    ) -> None:
        super().__init__(d_in, d_out, (rank, width))
        if depth < 2:
            raise ValueError("Composers needs depth >= 2 (layer 1 is the composed layer)")
        self.width, self.depth, self.rank = width, depth, rank
        self.encoding = FourierFeatures(d_in, ff_features, ff_sigma)
        fan0 = self.encoding.d_out
        self.w0 = uniform_((width, fan0), kaiming_bound(fan0))
        self.b0 = uniform_((width,), 1.0 / math.sqrt(fan0))
        # U V_n should start like a He-initialised width x width matrix when V_n has
        # unit-scale rows: Var(U V) = S Var(U) Var(V) = 2 / width.
        self.u = torch.nn.Parameter(torch.randn(width, rank) * math.sqrt(2.0 / (width * rank)))
        self.b1 = uniform_((width,), 1.0 / math.sqrt(width))
        for i in range(2, depth):
            setattr(self, f"w{i}", uniform_((width, width), kaiming_bound(width)))
            setattr(self, f"b{i}", uniform_((width,), 1.0 / math.sqrt(width)))
        self.out_weight = uniform_((d_out, width), 1.0 / math.sqrt(width))
        self.out_bias = uniform_((d_out,), 1.0 / math.sqrt(width))
        with torch.no_grad():
            self.context_init.normal_()

    def features(
        self, coords: Tensor, context: Tensor | None, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """ReLU features ``(B, P, width)``; see :meth:`INR.forward`."""
        if context is None:
            raise ValueError("ComposersINR needs a context (B, rank, width)")
        h = torch.relu(
            linear(self.encoding(coords), self._w(weights, "w0"), self._w(weights, "b0"))
        )
        bsz, s, _ = context.shape
        u, b1 = self._w(weights, "u"), self._w(weights, "b1")
        if h.shape[0] == 1 and bsz > 1:
            # Shared coordinates: one GEMM (P, W) x (W, B*S) for the whole batch.
            t = torch.matmul(h[0], context.reshape(bsz * s, -1).t())
            t = t.reshape(h.shape[1], bsz, s).transpose(0, 1)
            h = torch.relu(linear(t, u, b1))
        else:
            h = h.expand(bsz, *h.shape[1:])
            # For one signal the thin GEMMs are small and the Python backward would cost more.
            t = _ProjectContext.apply(h, context) if bsz > 1 else torch.bmm(h, context.mT)
            if u.dim() == 2 and b1.dim() == 1:
                # With U^T as a contiguous (S, W) copy, autograd forms U's gradient as
                # t^T g and t's as g U: the fast layouts for a thin S (same forward values).
                a = torch.mm(t.reshape(-1, s), u.t().contiguous()) + b1
                h = torch.relu(a.view(bsz, -1, u.shape[0]))
            else:
                h = torch.relu(linear(t, u, b1))
        for i in range(2, self.depth):
            h = torch.relu(linear(h, self._w(weights, f"w{i}"), self._w(weights, f"b{i}")))
        return h

"""Composers-style low-rank INR (Kim et al., 2023; as used by MIA, appendix B).

The second layer's weight is ``W_n = U V_n``: ``U (width, S)`` is shared, the context
``V_n (S, width)`` is per signal. Computing ``(h V_n^T) U^T`` never materialises
``W_n``; when the coordinates are shared across signals, ``h V^T`` for the whole batch
is a single GEMM of width ``B * S`` instead of ``B`` thin ones.

Two layouts (``LAYOUTS``): ``legacy`` has ``depth`` ReLU layers plus the linear head
(``depth + 1`` linear layers) and a bias on the composed layer; ``paper`` is App. B's
``depth``-layer MLP, head included (5 linear layers for ``depth=5``: input, composed,
two hidden, head), with no bias on the composed layer, as in the official MIA code's
low-rank layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.inr.functional import kaiming_bound, linear, uniform_
from mia_core.inr.relu_ff import FourierFeatures

LAYOUTS = ("legacy", "paper")


class _ProjectContext(torch.autograd.Function):
    """``t = h V^T`` for per-signal ``h (B, P, W)`` and ``V (B, S, W)``, ``S << W``.

    The forward is ``torch.bmm(h, V^T)`` itself. The backward forms ``V``'s gradient as
    ``g^T h`` (``S`` output rows) instead of autograd's ``(h^T g)^T`` (``S`` output
    columns), which CPU GEMMs run several times faster; it is written with ordinary ops,
    so it is differentiated again for second-order meta-gradients. Under autocast the
    forward is autocast's low-precision bmm and the backward runs in the inputs' dtype.
    """

    @staticmethod
    def forward(ctx, h: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(h, v)
        return torch.bmm(h, v.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        h, v = ctx.saved_tensors
        # Under autocast the forward's bmm ran in bf16/fp16 while h and V were saved in
        # their own dtype: the incoming gradient is cast back, so each gradient has its
        # input's dtype (as autograd's own bmm backward does).
        grad = grad.to(v.dtype)
        grad_h = torch.bmm(grad, v) if ctx.needs_input_grad[0] else None
        grad_v = torch.bmm(grad.transpose(1, 2), h) if ctx.needs_input_grad[1] else None
        return grad_h, grad_v


class ComposersINR(INR):
    """ReLU MLP (optional Fourier features) with a low-rank, context-composed layer.

    Args:
        d_in: coordinate dimension.
        d_out: output channels.
        width: hidden units; also the context width ``D``.
        depth: ``legacy``: ReLU layers (>= 2; layer 1 is the composed one), the head
            comes on top; ``paper``: linear layers including the head (>= 3).
        rank: context tokens ``S`` (the rank of ``U V_n``).
        ff_sigma: Fourier feature scale; 0 feeds raw coordinates.
        ff_features: number of random frequencies.
        layout: one of ``LAYOUTS`` (see the module docstring).
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
        layout: str = "legacy",
    ) -> None:
        super().__init__(d_in, d_out, (rank, width))
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        paper = layout == "paper"
        if depth < (3 if paper else 2):
            raise ValueError(
                f"Composers ({layout} layout) needs depth >= {3 if paper else 2}: "
                "an input layer, the composed layer" + (" and the head" if paper else "")
            )
        self.width, self.depth, self.rank, self.layout = width, depth, rank, layout
        # ReLU layers: w0, the composed layer, then plain ones up to n_relu - 1.
        self.n_relu = depth - 1 if paper else depth
        self.encoding = FourierFeatures(d_in, ff_features, ff_sigma)
        fan0 = self.encoding.d_out
        self.w0 = uniform_((width, fan0), kaiming_bound(fan0))
        self.b0 = uniform_((width,), 1.0 / math.sqrt(fan0))
        # U V_n should start like a He-initialised width x width matrix when V_n has
        # unit-scale rows: Var(U V) = S Var(U) Var(V) = 2 / width.
        self.u = torch.nn.Parameter(torch.randn(width, rank) * math.sqrt(2.0 / (width * rank)))
        self.b1 = None if paper else uniform_((width,), 1.0 / math.sqrt(width))
        for i in range(2, self.n_relu):
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
        h = self._coordinate_layers(
            coords,
            weights,
            lambda: torch.relu(
                linear(self.encoding(coords), self._w(weights, "w0"), self._w(weights, "b0"))
            ),
        )
        bsz, s, _ = context.shape
        u = self._w(weights, "u")
        b1 = None if self.b1 is None else self._w(weights, "b1")
        if h.shape[0] == 1 and bsz > 1:
            # Shared coordinates: one GEMM (P, W) x (W, B*S) for the whole batch.
            t = torch.matmul(h[0], context.reshape(bsz * s, -1).t())
            t = t.reshape(h.shape[1], bsz, s).transpose(0, 1)
            h = torch.relu(linear(t, u, b1))
        else:
            h = h.expand(bsz, *h.shape[1:])
            # For one signal the thin GEMMs are small and the Python backward would cost more.
            t = _ProjectContext.apply(h, context) if bsz > 1 else torch.bmm(h, context.mT)
            if u.dim() == 2 and (b1 is None or b1.dim() == 1):
                # With U^T as a contiguous (S, W) copy, autograd forms U's gradient as
                # t^T g and t's as g U: the fast layouts for a thin S (same forward values).
                a = torch.mm(t.reshape(-1, s), u.t().contiguous())
                a = a if b1 is None else a + b1
                h = torch.relu(a.view(bsz, -1, u.shape[0]))
            else:
                h = torch.relu(linear(t, u, b1))
        for i in range(2, self.n_relu):
            h = torch.relu(linear(h, self._w(weights, f"w{i}"), self._w(weights, f"b{i}")))
        return h

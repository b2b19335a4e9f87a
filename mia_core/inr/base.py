"""The interface every INR family implements.

An INR maps coordinates ``(B, P, d_in)`` to values ``(B, P, d_out)`` given a per-signal
context ``(B, S, D)``. Shared weights (theta) are ordinary parameters; the initial
context (phi) is the parameter ``context_init`` of shape ``(S, D)``. ``forward`` accepts
an optional mapping of weight overrides, which is how the inner loop evaluates adapted
(per-signal, batched) weights functionally.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from mia_core.inr.functional import linear


class INR(nn.Module, abc.ABC):
    """Base class: batched coordinate network with per-signal context.

    Attributes:
        d_in: coordinate dimension.
        d_out: value dimension (channels).
        context_shape: ``(S, D)`` of the adapted context; ``(0, 0)`` when the family is
            used without context (plain MAML).
    """

    d_in: int
    d_out: int
    context_shape: tuple[int, int]

    def __init__(self, d_in: int, d_out: int, context_shape: tuple[int, int]) -> None:
        super().__init__()
        self.d_in = d_in
        self.d_out = d_out
        self.context_shape = (int(context_shape[0]), int(context_shape[1]))
        n = self.context_shape[0] * self.context_shape[1]
        self.context_init = nn.Parameter(torch.zeros(self.context_shape)) if n else None
        self._coordinate_memo: dict[tuple[int, int], tuple[Tensor, Tensor]] | None = None

    @contextlib.contextmanager
    def reusing_coordinate_layers(self) -> Iterator[None]:
        """Compute the layers that see only the coordinates once per coordinate tensor.

        Inside, the first layer's activations (Fourier features, ``w0``, ``b0``: nothing
        adapted when only the context is) are kept per coordinate tensor and reused by
        every later forward on the same tensor: the inner loop evaluates the same support
        points ``K`` times, and autograd then sums their gradients into one node instead
        of back-propagating ``K`` copies through the first layer. Values are identical
        (only the order of a floating-point sum of gradients changes). A forward with a
        ``w0`` / ``b0`` override (weight adaptation) is never reused.
        """
        outer = self._coordinate_memo
        self._coordinate_memo = {} if outer is None else outer
        try:
            yield
        finally:
            self._coordinate_memo = outer

    def _coordinate_layers(
        self, coords: Tensor, weights: Mapping[str, Tensor] | None, compute: Callable[[], Tensor]
    ) -> Tensor:
        """``compute()`` (the coordinate-only first layer), memoised while reusing."""
        memo = self._coordinate_memo
        if memo is None or (weights is not None and ("w0" in weights or "b0" in weights)):
            return compute()
        key = (id(coords), coords._version)
        hit = memo.get(key)
        if hit is not None and hit[0] is coords:
            return hit[1]
        out = compute()
        memo[key] = (coords, out)  # holding coords keeps its id from being reused
        return out

    def weight_names(self) -> list[str]:
        """Names of the shared INR weights (theta), excluding ``context_init``."""
        return [k for k, _ in self.named_parameters() if k != "context_init"]

    def weights(self) -> dict[str, Tensor]:
        """The shared INR weights (theta) by name."""
        return {k: v for k, v in self.named_parameters() if k != "context_init"}

    def initial_context(self, batch: int) -> Tensor | None:
        """``(B, S, D)`` view of the meta-learned initial context (no copy)."""
        if self.context_init is None:
            return None
        return self.context_init.unsqueeze(0).expand(batch, *self.context_shape)

    def _w(self, weights: Mapping[str, Tensor] | None, name: str) -> Tensor:
        if weights is not None and name in weights:
            return weights[name]
        return getattr(self, name)

    def forward(
        self,
        coords: Tensor,
        context: Tensor | None,
        weights: Mapping[str, Tensor] | None = None,
        return_features: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Evaluate the INR.

        Args:
            coords: ``(B, P, d_in)``, or ``(1, P, d_in)`` when all signals share the
                coordinates (the shared part of the network is then computed once).
            context: ``(B, S, D)`` per-signal context, or ``None`` for context-free use.
            weights: optional overrides of shared weights by name, each either shared
                (parameter shape) or per-signal (leading ``B``).
            return_features: also return the penultimate features ``(B, P, W)``, the
                input of the last linear layer (used to score points for pruning).

        Returns:
            ``(B, P, d_out)`` values, and the features when requested.
        """
        feats = self.features(coords, context, weights)
        out = self.head(feats, weights)
        return (out, feats) if return_features else out

    @abc.abstractmethod
    def features(
        self, coords: Tensor, context: Tensor | None, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """Penultimate features ``(B, P, W)``; implemented by each family."""

    def head(self, feats: Tensor, weights: Mapping[str, Tensor] | None) -> Tensor:
        """Final linear layer ``(B, P, W) -> (B, P, d_out)``.

        A width-1 output is a multiply-and-sum rather than a GEMM, which is several
        times faster on CPU for the per-signal-weight case.
        """
        w = self._w(weights, "out_weight")
        b = self._w(weights, "out_bias")
        if w.dim() == 3 and feats.shape[0] == 1 and w.shape[0] > 1:
            # shared features, per-signal heads (closed-form heads, decoding patches): one
            # GEMM instead of a (B, P, W) product
            out = torch.einsum("pw,bcw->bpc", feats[0], w)
            return out + (b if b.dim() == 1 else b.unsqueeze(1))
        if self.d_out == 1:
            if w.dim() == 2:
                out = torch.matmul(feats, w.t())
            else:
                out = (feats * w[:, None, 0, :]).sum(-1, keepdim=True)
            return out + (b if b.dim() == 1 else b.unsqueeze(1))
        return linear(feats, w, b)

"""Batched functional layers shared by every INR family.

Every weight may be *shared* (no batch dimension) or *per-signal* (a leading batch
dimension ``B``). Per-signal weights are how MAML adapts all INR weights of a batch of
signals in one autograd call, without copying modules.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Affine map with shared or per-signal weights.

    Args:
        x: ``(B, P, d_in)`` inputs; ``B`` may be 1 when coordinates are shared.
        weight: ``(d_out, d_in)`` shared or ``(B, d_out, d_in)`` per-signal.
        bias: ``(d_out,)`` shared, ``(B, d_out)`` per-signal, or ``None``.

    Returns:
        ``(B, P, d_out)``.
    """
    if weight.dim() == 2:
        out = torch.matmul(x, weight.t())
    else:
        if x.shape[0] != weight.shape[0]:
            x = x.expand(weight.shape[0], *x.shape[1:])
        out = torch.bmm(x, weight.transpose(1, 2))
    if bias is not None:
        out = out + (bias if bias.dim() == 1 else bias.unsqueeze(1))
    return out


def uniform_(shape: tuple[int, ...], bound: float) -> torch.nn.Parameter:
    """Return a parameter drawn from ``U(-bound, bound)``."""
    return torch.nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def siren_bounds(fan_in: int, omega0: float, first: bool) -> float:
    """SIREN initialisation bound (Sitzmann et al., 2020, Sec. 3.2).

    The first layer spans ``[-1/fan_in, 1/fan_in]``; later layers
    ``[-sqrt(6/fan_in)/omega0, sqrt(6/fan_in)/omega0]`` so that pre-activations stay
    roughly unit-normal through the sine stack.
    """
    if first:
        return 1.0 / fan_in
    return math.sqrt(6.0 / fan_in) / omega0


def kaiming_bound(fan_in: int) -> float:
    """He-uniform bound for ReLU layers."""
    return math.sqrt(6.0 / fan_in)

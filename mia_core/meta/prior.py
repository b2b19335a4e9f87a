"""A support-dependent prior pulling the adapted tensors toward the meta-initialisation.

With few support points the inner loop overfits them (MIA on HadCM3 at 0.1-1 % support:
error 0.009 on the support, 0.283 on the rest of the field). A Gaussian prior centred
on the meta-learned initialisation ``theta`` (a MAP estimate instead of a maximum
likelihood one) adds, per signal ``b`` and modality ``m``, to the inner loss

    w_m(n_b) * mean_i (phi_b,i - theta_i)^2,    w_m(n) = lambda_m / (1 + n / n0_m),

with ``n_b`` the signal's support points and the mean over every adapted element of the
modality. The inner loss is a mean over the support points, so a MAP prior's weight
falls as ``1 / n``: ``w`` is ``lambda`` at a handful of points and vanishes at thousands
(``lambda n0 / n``). ``lambda_m`` and ``n0_m`` are fixed, or learned per modality
(meta-parameters, in log space).

The term enters the inner step as its gradient, ``2 w (phi - theta) / N_m``, added to
the support-loss gradient before the update rule sees it, so every rule that reads
the inner gradient (SGD, MetaSGD, GAP, ALFA, the SFT) gets it. The gradient is written
out rather than taken by ``autograd.grad``: it is exact, and it keeps its graph even in
first-order mode, so a learned ``lambda`` is meta-learned there too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mia_core.adapt.base import Params


class PriorPull(nn.Module):
    """Support-dependent pull of the adapted tensors toward the meta-initialisation.

    Args:
        modalities: modality names (one strength per modality).
        strength: initial (or fixed) ``lambda``, > 0.
        n0: initial (or fixed) support count ``n0`` at which the pull has halved, > 0.
        learned: meta-learn ``log lambda_m`` and ``log n0_m``; otherwise they are
            constants (not saved in the state dict: the config holds them).
    """

    def __init__(
        self, modalities: Sequence[str], strength: float, n0: float = 10.0, learned: bool = False
    ) -> None:
        super().__init__()
        if not (strength > 0 and n0 > 0):
            raise ValueError(f"prior pull strength and n0 must be > 0, got {strength}, {n0}")
        self.modalities = list(modalities)
        self.learned = learned
        size = len(self.modalities)
        log_l = torch.full((size,), math.log(strength))
        log_n0 = torch.full((size,), math.log(n0))
        if learned:
            self.log_strength = nn.Parameter(log_l)
            self.log_n0 = nn.Parameter(log_n0)
        else:
            self.register_buffer("log_strength", log_l, persistent=False)
            self.register_buffer("log_n0", log_n0, persistent=False)

    def weight(self, modality: str, counts: Tensor) -> Tensor:
        """``(B,)`` pull weights ``lambda_m / (1 + n / n0_m)`` for support counts ``(B,)``."""
        i = self.modalities.index(modality)
        n = counts.to(self.log_strength.dtype)
        return torch.exp(self.log_strength[i]) / (1.0 + n / torch.exp(self.log_n0[i]))

    def forward(
        self,
        params: Params,
        anchor: Params,
        counts: Mapping[str, Tensor],
        groups: Mapping[str, str],
    ) -> tuple[Tensor, Params]:
        """The prior's value and its gradient with respect to ``params``.

        Args:
            params: key -> ``(B, *shape)`` adapted tensors.
            anchor: key -> ``(B or 1, *shape)`` meta-initialisation (differentiable).
            counts: modality -> ``(B,)`` support points of each signal.
            groups: key -> modality.

        Returns:
            ``(penalty, grads)``: the scalar sum over signals of the prior term (as it
            would enter the inner loss) and key -> ``(B, *shape)`` its gradient.
        """
        sizes: dict[str, int] = {}
        for key, p in params.items():
            sizes[groups[key]] = sizes.get(groups[key], 0) + p[0].numel()
        penalty = torch.zeros((), dtype=self.log_strength.dtype, device=self.log_strength.device)
        grads = {}
        for key, p in params.items():
            m = groups[key]
            w = self.weight(m, counts[m]).to(p.dtype) / sizes[m]
            diff = p - anchor[key]
            w_b = w.reshape(-1, *([1] * (p.dim() - 1)))
            grads[key] = 2.0 * w_b * diff
            penalty = penalty + (w * diff.square().flatten(1).sum(1)).sum()
        return penalty, grads


__all__ = ["PriorPull"]

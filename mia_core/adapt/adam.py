"""Batched Adam: one independent Adam state per signal of the batch (test-time fitting).

Used where signals are fitted from a shared start with a fixed step budget (encoding a
store's time steps, test-time continual learning). Each slice ``[b]`` of every tensor
follows exactly the trajectory ``torch.optim.Adam`` would give it alone: the moments are
element-wise, so a leading batch dimension keeps the signals apart for free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from mia_core.adapt.base import Params, UpdateRule


class Adam(UpdateRule):
    """Bias-corrected Adam (Kingma & Ba, 2015), no weight decay, fixed hyper-parameters.

    The update is out-of-place, so it stays differentiable when the gradients carry a
    graph; nothing is meta-learned. The state counts its own steps (like
    ``torch.optim.Adam``), so the ``step`` argument of :meth:`update` is not used and a
    fresh :meth:`init_state` restarts the bias correction.

    Args:
        shapes: key -> unbatched shape.
        groups: key -> modality (unused: every element is independent).
        lr: step size.
        betas: decay rates ``(beta1, beta2)`` of the first and second moments.
        eps: added to the root of the second moment.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        groups: Mapping[str, str],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(shapes, groups)
        self.lr, self.eps = float(lr), float(eps)
        self.betas = (float(betas[0]), float(betas[1]))

    def init_state(self, params: Params) -> dict:
        """Zero moments shaped like ``params`` (``(B, *shape)`` each) and step count 0."""
        return {
            "step": 0,
            "exp_avg": {k: torch.zeros_like(p) for k, p in params.items()},
            "exp_avg_sq": {k: torch.zeros_like(p) for k, p in params.items()},
        }

    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """See :meth:`UpdateRule.update`; the returned state holds the new moments."""
        b1, b2 = self.betas
        t = state["step"] + 1
        step_size = self.lr / (1 - b1**t)
        root_bc2 = math.sqrt(1 - b2**t)
        new, m1, m2 = {}, {}, {}
        for k, p in params.items():
            g = grads[k]
            m1[k] = state["exp_avg"][k].lerp(g, 1 - b1)
            m2[k] = torch.addcmul(state["exp_avg_sq"][k] * b2, g, g, value=1 - b2)
            denom = m2[k].sqrt() / root_bc2 + self.eps
            new[k] = torch.addcdiv(p, m1[k], denom, value=-step_size)
        return new, {"step": t, "exp_avg": m1, "exp_avg_sq": m2}, {}

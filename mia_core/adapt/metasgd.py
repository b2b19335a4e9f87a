"""MetaSGD (Li et al., 2017): a meta-learned learning rate per adapted element (and step)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mia_core.adapt.base import Params, UpdateRule, safe_key


class MetaSGD(UpdateRule):
    """``phi <- phi - clamp(alpha, lo, hi) * g`` with ``alpha`` shaped like ``phi``.

    Args:
        shapes: key -> unbatched shape.
        groups: key -> modality.
        lr: initial value of every rate (MIA uses 1.0).
        clamp: ``(lo, hi)`` bounds applied in the forward pass; keeps rates from going
            negative or exploding early in meta-training.
        steps: 0 for one rate per element; ``K > 0`` for one per element and inner step
            (``(K, *shape)``); a step ``>= K`` (an encoder running longer than it was
            meta-trained for) uses the last step's rates.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        groups: Mapping[str, str],
        lr: float = 1.0,
        clamp: tuple[float, float] = (0.0, 10.0),
        steps: int = 0,
    ) -> None:
        super().__init__(shapes, groups)
        self.clamp = (float(clamp[0]), float(clamp[1]))
        self.steps = int(steps)
        lead = (self.steps,) if self.steps > 0 else ()
        self.rates = nn.ParameterDict(
            {
                safe_key(k): nn.Parameter(torch.full((*lead, *s), float(lr)))
                for k, s in self.shapes.items()
            }
        )

    def rate(self, key: str, step: int) -> torch.Tensor:
        """The clamped rates of ``key`` at inner step ``step`` (0-based)."""
        r = self.rates[safe_key(key)]
        if self.steps > 0:
            r = r[min(step, self.steps - 1)]
        return r.clamp(*self.clamp)

    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """See :meth:`UpdateRule.update`."""
        new = {k: p - self.rate(k, step) * grads[k] for k, p in params.items()}
        return new, state, {}

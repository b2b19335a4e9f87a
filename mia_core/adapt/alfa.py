"""ALFA (Baik et al., 2020/2023): predicted per-token learning rates and weight decay.

Per adapted tensor viewed as ``(S, F)`` tokens, a 2-layer ReLU MLP reads the
feature-averaged gradient and parameters ``[mean_F g, mean_F phi]`` (``2S`` numbers per
signal) and predicts ``(a, b)`` in ``R^S`` each; the update is
``phi <- beta * phi - alpha * g`` with ``alpha = lr * alpha0 * (1 + a)`` and
``beta = beta0 * (1 + b)``; ``alpha0, beta0`` are meta-learned base vectors initialised
to one. The MLP's last layer starts at zero, so an untrained ALFA equals SGD.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mia_core.adapt.base import Params, UpdateRule, safe_key


class ALFA(UpdateRule):
    """Adaptive learning rate and weight decay per token.

    Args:
        shapes: key -> unbatched shape; the first axis is the token axis.
        groups: key -> modality.
        lr: base learning rate.
        hidden: hidden width of the predictor MLP.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        groups: Mapping[str, str],
        lr: float = 1.0,
        hidden: int = 32,
    ) -> None:
        super().__init__(shapes, groups)
        self.lr = float(lr)
        self.nets = nn.ModuleDict()
        self.alpha0 = nn.ParameterDict()
        self.beta0 = nn.ParameterDict()
        for k, s in self.shapes.items():
            tokens = s[0] if s else 1
            net = nn.Sequential(
                nn.Linear(2 * tokens, hidden), nn.ReLU(), nn.Linear(hidden, 2 * tokens)
            )
            nn.init.zeros_(net[2].weight)
            nn.init.zeros_(net[2].bias)
            self.nets[safe_key(k)] = net
            self.alpha0[safe_key(k)] = nn.Parameter(torch.ones(tokens))
            self.beta0[safe_key(k)] = nn.Parameter(torch.ones(tokens))

    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """See :meth:`UpdateRule.update`."""
        new = {}
        for k, p in params.items():
            sk = safe_key(k)
            tokens = self.shapes[k][0] if self.shapes[k] else 1
            g = grads[k].reshape(p.shape[0], tokens, -1)
            phi = p.reshape(p.shape[0], tokens, -1)
            a, b = self.nets[sk](torch.cat([g.mean(-1), phi.mean(-1)], dim=-1)).chunk(2, dim=-1)
            alpha = self.lr * self.alpha0[sk] * (1 + a)
            beta = self.beta0[sk] * (1 + b)
            new[k] = (beta.unsqueeze(-1) * phi - alpha.unsqueeze(-1) * g).reshape(p.shape)
        return new, state, {}

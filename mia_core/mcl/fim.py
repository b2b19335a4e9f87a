"""Fisher Information Maximization (FIM) loss: per-sample weights from the score.

``w_j = 1 + lambda * g_j^T F^-1 g_j / D`` with ``g_j = d log p(s_j | s_hat_j) / d theta``
the score of point ``j`` under a unit-variance Gaussian likelihood, ``F`` a running
diagonal empirical Fisher (an exponential moving average of the per-point ``g_j^2``)
and ``D`` the number of parameters in ``theta``. Dividing by ``D`` (``normalise``, the
default) is our choice: with ``F`` estimated on the same points the weights then average
``1 + lambda`` whatever the network size, so ``lambda`` means the same for every INR.
``normalise=False`` is the paper's Eq. 3, ``w_j = 1 + lambda g_j^T F^-1 g_j``, whose
weights average ``1 + lambda D``: the project's ``lambda`` is ``D`` times the paper's.

Approximations of the paper's ``F^-1`` (documented, as the paper gives no recipe): ``F``
is diagonal, empirical (squared per-point scores, not expected under the model),
restricted to the output layer, an EMA over inner steps, damped by ``1e-3 mean(F)``.

``theta`` is the INR's output layer (``out_weight``, ``out_bias``). Its per-point score
has a closed form, ``g_j = r_j (x) [h_j, 1]`` with ``r_j = s_j - s_hat_j`` and ``h_j``
the penultimate features, so the weights cost one pass over the features instead of
``P`` backward passes. The weights are constants of the loss (detached): they re-weight
points, they are not optimised. ``F`` is updated before the weights are computed (a
zero initial ``F`` has no inverse). Damping: ``F + eps * mean(F)``.

:class:`FIMLearner` is the hook for the other meta-learners: the same weighting inside
:class:`~mia_core.meta.learner.MetaLearner`'s inner and outer losses (``method.fim_lambda``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mia_core.meta.learner import MetaLearner
from mia_core.meta.metrics import masked_mse

EPS = 1e-3


def head_score_squares(residual: Tensor, feats: Tensor) -> Tensor:
    """Per-point squared score of the output layer, factorised.

    Args:
        residual: ``(B, P, C)`` ``s - s_hat``.
        feats: ``(B, P, W)`` penultimate features.

    Returns:
        ``(B, P, C, W + 1)``: ``g_j^2`` for ``[out_weight | out_bias]``.
    """
    h = _cat_one(feats)
    return residual.square().unsqueeze(-1) * h.square().unsqueeze(-2)


def _cat_one(feats: Tensor) -> Tensor:
    """``[h, 1]``: features with a constant 1 for the bias, ``(B, P, W + 1)``."""
    return torch.cat([feats, feats.new_ones(*feats.shape[:-1], 1)], -1)


def update_fisher(
    fisher: Tensor | None, residual: Tensor, feats: Tensor, mask: Tensor, decay: float
) -> Tensor:
    """One step of the running diagonal Fisher of the output layer.

    Args:
        fisher: ``(B, C, W + 1)`` previous estimate, or ``None`` to start from this batch.
        residual: ``(B, P, C)`` ``s - s_hat``.
        feats: ``(B, P, W)`` penultimate features.
        mask: ``(B, P)`` float, 1 where observed.
        decay: EMA factor (0 = this batch only).

    Returns:
        ``(B, C, W + 1)`` detached: masked mean of ``g_j^2`` over points, blended in.
    """
    r, h = residual.detach(), _cat_one(feats.detach())
    m = mask.detach()
    num = (r.square() * m.unsqueeze(-1)).transpose(1, 2) @ h.square()  # (B, C, W+1)
    batch = num / m.sum(1).clamp(min=1.0)[:, None, None]
    return batch if fisher is None else decay * fisher + (1.0 - decay) * batch


def fim_weights(
    residual: Tensor, feats: Tensor, fisher: Tensor, lam: float, normalise: bool = True
) -> Tensor:
    """``(B, P)`` detached weights ``1 + lam * g^T (F + damping)^-1 g [/ D]`` (module doc)."""
    r, h = residual.detach(), _cat_one(feats.detach())
    damp = EPS * fisher.mean(dim=(1, 2), keepdim=True) + 1e-12
    inv = 1.0 / (fisher + damp)  # (B, C, W+1)
    quad = (r.square() * (h.square() @ inv.transpose(1, 2))).sum(-1)  # (B, P)
    scale = fisher.shape[1] * fisher.shape[2] if normalise else 1
    return 1.0 + lam * quad / scale


def weighted_mse(pred: Tensor, target: Tensor, mask: Tensor, weights: Tensor | None) -> Tensor:
    """Per-signal ``(B,)`` mean over observed points of ``w_j * mean_c (pred - target)^2``."""
    se = (pred - target).square().mean(-1) * mask
    if weights is not None:
        se = se * weights
    return se.sum(1) / mask.sum(1).clamp(min=1.0)


class FIMLearner(MetaLearner):
    """A :class:`MetaLearner` whose inner and outer losses are FIM-weighted.

    The running Fisher of each modality restarts at inner step 0 of every
    :meth:`adapt` and is carried to the query loss, which updates it once more.

    Args:
        base: a built meta-learner; its modules are shared, not copied.
        lam: ``lambda`` (0 gives exactly the base losses).
        decay: EMA factor of the running Fisher.
        normalise: divide by ``D`` (module docstring); ``False``: the paper's form.
    """

    def __init__(
        self, base: MetaLearner, lam: float, decay: float = 0.9, normalise: bool = True
    ) -> None:
        super().__init__(
            dict(base.inrs.items()),
            base.rule,
            base.inner_steps,
            base.adapt_mode,
            base.first_order,
            base.pruning,
            base.log_vars is not None,
        )
        if base.log_vars is not None:
            self.log_vars = base.log_vars
        self.lam, self.decay, self.normalise = float(lam), float(decay), normalise
        self._fisher: dict[str, Tensor | None] = {}

    def _weighted(self, m: str, x: Tensor, y: Tensor, mask: Tensor, params) -> Tensor:
        pred, feats = self.predict(m, x, params, return_features=True)
        if self.lam == 0:
            return masked_mse(pred, y, mask)
        fisher = update_fisher(self._fisher.get(m), y - pred, feats, mask, self.decay)
        self._fisher[m] = fisher
        weights = fim_weights(y - pred, feats, fisher, self.lam, self.normalise)
        return weighted_mse(pred, y, mask, weights)

    def step(self, episode, params, state, k, create_graph, prune):
        """As :meth:`MetaLearner.step` with FIM-weighted support losses."""
        if k == 0:
            self._fisher = {}
        sets = self._support(episode, params, prune)
        loss = sum(self._weighted(m, x, y, mask, params).sum() for m, (x, y, mask) in sets.items())
        keys = list(params)
        grads = torch.autograd.grad(loss, [params[key] for key in keys], create_graph=create_graph)
        grads = {key: g for key, g in zip(keys, grads, strict=True)}
        return (*self.rule(params, grads, state, k), loss.detach())

    def query_losses(self, episode, params):
        """Modality -> FIM-weighted scalar query MSE (mean over signals)."""
        out = {}
        for m in self.modalities:
            mb = episode[m]
            out[m] = self._weighted(m, mb.query_x, mb.query_y, mb.query_mask, params).mean()
        return out

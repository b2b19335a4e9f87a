"""Closed-form INR heads: the last linear layer as a ridge regression on the features.

With ``method.head_ridge > 0`` (adapt mode ``head``) a signal is fitted by solving its
INR's last layer in closed form: with features ``phi (P, W)`` of the (meta-learned) trunk
at the support points, valid-point weights ``m`` and values ``y (P, C)``,

    [w; b] = (A^T M A + lambda I)^-1 A^T M y,    A = [phi, 1],

with ``lambda = ridge * trace(A^T M A) / (W + 1)`` (scale free). The solve is
differentiable, so the trunk is meta-learned through it (as in R2-D2, Bertinetto et al.,
ICLR 2019, for classifiers); encoding a signal costs one ``(W + 1)``-square solve instead
of ``K`` gradient steps, and its code is the head only.
"""

from __future__ import annotations

import torch
from torch import Tensor

HEAD_KEYS = ("out_weight", "out_bias")
EPS = 1e-6  # keeps the system regular for a signal without valid points


def ridge_head(feats: Tensor, y: Tensor, mask: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """Per-signal ridge solve of the last layer.

    Args:
        feats: ``(B, P, W)`` or shared ``(1, P, W)`` trunk features.
        y: ``(B, P, C)`` target values.
        mask: ``(B, P)`` weights (1 = counted).
        ridge: relative ridge ``lambda / (trace / (W + 1))``.

    Returns:
        ``weight (B, C, W)`` and ``bias (B, C)``.

    With shared features, signals with the same mask (every point valid, the common case,
    or the same edge padding or missing-value pattern, static in time) share one Gram
    matrix: one factorisation and one matrix product per distinct mask instead of one
    ``P x (W + 1)^2`` product and solve per signal. Per-signal features (training episodes
    draw their own points) are solved one signal at a time, batched.
    """
    b, c = y.shape[0], y.shape[-1]
    a = torch.cat([feats, torch.ones_like(feats[..., :1])], -1).float()
    mask = mask.float()
    if a.shape[0] != 1:
        wa = a * mask.unsqueeze(-1)
        gram = wa.transpose(1, 2) @ a  # (B, W+1, W+1)
        sol = torch.linalg.solve(_regular(gram, ridge), wa.transpose(1, 2) @ y.float())
        return sol[:, :-1].transpose(1, 2), sol[:, -1]
    sol = a.new_zeros(b, a.shape[-1], c)
    patterns, group = torch.unique(mask, dim=0, return_inverse=True)
    for g, pattern in enumerate(patterns):
        idx = (group == g).nonzero().squeeze(1)
        wa = a[0] * pattern[:, None]
        rhs = torch.einsum("pw,bpc->wbc", wa, y[idx].float()).reshape(a.shape[-1], -1)
        out = torch.linalg.solve(_regular((wa.T @ a[0])[None], ridge)[0], rhs)
        sol[idx] = out.reshape(-1, idx.numel(), c).transpose(0, 1)
    return sol[:, :-1].transpose(1, 2), sol[:, -1]


def _regular(gram: Tensor, ridge: float) -> Tensor:
    """``gram + (ridge * mean diag + EPS) I`` per matrix of ``(N, n, n)``."""
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp(min=EPS)
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return gram + (ridge * scale + EPS)[:, None, None] * eye


def head_keys(modality: str) -> tuple[str, str]:
    """Adapted-tensor names of ``modality``'s head (``<var>/out_weight``, ``<var>/out_bias``)."""
    return f"{modality}/{HEAD_KEYS[0]}", f"{modality}/{HEAD_KEYS[1]}"


__all__ = ["HEAD_KEYS", "head_keys", "ridge_head"]

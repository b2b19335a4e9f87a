"""Context pruning by last-layer gradient norm (GradNCP, Tack et al., 2023).

For a point with error ``e`` and last-layer input features ``h``, the gradient of its
squared error with respect to the last layer ``(W, b)`` has norm
``2 |e| sqrt(|h|^2 + 1)``: a forward pass scores every point, no backward pass needed.
The highest-scoring fraction of each signal's support set is kept for the
differentiable (memory-hungry) inner steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gradient_norm_scores(err: Tensor, feats: Tensor, mask: Tensor) -> Tensor:
    """Score points; padding gets ``-inf``.

    Args:
        err: ``(B, P, C)`` prediction error.
        feats: ``(B, P, W)`` last-layer input features.
        mask: ``(B, P)`` float support mask.

    Returns:
        ``(B, P)`` scores.
    """
    score = err.norm(dim=-1) * torch.sqrt(feats.square().sum(-1) + 1.0)
    return score.masked_fill(mask <= 0, float("-inf"))


def keep_counts(mask: Tensor, keep_ratio: float) -> Tensor:
    """``ceil(keep_ratio * n_b)`` points per signal, at least one unless ``n_b == 0``: ``(B,)``."""
    n = mask.sum(1)
    return torch.clamp(torch.ceil(n * keep_ratio - 1e-6).long(), min=1).minimum(n.long())


def select_top(
    scores: Tensor, mask: Tensor, keep_ratio: float, *tensors: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """Keep the top-scoring points of each signal.

    Args:
        scores: ``(B, P)`` from :func:`gradient_norm_scores`.
        mask: ``(B, P)`` float support mask.
        keep_ratio: fraction of each signal's support to keep, in ``(0, 1]``.
        *tensors: ``(B, P, ...)`` tensors to gather (coordinates, values).

    Returns:
        The new ``(B, K)`` float mask (``K`` = the largest count in the batch) and the
        gathered tensors ``(B, K, ...)``.
    """
    counts = keep_counts(mask, keep_ratio)
    k = int(counts.max())
    idx = torch.topk(scores, k, dim=1).indices
    rank = torch.arange(k, device=scores.device).expand_as(idx)
    new_mask = (rank < counts[:, None]).to(mask.dtype)
    out = []
    for t in tensors:
        shape = idx.shape + t.shape[2:]
        out.append(
            torch.gather(t, 1, idx.reshape(*idx.shape, *([1] * (t.dim() - 2))).expand(shape))
        )
    return new_mask, out


def default_keep(num_points: int, keep_ratio: float) -> int:
    """Number of points kept out of ``num_points`` (mirrors :func:`keep_counts`)."""
    return min(num_points, max(1, math.ceil(num_points * keep_ratio - 1e-6)))

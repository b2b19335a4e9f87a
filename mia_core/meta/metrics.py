"""Per-signal losses and metrics on masked point sets.

Metrics are computed per signal (``(B,)`` tensors) so callers can bin them by support
ratio and bootstrap them; a region with no points for a signal gives NaN, never a
silent zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

REGIONS = ("all", "support", "nonsupport")


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-signal mean squared error over masked points.

    Args:
        pred: ``(B, P, C)``.
        target: ``(B, P, C)``.
        mask: ``(B, P)`` float weights (1 = counted).

    Returns:
        ``(B,)``: mean over counted points and channels; 0 where no point counts.
    """
    se = (pred - target).square().mean(-1)
    return (se * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def psnr(mse: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB for a given peak-to-peak data range."""
    return 10.0 * torch.log10(data_range**2 / mse.clamp(min=1e-20))


@torch.no_grad()
def signal_metrics(
    pred: Tensor,
    target: Tensor,
    valid: Tensor,
    support: Tensor,
    scale: Tensor,
    data_range: float = 1.0,
) -> dict[str, Tensor]:
    """MSE, PSNR and normalised MSE on all, support and non-support points.

    Args:
        pred: ``(B, P, C)`` reconstruction on the query set.
        target: ``(B, P, C)`` ground truth.
        valid: ``(B, P)`` float, 1 for valid points.
        support: ``(B, P)`` float, 1 for points in the support set.
        scale: ``(B,)`` per-signal scale; ``nmse = mse / scale**2``.
        data_range: peak-to-peak range for PSNR.

    Returns:
        ``{"mse_all": (B,), "psnr_all": ..., "nmse_all": ..., "mse_support": ...}``.
    """
    out: dict[str, Tensor] = {}
    se = (pred - target).square().mean(-1)
    for region in REGIONS:
        if region == "all":
            m = valid
        elif region == "support":
            m = valid * support
        else:
            m = valid * (1.0 - support)
        count = m.sum(1)
        mse = (se * m).sum(1) / count.clamp(min=1.0)
        mse = torch.where(count > 0, mse, torch.full_like(mse, float("nan")))
        out[f"mse_{region}"] = mse
        out[f"psnr_{region}"] = psnr(mse, data_range)
        out[f"nmse_{region}"] = mse / scale.square()
    return out

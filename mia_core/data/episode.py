"""Episode tensors: per modality, a padded support set and the full query set.

Support sets have a different size per signal (ratio ``R ~ U(R_min, R_max)``), so they
are gathered into a padded ``(B, Ps_max, .)`` tensor with a float mask (float x float is
~5x faster than float x bool on CPU). The query set is every valid point of the signal,
with a second mask telling support points (memorisation) from the rest
(generalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class ModalityBatch:
    """One modality of a batch of ``B`` episodes.

    Attributes:
        support_x: ``(B, Ps, d_in)`` support coordinates (padded).
        support_y: ``(B, Ps, C)`` support values.
        support_mask: ``(B, Ps)`` float, 1 for real support points, 0 for padding.
        query_x: ``(B, Pq, d_in)`` or ``(1, Pq, d_in)`` when shared by all signals.
        query_y: ``(B, Pq, C)`` query values.
        query_mask: ``(B, Pq)`` float, 1 where the value is valid (not NaN/fill).
        query_support: ``(B, Pq)`` float, 1 where the query point is in the support.
        scale: ``(B,)`` per-signal scale for the normalised MSE (``mse / scale**2``).
    """

    support_x: Tensor
    support_y: Tensor
    support_mask: Tensor
    query_x: Tensor
    query_y: Tensor
    query_mask: Tensor
    query_support: Tensor
    scale: Tensor

    @property
    def batch_size(self) -> int:
        """Number of signals ``B``."""
        return self.query_y.shape[0]

    def to(
        self,
        device: torch.device | str,
        dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> ModalityBatch:
        """Move every tensor (floating ones optionally cast to ``dtype``).

        ``non_blocking`` copies from pinned memory (:meth:`pin_memory`) asynchronously.
        """
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            out[f.name] = t.to(
                device=device,
                dtype=dtype if dtype and t.is_floating_point() else None,
                non_blocking=non_blocking,
            )
        return ModalityBatch(**out)

    def pin_memory(self) -> ModalityBatch:
        """Every tensor in page-locked memory (for asynchronous copies to a GPU)."""
        return ModalityBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def select(self, index: Tensor | slice) -> ModalityBatch:
        """Sub-batch of signals (shared query coordinates stay shared)."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            out[f.name] = t if (f.name == "query_x" and t.shape[0] == 1) else t[index]
        return ModalityBatch(**out)


Episode = dict[str, ModalityBatch]


def sample_support(
    x: Tensor,
    y: Tensor,
    valid: Tensor,
    ratio_range: tuple[float, float],
    generator: torch.Generator,
    scale: Tensor | None = None,
) -> ModalityBatch:
    """Draw a support set per signal and build the modality batch (vectorised).

    Each signal ``b`` gets ``n_b = max(1, round(R_b * valid_b))`` support points drawn
    uniformly without replacement among its valid points, ``R_b ~ U(R_min, R_max)``
    (none when it has no valid point).

    Args:
        x: ``(B, P, d)`` or ``(1, P, d)`` coordinates.
        y: ``(B, P, C)`` values.
        valid: ``(B, P)`` bool, False for NaN/fill values.
        ratio_range: ``(R_min, R_max)`` with ``0 < R_min <= R_max <= 1``.
        generator: CPU generator, so episodes are reproducible from a seed.
        scale: ``(B,)`` normalisation scale; ones when omitted.

    Returns:
        The :class:`ModalityBatch`; ``query_x`` keeps ``x``'s batch dimension.
    """
    bsz, npts = y.shape[:2]
    lo, hi = ratio_range
    ratio = lo + (hi - lo) * torch.rand(bsz, generator=generator)
    n_valid = valid.sum(1)
    n_sup = torch.clamp(torch.round(ratio * n_valid.float()).long(), min=1)
    n_sup = torch.minimum(n_sup, n_valid)  # a signal without valid points gets none
    keys = torch.rand(bsz, npts, generator=generator).masked_fill(~valid.cpu(), 2.0)
    order = keys.argsort(dim=1).to(y.device)
    ps = int(n_sup.max())
    idx = order[:, :ps]
    rank = torch.arange(ps, device=y.device).expand(bsz, ps)
    sup_mask = (rank < n_sup.to(y.device)[:, None]).to(y.dtype)
    xb = x.expand(bsz, *x.shape[1:])
    sx = torch.gather(xb, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
    sy = torch.gather(torch.nan_to_num(y), 1, idx[..., None].expand(-1, -1, y.shape[-1]))
    q_sup = torch.zeros(bsz, npts, dtype=y.dtype, device=y.device)
    q_sup.scatter_(1, idx, sup_mask)
    return ModalityBatch(
        support_x=sx,
        support_y=sy,
        support_mask=sup_mask,
        query_x=x,
        query_y=torch.nan_to_num(y),
        query_mask=valid.to(y.dtype),
        query_support=q_sup,
        scale=torch.ones(bsz, dtype=y.dtype, device=y.device) if scale is None else scale,
    )

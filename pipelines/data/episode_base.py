"""A fitted base reconstruction under the INR: the network learns what the base misses.

``data.residual_base: eof | mv_eof`` puts a classical reconstruction from the support set
(:mod:`pipelines.reports.classical_eof`, fitted on the train split, ``k`` chosen on
validation) under the meta-learned INR. Per signal the base predicts every query point
from the support points alone; the INR adapts to, and is scored on, the residual
``y - base``. The prediction is ``base + INR``, so ``pred - y`` and every error metric
(nMSE with the signal's own scale, PSNR, area-weighted RMSE) are those of the total: the
transform changes what the network fits, not how it is scored.

The base needs the whole grid as query set (it reads the support values through
``query_support``): :func:`pipelines.data.episodes.build_episode` subtracts it before it
draws ``data.query_points``, and the config refuses patches. Support sets are rebuilt
from ``query_support`` in point order (the same points; only their padded order changes).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from mia_core.data import Episode, ModalityBatch


class SupportBase(Protocol):
    """What a base reconstruction offers (a fitted classical reconstructor)."""

    name: str

    def predict(self, episode: Episode, index: np.ndarray) -> dict[str, np.ndarray]:
        """Modality -> ``(B, P, C)`` predictions at every query point from the supports."""


def subtract_base(
    episode: Episode, base: SupportBase, index: np.ndarray
) -> tuple[Episode, dict[str, torch.Tensor]]:
    """The residual episode ``y - base`` and the base itself (modality -> ``(B, P, C)``).

    Args:
        episode: an episode whose query set is every grid point (CPU or device tensors).
        base: the fitted base.
        index: ``(B,)`` global signal indices.

    Raises:
        ValueError: a query set that is not the base's grid (names the base).
    """
    cpu = {m: mb.to("cpu") for m, mb in episode.items()}
    recon = base.predict(cpu, np.asarray(index))
    out: Episode = {}
    bases: dict[str, torch.Tensor] = {}
    for m, mb in episode.items():
        if m not in recon:
            out[m] = mb
            continue
        r = torch.as_tensor(
            np.nan_to_num(recon[m]), dtype=mb.query_y.dtype, device=mb.query_y.device
        )
        valid = mb.query_mask.unsqueeze(-1)
        query_y = (mb.query_y - r) * valid
        sup = mb.query_support * mb.query_mask
        counts = sup.sum(1).long()
        width = max(int(counts.max().item()), 1)
        # Support points in point order, padded: stable sort puts support (1) first.
        order = torch.argsort(-sup, dim=1, stable=True)[:, :width]
        mask = (torch.arange(width, device=sup.device)[None] < counts[:, None]).to(sup.dtype)
        qx = mb.query_x.expand(mb.batch_size, -1, -1)
        out[m] = ModalityBatch(
            support_x=torch.gather(qx, 1, order[..., None].expand(-1, -1, qx.shape[-1])),
            support_y=torch.gather(query_y, 1, order[..., None].expand(-1, -1, r.shape[-1]))
            * mask[..., None],
            support_mask=mask,
            query_x=mb.query_x,
            query_y=query_y,
            query_mask=mb.query_mask,
            query_support=mb.query_support,
            scale=mb.scale,
        )
        bases[m] = r
    return out, bases


__all__ = ["SupportBase", "subtract_base"]

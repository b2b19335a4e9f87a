"""Area-weighted metrics of one modality's predictions (the evaluation's ``AREA_METRICS``).

See :mod:`pipelines.reports.evaluation` for what they mean: per signal, the squared error
averaged over channels and over points weighted by their area, as nMSE, PSNR and RMSE in
physical units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mia_core.data import ModalityBatch
from mia_core.meta.metrics import REGIONS, psnr
from pipelines.data.episodes import stride_index
from pipelines.data.stores import Store
from pipelines.data.stores.geometry import Geometry, point_weights

AREA_METRICS = tuple(
    f"{family}_{region}" for family in ("nmse_area", "psnr_area", "rmse_phys") for region in REGIONS
)


class AreaWeights:
    """One modality's query-point area weights and squared physical scales, on ``device``.

    Query points are the grid's points kept by ``spatial_stride``, row-major (the
    evaluation's episodes keep every query point); a patch store's weights differ per
    patch, so :meth:`metrics` takes the batch's signal indices.
    """

    def __init__(
        self, store: Store, m: str, geometry: Geometry, spatial_stride: int, device: torch.device
    ) -> None:
        keep = stride_index(tuple(store.info[m].grid_shape), spatial_stride)
        weights = point_weights(store, m, geometry)[:, keep]
        self.weights = torch.as_tensor(weights, dtype=torch.float32, device=device)
        self.scale2 = torch.as_tensor(geometry.scale**2, dtype=torch.float32, device=device)
        self.name = m

    def metrics(
        self, pred: Tensor, mb: ModalityBatch, index: np.ndarray, data_range: float
    ) -> dict[str, Tensor]:
        """Per-signal ``AREA_METRICS`` (``rmse_phys_*`` hold mean squared errors, ``(B,)``)."""
        w = self.weights
        if w.shape[1] != mb.query_y.shape[1]:
            raise ValueError(
                f"variable {self.name!r}: {mb.query_y.shape[1]} query points, {w.shape[1]} "
                "grid points: the area-weighted metrics need every query point"
            )
        if len(w) > 1:  # patches: row i % K of each signal
            w = w[torch.as_tensor(index % len(w), device=w.device)]
        se = (pred.float() - mb.query_y.float()).square()
        out: dict[str, Tensor] = {}
        for region, mask in (
            ("all", mb.query_mask),
            ("support", mb.query_mask * mb.query_support),
            ("nonsupport", mb.query_mask * (1.0 - mb.query_support)),
        ):
            wm = w * mask.float()
            total = wm.sum(1)
            nan = torch.full_like(total, math.nan)
            mse = torch.where(total > 0, (se.mean(-1) * wm).sum(1) / total.clamp_min(1e-30), nan)
            phys = torch.where(
                total > 0, ((se * self.scale2).mean(-1) * wm).sum(1) / total.clamp_min(1e-30), nan
            )
            out[f"nmse_area_{region}"] = mse / mb.scale.float().square()
            out[f"psnr_area_{region}"] = psnr(mse, data_range)
            out[f"rmse_phys_{region}"] = phys
        return out


__all__ = ["AREA_METRICS", "AreaWeights"]

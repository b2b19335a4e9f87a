"""Encode time steps patch by patch: the encoder's path for meta-models trained on patches.

A meta-model trained with ``data.patch`` adapts one patch at a time, so its encoder does
too: the time steps of a unit are read whole (their chunks), cut into ``K`` patches each
(:class:`~pipelines.data.stores.patches.PatchStore` tiles them, padding edge patches with
NaN that the masks drop), and the patches are adapted ``batch`` at a time from the
meta-learned initialisation on the shared local frame. Memory therefore depends on the
patch and ``encode.batch_size`` (patches here), not on the grid. A step's code is its
``K`` patch codes, ``(K, code_dim)``; its MSE per variable is that of all its valid
points (patch MSEs weighted by their point counts), measured on the codes as stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mia_core.meta.codes import code_layout, codes_to_params, params_to_codes
from mia_core.meta.metrics import psnr
from pipelines.codecs.fitting import fit_encoder
from pipelines.codecs.meta_model import EncodeError, MetaModel, batch_tensors, field_metrics
from pipelines.codecs.patch_codes import PatchGrid
from pipelines.codecs.quantise import dequantise, quantise, spec_quantiser
from pipelines.data.stores.patches import PatchStore
from pipelines.data.stores.reader import FieldStore

DEFAULT_PATCH_BATCH = 64  # patches adapted together when encode.batch_size is 0


def patch_store_for(store: FieldStore, model: MetaModel) -> PatchStore | None:
    """The store seen as the meta-model's patches, or ``None`` for a whole-signal model.

    Raises:
        EncodeError: a model trained on global patch coordinates (its codes could not be
            decoded at another grid than the one they were fitted on).
    """
    data = model.cfg.data
    if not data.patch:
        return None
    if data.patch_coords != "local":
        raise EncodeError(
            "encoding patches needs a meta-model trained with data.patch_coords: local "
            f"(this one used {data.patch_coords!r}); retrain it with local coordinates"
        )
    return PatchStore(store, list(data.patch), "local")


def patch_grid(ps: PatchStore) -> PatchGrid:
    """The geometry of ``ps``'s patches."""
    return PatchGrid(tuple(ps.patch), tuple(ps.grid))


@dataclass
class UnitResult:
    """A run of encoded time steps, in time order (arrays as the code store holds them)."""

    codes: np.ndarray
    scales: np.ndarray | None
    mse: np.ndarray
    psnr: np.ndarray
    seconds: np.ndarray


def encode_patch_steps(
    model: MetaModel,
    ps: PatchStore,
    rows: Mapping[str, np.ndarray],
    spec: Mapping[str, Any],
    device: torch.device,
    seed: int,
) -> UnitResult:
    """Encode ``n`` whole time steps (``rows``: variable -> ``(n, G, C)``) patch by patch.

    Args:
        model: the meta-model (trained on ``ps``'s patch size with local coordinates).
        ps: the field store seen as patches (used to tile ``rows``).
        rows: the steps' values as the field store reads them.
        spec: encoder settings (``batch_size`` in patches, ``code_dtype``, fit settings).
        device: where the patches are adapted.
        seed: seed of this run (point sampling).

    Raises:
        EncodeError: ``chain_length`` set (warm starts run along time for whole signals).
    """
    if int(spec.get("chain_length", 0)) > 0:
        raise EncodeError(
            "encode.chain_length warm-starts whole time steps; a patch meta-model encodes "
            "patches: set encode.chain_length=0"
        )
    learner = model.learner
    k = ps.per_step
    tiles = {m: ps.tiles(np.asarray(rows[m], np.float32)) for m in learner.modalities}
    total = next(iter(tiles.values())).shape[0]
    n = total // k
    coords = {m: torch.from_numpy(ps.info[m].coords).to(device) for m in learner.modalities}
    sizes = code_layout(learner).sizes
    quant = spec_quantiser(spec)
    bsz = int(spec["batch_size"]) or DEFAULT_PATCH_BATCH
    codes, scales, sse, counts, secs = [], [], [], [], []
    for a in range(0, total, bsz):
        part = {m: v[a : a + bsz] for m, v in tiles.items()}
        values, valid = batch_tensors(part, device)
        fit = fit_encoder(learner, coords, values, valid, spec, seed=seed + a)
        code, scale = quantise(
            params_to_codes(learner, fit.params), spec["code_dtype"], sizes, quant
        )
        stored = codes_to_params(learner, dequantise(code, scale, sizes))
        mse, _ = field_metrics(learner, coords, values, valid, stored, 1.0)
        cnt = _counts(valid, learner.modalities)
        codes.append(code.cpu().numpy())
        if scale is not None:
            scales.append(scale.cpu().numpy())
        sse.append((torch.nan_to_num(mse) * cnt).cpu().numpy())
        counts.append(cnt.cpu().numpy())
        secs.append(np.full(code.shape[0], fit.seconds / code.shape[0]))
    sse_t = np.concatenate(sse).reshape(n, k, -1).sum(1)
    cnt_t = np.concatenate(counts).reshape(n, k, -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mse_t = np.where(cnt_t > 0, sse_t / np.maximum(cnt_t, 1), np.nan)
    data_range = float(model.cfg.data.psnr_range)
    psnr_t = psnr(torch.from_numpy(mse_t), data_range).numpy()
    psnr_t[np.isnan(mse_t)] = np.nan
    return UnitResult(
        codes=np.concatenate(codes).reshape(n, k, -1),
        scales=np.concatenate(scales).reshape(n, k, -1) if scales else None,
        mse=mse_t.astype(np.float32),
        psnr=psnr_t.astype(np.float32),
        seconds=np.concatenate(secs).reshape(n, k).sum(1),
    )


def _counts(valid: Mapping[str, Tensor], modalities: list[str]) -> Tensor:
    """``(B, M)`` valid points per patch and variable."""
    return torch.stack([valid[m].sum(1) for m in modalities], 1)


__all__ = [
    "DEFAULT_PATCH_BATCH",
    "UnitResult",
    "encode_patch_steps",
    "patch_grid",
    "patch_store_for",
]

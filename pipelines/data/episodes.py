"""Support/query episodes from store rows, reproducible per signal.

Each signal's support set is drawn from a generator seeded by ``(seed, epoch, signal
index, modality number)``, so an episode does not depend on how signals were sharded,
batched or ordered: any worker, any batch size, the same episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from mia_core.data import Episode, ModalityBatch
from pipelines.data.episode_base import SupportBase, subtract_base
from pipelines.data.stores.errors import StoreError

# Store extra arrays ``scale__<modality>`` (N,) hold a per-modality normalised-MSE scale
# that replaces the store's per-signal ``scale`` for that modality (synthetic ``paper``).
SCALE_PREFIX = "scale__"


@dataclass
class EpisodeSpec:
    """How to turn store rows into episodes.

    Attributes:
        ratio_ranges: modality -> ``(R_min, R_max)`` support ratio.
        seed: base seed.
        spatial_stride: keep every ``lambda_s``-th grid point along each axis
            (meta-pretraining on a sparse subsample, Meta-INR); 1 keeps all.
        store_name: store label used in error messages (redacted URL).
        query_points: keep this many query points per signal (uniform among its valid
            points, drawn after the support so support sets do not change); 0 keeps all.
        support_points: cap of the support set per signal: a larger drawn support keeps
            its first ``support_points`` points in draw order (a uniform subset, the
            same random stream); 0: no cap.
        base: a fitted base reconstruction the episodes are the residual of
            (``data.residual_base``, :mod:`pipelines.data.episode_base`), or ``None``.
    """

    ratio_ranges: Mapping[str, tuple[float, float]]
    seed: int = 0
    spatial_stride: int = 1
    store_name: str = "<store>"
    query_points: int = 0
    support_points: int = 0
    base: SupportBase | None = None


def stride_index(grid_shape: tuple[int, ...], stride: int) -> np.ndarray:
    """Flat indices of the grid points kept by a spatial stride."""
    if stride <= 1:
        return np.arange(int(np.prod(grid_shape)))
    axes = [np.arange(0, n, stride) for n in grid_shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.ravel_multi_index([m.reshape(-1) for m in mesh], grid_shape)


def _smallest(key: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(key, kind="stable")[:k]`` (ties by index) in O(P + k log k)."""
    t = np.partition(key, k - 1)[k - 1]
    below = np.flatnonzero(key < t)
    sel = np.concatenate([below, np.flatnonzero(key == t)[: k - below.size]])
    return sel[np.argsort(key[sel], kind="stable")]


def build_episode(
    rows: Mapping[str, np.ndarray],
    indices: np.ndarray,
    coords: Mapping[str, np.ndarray],
    spec: EpisodeSpec,
    epoch: int = 0,
    scale: np.ndarray | Mapping[str, np.ndarray] | None = None,
    grid_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Episode:
    """Build an :class:`~mia_core.data.Episode` from a batch of store rows.

    Args:
        rows: modality -> ``(B, P, C)`` values (NaN = missing).
        indices: ``(B,)`` global signal indices (seed the per-signal draws).
        coords: modality -> ``(P, d)`` shared or ``(B, P, d)`` coordinates.
        spec: ratios, seed, stride.
        epoch: epoch number (new support sets each epoch).
        scale: ``(B,)`` normalised-MSE scale, or modality -> ``(B,)`` (a modality not
            listed gets ones).
        grid_shapes: modality -> grid shape, needed when ``spatial_stride > 1``.

    Raises:
        StoreError: a signal with no finite value (names store, variable, signal index).
    """
    out: Episode = {}
    picks: dict[str, torch.Tensor] = {}  # modality -> (B, query_points) kept query indices
    bsz = len(indices)
    for mi, (m, vals) in enumerate(rows.items()):
        s = scale.get(m) if isinstance(scale, Mapping) else scale
        scale_t = torch.ones(bsz) if s is None else torch.as_tensor(np.asarray(s, np.float32))
        vals = np.asarray(vals, np.float32)
        xc = np.asarray(coords[m], np.float32)
        if spec.spatial_stride > 1:
            if grid_shapes is None:
                raise ValueError("spatial_stride > 1 needs grid_shapes")
            keep = stride_index(grid_shapes[m], spec.spatial_stride)
            vals = vals[:, keep]
            xc = xc[..., keep, :]
        valid = np.isfinite(vals).all(-1)
        n_valid = valid.sum(1)
        empty = np.flatnonzero(n_valid == 0)
        if empty.size:
            raise StoreError(
                f"{spec.store_name}: variable {m!r}: signal {int(indices[empty[0]])} "
                "has no finite value (all NaN or fill); rebuild the store with this version, "
                "which marks such signals missing (valid = 0) so they are skipped"
            )
        lo, hi = spec.ratio_ranges[m]
        npts = vals.shape[1]
        counts, orders, queries = [], [], []
        n_query = spec.query_points if 0 < spec.query_points < npts else 0
        for b in range(bsz):
            rng = np.random.default_rng([spec.seed, epoch, int(indices[b]), mi])
            r = rng.uniform(lo, hi)
            k = int(min(n_valid[b], max(1, round(r * n_valid[b]))))
            if spec.support_points:
                k = min(k, spec.support_points)
            key = rng.random(npts)
            key[~valid[b]] = 2.0
            orders.append(_smallest(key, k))
            counts.append(k)
            if n_query:
                qkey = rng.random(npts)
                qkey[~valid[b]] = 2.0
                queries.append(np.sort(_smallest(qkey, n_query)))
        ps = max(counts)
        idx = np.zeros((bsz, ps), np.int64)
        mask = np.zeros((bsz, ps), np.float32)
        q_sup = np.zeros((bsz, npts), np.float32)
        for b, o in enumerate(orders):
            idx[b, : len(o)] = o
            mask[b, : len(o)] = 1.0
            q_sup[b, o] = 1.0
        clean = np.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0)
        sy = np.take_along_axis(clean, idx[..., None], axis=1)
        if xc.ndim == 2:
            sx = xc[idx]
            qx = torch.from_numpy(xc[None])
        else:
            sx = np.take_along_axis(xc, idx[..., None], axis=1)
            qx = torch.from_numpy(xc)
        out[m] = ModalityBatch(
            support_x=torch.from_numpy(np.ascontiguousarray(sx)),
            support_y=torch.from_numpy(np.ascontiguousarray(sy)),
            support_mask=torch.from_numpy(mask),
            query_x=qx,
            query_y=torch.from_numpy(np.ascontiguousarray(clean)),
            query_mask=torch.from_numpy(valid.astype(np.float32)),
            query_support=torch.from_numpy(q_sup),
            scale=scale_t,
        )
        if n_query:
            picks[m] = torch.from_numpy(np.stack(queries))
    if spec.base is not None:  # on the whole grid, before the query points are drawn
        out, _ = subtract_base(out, spec.base, np.asarray(indices))
    for m, qi in picks.items():
        out[m] = _query_subset(out[m], qi)
    return out


def _query_subset(mb: ModalityBatch, qi: torch.Tensor) -> ModalityBatch:
    """``mb`` with the query set cut to the ``(B, n)`` point indices ``qi`` (sorted)."""
    qx = mb.query_x.expand(qi.shape[0], -1, -1)

    def take(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 2:
            return torch.gather(t, 1, qi)
        return torch.gather(t, 1, qi[..., None].expand(-1, -1, t.shape[-1]))

    return ModalityBatch(
        support_x=mb.support_x,
        support_y=mb.support_y,
        support_mask=mb.support_mask,
        query_x=take(qx),
        query_y=take(mb.query_y),
        query_mask=take(mb.query_mask),
        query_support=take(mb.query_support),
        scale=mb.scale,
    )

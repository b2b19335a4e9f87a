"""Codes of patch signals: where each patch's code lives on the grid, at any resolution.

A meta-model trained with ``data.patch`` (:mod:`pipelines.data.stores.patches`) encodes a
time step as ``K`` codes, one per patch, each adapted on its patch's points in the patch's
own ``[-1, 1]^d`` frame (``data.patch_coords: local``). :class:`PatchGrid` is the geometry
the encoder and the decoder share:

* patch ``k`` of a step is row-major over the patch grid (``counts`` patches per axis),
  as :class:`~pipelines.data.stores.patches.PatchStore` cuts it; edge patches of a grid
  the patch does not divide hold fewer points (the rest is padding, never decoded);
* :meth:`PatchGrid.untile` puts ``(n * K, prod(patch), C)`` patch values back into
  ``(n, prod(grid), C)`` whole fields (the inverse of ``PatchStore.tiles``);
* :meth:`PatchGrid.placement` maps any output grid to the patches: an output point at
  fractional source index ``u`` along an axis belongs to patch ``floor(u / p)`` at local
  coordinate ``-1 + 2 (u - i p) / (p - 1)``. At the source's own grid ``u`` is the cell
  index, so every point is decoded at exactly the coordinate it was fitted at; a finer
  grid evaluates each patch's INR between its cells, and the points between the last
  cell of one patch and the first of the next extrapolate the left patch by less than
  one cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

MAX_POINTS = 1 << 17  # points evaluated at once when decoding (patches x points per patch)


@dataclass(frozen=True)
class PatchGrid:
    """Patch size and the whole grid it cuts.

    Attributes:
        patch: patch size per grid axis (already cut to the grid).
        grid: the whole grid's shape.
    """

    patch: tuple[int, ...]
    grid: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        """Patches per axis."""
        return tuple(-(-g // p) for g, p in zip(self.grid, self.patch, strict=True))

    @property
    def per_step(self) -> int:
        """Patches per time step ``K``."""
        return math.prod(self.counts)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PatchGrid:
        """From a code store's ``patch`` attribute."""
        return cls(tuple(int(p) for p in data["patch"]), tuple(int(g) for g in data["grid"]))

    def to_json(self) -> dict[str, Any]:
        """The code store's ``patch`` attribute."""
        return {"patch": list(self.patch), "grid": list(self.grid), "coords": "local"}

    def untile(self, values: np.ndarray) -> np.ndarray:
        """``(n * K, prod(patch), C)`` patches -> ``(n, prod(grid), C)`` fields (padding cut)."""
        k, d = self.per_step, len(self.grid)
        n, c = values.shape[0] // k, values.shape[-1]
        tiled = values.reshape(n, *self.counts, *self.patch, c)
        order = [0]
        for a in range(d):
            order += [1 + a, 1 + d + a]
        full = tiled.transpose(*order, 2 * d + 1).reshape(
            n, *(q * p for q, p in zip(self.counts, self.patch, strict=True)), c
        )
        whole = full[(slice(None), *(slice(0, g) for g in self.grid))]
        return whole.reshape(n, math.prod(self.grid), c)

    def placement(
        self, positions: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patches' local coordinates and output indices for an output grid.

        Args:
            positions: per axis, the output points' fractional source indices ``u``
                (ascending; ``np.arange(g)`` is the source grid itself).

        Returns:
            ``coords (K, M, d)`` local coordinates of each patch's output points, padded
            to the largest patch's ``M`` points; ``target (K, M)`` their flat row-major
            index in the output grid (``-1``: padding); ``shape`` of the output grid.
        """
        per_axis = []
        for u, p, q in zip(positions, self.patch, self.counts, strict=True):
            u = np.asarray(u, np.float64)
            idx = np.clip(np.floor(u / p + 1e-9).astype(np.int64), 0, q - 1)
            local = -1.0 + 2.0 * (u - idx * p) / (p - 1) if p > 1 else np.zeros_like(u)
            members = [np.flatnonzero(idx == i) for i in range(q)]
            m = max(1, max(len(s) for s in members))
            loc = np.zeros((q, m), np.float32)
            pos = np.full((q, m), -1, np.int64)
            for i, s in enumerate(members):
                loc[i, : len(s)], pos[i, : len(s)] = local[s], s
            per_axis.append((loc, pos))
        shape = np.array([len(u) for u in positions], np.int64)
        corners = np.stack(np.unravel_index(np.arange(self.per_step), self.counts), 1)
        coords, target = [], []
        for corner in corners:
            locs = [per_axis[a][0][c] for a, c in enumerate(corner)]
            poss = [per_axis[a][1][c] for a, c in enumerate(corner)]
            mesh = np.meshgrid(*locs, indexing="ij")
            coords.append(np.stack([g.reshape(-1) for g in mesh], -1))
            pmesh = np.meshgrid(*poss, indexing="ij")
            pad = np.zeros(pmesh[0].shape, bool)
            for g in pmesh:
                pad |= g < 0
            flat = np.ravel_multi_index([np.maximum(g, 0) for g in pmesh], tuple(shape))
            target.append(np.where(pad, -1, flat).reshape(-1))
        return np.stack(coords).astype(np.float32), np.stack(target), shape


def positions_for(grid: int, size: int | None) -> np.ndarray:
    """Fractional source indices of an output axis: the cells (``size None``) or a resample."""
    if size is None:
        return np.arange(grid, dtype=np.float64)
    return np.linspace(0.0, grid - 1.0, size) if size > 1 else np.zeros(1)


@torch.no_grad()
def shared_frames(coords: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patches grouped by their local points: ``(frame (1, M, d), patch indices)`` pairs.

    At the source grid every patch has the same points, on a regular finer grid all but
    the edge ones do: the INR's coordinate layers then run once per group, not per patch.
    Computed once per output grid (:meth:`PatchGrid.placement`), not per step.
    """
    k, m = coords.shape[:2]
    frames, which = np.unique(coords.reshape(k, -1), axis=0, return_inverse=True)
    which = which.reshape(-1)
    return [
        (np.ascontiguousarray(frame.reshape(1, m, -1)), np.flatnonzero(which == f))
        for f, frame in enumerate(frames)
    ]


def decode_patches(
    predict_fn: Callable[[Tensor, dict[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    frames: list[tuple[np.ndarray, np.ndarray]],
    target: np.ndarray,
    num_points: int,
    channels: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Evaluate ``K`` patches' INRs on their output points and stitch one field.

    Args:
        predict_fn: ``(coords (1, M, d) shared by B patches, their params) -> (B, M, C)``.
        params: the adapted tensors of the step's ``K`` patches (leading dim ``K``).
        frames: :func:`shared_frames` of the placement's coordinates.
        target: ``(K, M)`` output indices (``-1`` padding).
        num_points: points of the output grid.
        channels: ``C``.
        device: where the INR runs.

    Returns:
        ``(num_points, C)`` float32.
    """
    out = np.full((num_points, channels), np.nan, np.float32)
    group = max(1, MAX_POINTS // max(target.shape[1], 1))
    for frame, members in frames:
        x = torch.from_numpy(frame).to(device)
        for a in range(0, members.size, group):
            sel = members[a : a + group]
            index = torch.from_numpy(sel).to(device)
            part = {key: v.index_select(0, index) for key, v in params.items()}
            pred = predict_fn(x, part).float().cpu().numpy()
            t = target[sel]
            keep = t >= 0
            out[t[keep]] = pred[keep]
    return out


__all__ = ["MAX_POINTS", "PatchGrid", "decode_patches", "positions_for", "shared_frames"]

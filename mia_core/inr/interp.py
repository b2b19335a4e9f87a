"""Multilinear interpolation of a latent grid at continuous coordinates.

Written with ``gather`` rather than ``grid_sample`` because the inner loop needs the
derivative of the interpolation's backward (second-order meta-gradients), which
``grid_sample`` does not provide.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor


def interpolate_grid(latent: Tensor, grid: tuple[int, ...], coords: Tensor) -> Tensor:
    """Sample a latent grid at coordinates in ``[-1, 1]^d`` (corners aligned).

    Args:
        latent: ``(B, S, D)`` with ``S == prod(grid)``, row-major over ``grid``.
        grid: spatial grid shape, one entry per coordinate dimension.
        coords: ``(B, P, d)`` or ``(1, P, d)``; values outside ``[-1, 1]`` are clamped.

    Returns:
        ``(B, P, D)`` interpolated latents.
    """
    bsz, _, dim = latent.shape
    d = len(grid)
    if coords.shape[-1] != d:
        raise ValueError(f"latent grid {grid} needs {d}-D coordinates, got {coords.shape[-1]}-D")
    sizes = torch.tensor(grid, device=coords.device, dtype=coords.dtype)
    pos = (coords.clamp(-1, 1) + 1) * 0.5 * (sizes - 1)
    lo = torch.minimum(pos.floor().clamp(min=0), (sizes - 2).clamp(min=0))
    frac = pos - lo
    lo = lo.long()
    strides = [1] * d
    for i in range(d - 2, -1, -1):
        strides[i] = strides[i + 1] * grid[i + 1]
    idx_list, w_list = [], []
    for corner in itertools.product((0, 1), repeat=d):
        idx = torch.zeros_like(lo[..., 0])
        w = torch.ones_like(frac[..., 0])
        for axis, c in enumerate(corner):
            idx = idx + (lo[..., axis] + c).clamp(max=grid[axis] - 1) * strides[axis]
            w = w * (frac[..., axis] if c else 1 - frac[..., axis])
        idx_list.append(idx)
        w_list.append(w)
    idx = torch.stack(idx_list, -1)
    w = torch.stack(w_list, -1)
    if idx.shape[0] != bsz:
        idx, w = idx.expand(bsz, *idx.shape[1:]), w.expand(bsz, *w.shape[1:])
    npts, corners = idx.shape[1], idx.shape[2]
    gathered = torch.gather(latent, 1, idx.reshape(bsz, npts * corners, 1).expand(-1, -1, dim))
    return (gathered.reshape(bsz, npts, corners, dim) * w.unsqueeze(-1)).sum(2)

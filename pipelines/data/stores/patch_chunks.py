"""Chunk shapes that hold whole patches, and the check that a store's chunks do.

A store built for ``data.patch`` (``mia-inr build ... --patch 32x32``) chunks every data
variable spatially in whole patches: the spatial chunk is an integer number of patches per
axis (the last chunk along an axis may be partial, ending with the grid), and the time
chunk is a few steps, so that one chunk of one variable is about ``CHUNK_BYTES`` (1-16 MB).
Reading the patches of one spatial chunk row then touches only that row's chunks, whatever
the grid. The patch size is recorded as the root attribute ``mia_built_patch``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CHUNK_BYTES = 4 * 2**20  # aimed-for bytes of one chunk of one variable (float32)
FEW_STEPS = 4  # time steps a spatially cut chunk aims to hold
BUILT_PATCH_ATTR = "mia_built_patch"


def patch_layout(
    grid: Sequence[int],
    patch: Sequence[int],
    point_bytes: int,
    chunk_time: int,
    target: int | None = None,
) -> tuple[int, tuple[int, ...]]:
    """Time steps and spatial shape of a chunk of whole patches of about ``target`` bytes.

    The spatial chunk grows one patch at a time along its shortest axis (roughly square
    chunks) while ``FEW_STEPS`` steps of it fit in ``target``; a grid that
    fits is one spatial chunk. The time chunk then fills ``target`` (at most ``chunk_time``,
    at least 1 step).

    Args:
        grid: spatial grid shape.
        patch: patch size per axis (a patch larger than the grid is cut to it).
        point_bytes: bytes of one grid point of one step (``4 * levels * members``).
        chunk_time: most time steps per chunk (the builder's ``--chunk``, already capped).
        target: aimed-for bytes of one chunk (``CHUNK_BYTES`` when ``None``).

    Returns:
        ``(time_chunk, spatial_chunk)``; each spatial extent is a multiple of the patch
        or the whole axis.
    """
    target = CHUNK_BYTES if target is None else int(target)
    cut = [max(1, min(int(p), int(g))) for p, g in zip(patch, grid, strict=True)]
    point_bytes = max(1, int(point_bytes))
    # Aim at FEW_STEPS steps even when the builder's block cap allows fewer: a training
    # batch reads random patches of random steps, and each read decompresses a whole
    # chunk, so the spatial extent is what one patch read costs.
    budget = max(1, target // (point_bytes * FEW_STEPS))
    counts = [1] * len(cut)

    def extent(n: list[int]) -> list[int]:
        return [min(k * p, g) for k, p, g in zip(n, cut, grid, strict=True)]

    grown = True
    while grown:
        grown = False
        for i in sorted(range(len(cut)), key=lambda i: extent(counts)[i]):
            if extent(counts)[i] >= grid[i]:
                continue
            trial = [*counts[:i], counts[i] + 1, *counts[i + 1 :]]
            if math.prod(extent(trial)) <= budget:
                counts, grown = trial, True
                break
    spatial = tuple(extent(counts))
    steps = max(1, min(int(chunk_time), target // (point_bytes * math.prod(spatial))))
    return steps, spatial


def chunk_edges(size: int, chunk: int, flipped: bool = False) -> list[int]:
    """Interior chunk boundaries of an axis of ``size`` cells, in the reader's index order.

    ``flipped``: the axis is stored descending and read reversed (latitude), so the
    boundaries are counted from the other end.
    """
    edges = list(range(chunk, size, chunk))
    return sorted(size - e for e in edges) if flipped else edges


def splitting_axis(
    grid: Sequence[int], patch: Sequence[int], chunks: Sequence[int], flipped: bool = False
) -> int | None:
    """The first axis whose chunks cut a patch (``None``: every chunk holds whole patches).

    Patches start at index 0 of each axis in the reader's order; ``flipped`` applies to
    axis 0 (a latitude stored descending).
    """
    for i, (g, p, c) in enumerate(zip(grid, patch, chunks, strict=True)):
        if any(e % p for e in chunk_edges(int(g), int(c), flipped and i == 0)):
            return i
    return None


__all__ = [
    "BUILT_PATCH_ATTR",
    "CHUNK_BYTES",
    "chunk_edges",
    "patch_layout",
    "splitting_axis",
]

"""Where the source had no value: one bit per point and channel, kept with the codes.

An INR predicts a value everywhere, land under a sea-surface field included, so a decoded
field would silently fill every gap of its source. The code store keeps each variable's
missing points as packed bits (``missing__<variable>``, ``(time, bytes)`` uint8, chunked
like the codes; an all-present chunk is never written, so complete fields cost nothing).
The decoder sets those points to NaN (``--fill`` keeps the network's values), regridding
the mask to other resolutions by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import zarr

PREFIX = "missing__"


def create_masks(group: zarr.Group, sizes: Mapping[str, int], n_time: int, chunk: int) -> None:
    """One packed-bit array per variable (``sizes``: values of one step, points x channels)."""
    for v, n in sizes.items():
        width = -(-int(n) // 8)
        group.create_array(
            PREFIX + v, shape=(n_time, width), chunks=(chunk, width), dtype="uint8",
            fill_value=0, dimension_names=["time", f"{v}_mask_bytes"], overwrite=True,
        )  # fmt: skip


def write_masks(group: zarr.Group, start: int, rows: Mapping[str, np.ndarray]) -> None:
    """Record where ``rows`` (variable -> ``(n, P, C)`` from ``start``) are not finite."""
    for v, values in rows.items():
        if PREFIX + v not in group:  # a store written before masks were kept
            continue
        missing = ~np.isfinite(values.reshape(values.shape[0], -1))
        group[PREFIX + v][start : start + values.shape[0]] = np.packbits(missing, axis=1)


def read_mask(group: zarr.Group, v: str, idx: np.ndarray, size: int) -> np.ndarray | None:
    """``(len(idx), size)`` bools, True where the source had no value; None if not kept."""
    if PREFIX + v not in group:
        return None
    packed = np.asarray(group[PREFIX + v].get_orthogonal_selection((np.asarray(idx), slice(None))))
    return np.unpackbits(packed, axis=1, count=size).astype(bool)


def regrid_mask(
    mask: np.ndarray, src: Sequence[np.ndarray], tgt: Sequence[np.ndarray]
) -> np.ndarray:
    """``mask (n, *src_shape, C)`` on the grid ``tgt`` by nearest neighbour per axis."""
    out = mask
    for axis, (s, t) in enumerate(zip(src, tgt, strict=True), start=1):
        s, t = np.asarray(s, float), np.asarray(t, float)
        nearest = np.abs(s[:, None] - t[None, :]).argmin(0)
        out = np.take(out, nearest, axis=axis)
    return out


__all__ = ["create_masks", "read_mask", "regrid_mask", "write_masks"]

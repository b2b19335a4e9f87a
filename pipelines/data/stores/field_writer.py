"""Write an xarray field store (climate fields, time-varying volumes) as Zarr v3.

Each data variable is normalised per channel (level) with statistics from the training
time steps, stored in the variable's ``mia_norm`` attribute so readers and decoders can
undo it; arrays are chunked along time only (whole spatial fields per chunk), or, with
``patch``, spatially in whole patches too (:mod:`~pipelines.data.stores.patch_chunks`). An
optional ``split(time)`` int8 variable marks train (0) / val (1) / test (2) time steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.field_attrs import normalised_attrs, physical_attrs
from pipelines.data.stores.field_stream import FieldStoreStream
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.patch_chunks import patch_layout
from pipelines.data.stores.reader import SPATIAL_SETS, TIME_DIMS


def split_by_time(n_time: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> np.ndarray:
    """Contiguous split along time: first train, then val, then test (no leakage)."""
    split = np.zeros(n_time, np.int8)
    n_test = int(round(n_time * test_fraction))
    n_val = int(round(n_time * val_fraction))
    if n_test:
        split[n_time - n_test :] = 2
    if n_val:
        split[n_time - n_test - n_val : n_time - n_test] = 1
    return split


def patch_grid(ds: xr.Dataset, rank: int, where: str = "dataset") -> tuple[tuple[int, ...], int]:
    """The spatial grid of ``ds``'s variables and the float32 bytes of one point of a step.

    Raises:
        StoreError: no variable with ``rank`` spatial axes (``SPATIAL_SETS``).
    """
    grids, point_bytes = set(), 4
    for name, da in ds.data_vars.items():
        dims = next((s for s in SPATIAL_SETS if all(d in da.dims for d in s)), ())
        if len(dims) != rank:
            raise StoreError(
                f"{where}: variable {name!r} has dims {da.dims}, no {rank} spatial axes for a "
                f"{rank}-axis patch"
            )
        grids.add(tuple(da.sizes[d] for d in dims))
        rest = [n for d, n in da.sizes.items() if d not in dims and d not in TIME_DIMS]
        point_bytes = max(point_bytes, 4 * math.prod(rest))
    return max(grids), point_bytes


def write_field_store(
    ds: xr.Dataset,
    location: StoreLocation,
    chunk_time: int = 16,
    split: np.ndarray | None = None,
    normalisation: str = "minmax01",
    attrs: dict[str, Any] | None = None,
    patch: Sequence[int] = (),
    chunk_bytes: int | None = None,
) -> None:
    """Normalise and write ``ds`` (overwriting the destination).

    One block of :class:`~pipelines.data.stores.field_stream.FieldStoreStream`: builders
    whose output does not fit in memory append blocks to the stream themselves.

    Args:
        ds: dataset whose data variables share a time dimension (see ``reader.py``).
        location: destination.
        chunk_time: time steps per chunk.
        split: ``(time,)`` split codes; train-only when omitted.
        normalisation: one of ``NORMALISATIONS`` (per variable and level).
        attrs: extra global attributes (source, builder arguments).
        patch: build for this ``data.patch`` (``mia_built_patch``): chunks of whole
            patches of about ``chunk_bytes`` per variable, at most ``chunk_time`` steps.
        chunk_bytes: aimed-for bytes of one chunk with ``patch`` (default ``CHUNK_BYTES``).

    Raises:
        StoreError: an unknown normalisation, an empty dataset, or one without a time
            dimension (nothing is written).
    """
    spatial: tuple[int, ...] = ()
    if patch:
        grid, point_bytes = patch_grid(ds, len(patch), str(location))
        chunk_time, spatial = patch_layout(grid, patch, point_bytes, chunk_time, chunk_bytes)
    stream = FieldStoreStream(location, chunk_time, attrs, normalisation, patch, spatial)
    stream.append(ds)
    stream.finish(split)


__all__ = [
    "normalised_attrs",
    "patch_grid",
    "physical_attrs",
    "split_by_time",
    "write_field_store",
]

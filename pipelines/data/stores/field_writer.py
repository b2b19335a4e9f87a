"""Write an xarray field store (climate fields, time-varying volumes) as Zarr v3.

Each data variable is normalised per channel (level) with statistics from the training
time steps, stored in the variable's ``mia_norm`` attribute so readers and decoders can
undo it; arrays are chunked along time only (whole spatial fields per chunk). An
optional ``split(time)`` int8 variable marks train (0) / val (1) / test (2) time steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from pipelines.data.stores.field_attrs import normalised_attrs, physical_attrs
from pipelines.data.stores.field_stream import FieldStoreStream
from pipelines.data.stores.location import StoreLocation


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


def write_field_store(
    ds: xr.Dataset,
    location: StoreLocation,
    chunk_time: int = 16,
    split: np.ndarray | None = None,
    normalisation: str = "minmax01",
    attrs: dict[str, Any] | None = None,
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

    Raises:
        StoreError: an unknown normalisation, an empty dataset, or one without a time
            dimension (nothing is written).
    """
    stream = FieldStoreStream(location, chunk_time, attrs, normalisation)
    stream.append(ds)
    stream.finish(split)


__all__ = ["normalised_attrs", "physical_attrs", "split_by_time", "write_field_store"]

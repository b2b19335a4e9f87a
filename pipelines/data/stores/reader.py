"""Read signal stores and xarray field stores through one interface.

A :class:`Store` exposes ``N`` signals per modality as ``(n, P, C)`` float32 point
arrays with coordinates in ``[-1, 1]^d``, read by whole chunks along the signal axis:

* **signal stores** (``attrs["mia_store"]["kind"] == "signals"``, see ``writer.py``);
* **field stores**: xarray-compatible Zarr with a time axis and spatial axes
  (``time, [member], [level], lat, lon`` or ``time, z, y, x``); each data variable is
  a modality, ``time x member`` are the signals, levels are channels. Latitude is
  flipped to ascending so coordinates grow with the index
  (:class:`~pipelines.data.stores.field_reader.FieldStore`).

Every error names the store (redacted URL) and the variable or chunk key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.field_reader import FieldStore
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.store_base import (
    LEVEL_DIMS,
    MEMBER_DIMS,
    SPATIAL_SETS,
    TIME_DIMS,
    ModalityInfo,
    Store,
    _chunk_key,
    _chunk_spans,
    grid_coords,
)


class SignalStore(Store):
    """Reader of the signal-store format (``writer.py``)."""

    def __init__(
        self, location: StoreLocation, group: zarr.Group, modalities: list[str] | None
    ) -> None:
        self.location, self.group = location, group
        meta = dict(group.attrs["mia_store"])
        self.attrs = meta
        available = list(meta["modalities"])
        self.modalities = list(modalities or available)
        missing = [m for m in self.modalities if m not in available]
        if missing:
            raise self._fail(f"missing variable(s) {missing}; the store has {available}")
        self.num_signals = int(meta["num_signals"])
        if self.num_signals == 0:
            raise self._fail("empty store (0 signals)")
        self.info, sizes = {}, []
        self.arrays: dict[str, Any] = {}  # opened once: remote stores fetch metadata per open
        for m in self.modalities:
            if m not in group:
                raise self._fail(f"variable {m!r} is listed in the metadata but has no array")
            arr = group[m]
            ent = meta["info"][m]
            if arr.shape[0] != self.num_signals:
                raise self._fail(
                    f"variable {m!r} has {arr.shape[0]} signals, "
                    f"other modalities {self.num_signals}"
                )
            self.arrays[m] = arr
            if ent["kind"] == "grid":
                shape = tuple(ent["grid_shape"])
                if tuple(arr.shape[1:-1]) != shape:
                    raise self._fail(
                        f"variable {m!r} has shape {arr.shape}, metadata says grid {shape}"
                    )
                coords = grid_coords(shape)
            else:
                shape = (int(ent["num_points"]),)
                carr = group[f"{m}__coords"]
                coords = None if ent["coords_per_signal"] else np.asarray(carr[...], np.float32)
                if coords is None:
                    self.arrays[f"{m}__coords"] = carr
            self.info[m] = ModalityInfo(
                m, shape, int(ent["channels"]), coords, ent.get("extent", []), ent["norm"]
            )
            sizes.append(arr.chunks[0])
        self.chunk_size = min(sizes)
        self.split = np.asarray(group["split"][...], np.int8)
        self.scale = np.asarray(group["scale"][...], np.float32)
        # Stores written before the mask existed: every signal counts as valid.
        found = "valid" in group.array_keys()
        self.valid = (
            np.asarray(group["valid"][...]).astype(bool)
            if found
            else np.ones(self.num_signals, bool)
        )

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """See :meth:`Store.read`."""
        out = {}
        for m in self.modalities:
            arr = self.arrays[m]
            parts = []
            for a, b in _chunk_spans(start, stop, arr.chunks[0]):
                key = _chunk_key(arr, m, 0, a)
                try:
                    rows = self._retried(lambda arr=arr, a=a, b=b: np.asarray(arr[a:b]), key)
                    parts.append(np.asarray(rows, np.float32))
                except Exception as err:  # zarr/codec/IO errors: name the chunk
                    raise self._fail(
                        f"cannot read chunk {key!r} of variable {m!r} (signals {a}:{b})", err
                    ) from err
            vals = parts[0] if len(parts) == 1 else np.concatenate(parts)
            out[m] = vals.reshape(vals.shape[0], -1, vals.shape[-1])
        return out

    def read_coords(self, modality: str, start: int, stop: int) -> np.ndarray:
        """See :meth:`Store.read_coords`."""
        if self.info[modality].coords is not None:
            return self.info[modality].coords
        arr = self.arrays[f"{modality}__coords"]
        try:
            return np.asarray(arr[start:stop], np.float32)
        except Exception as err:
            key = _chunk_key(arr, f"{modality}__coords", 0, start)
            raise self._fail(
                f"cannot read coordinates of variable {modality!r} near chunk {key!r} "
                f"(signals {start}:{stop})",
                err,
            ) from err


def keep_rows(
    split: np.ndarray, valid: np.ndarray, start: int, split_code: int | None, time_stride: int
) -> np.ndarray:
    """Which signals ``start, start + 1, ...`` (``split``/``valid`` slices) a reader draws.

    Every ``time_stride``-th signal of split ``split_code`` (all: ``None``) that has data.
    """
    idx = np.arange(start, start + len(split))
    keep = (idx % time_stride == 0) & valid
    if split_code is not None:
        keep &= split == split_code
    return keep


def open_store(location: StoreLocation, modalities: list[str] | None = None) -> Store:
    """Open a signal store or a field store, validating its structure.

    Args:
        location: where the store lives.
        modalities: modalities (variables) to expose; all by default.

    Raises:
        StoreError: unreachable, not a store, missing variables, wrong dimensions,
            mismatched modality lengths, empty.
    """
    try:
        # The consolidated metadata is written for xarray users; reading the arrays' own
        # metadata cannot go stale if a store is edited by hand.
        group = zarr.open_group(location.zarr_store("r"), mode="r", use_consolidated=False)
        attrs = dict(group.attrs)
    except Exception as err:
        raise StoreError(
            f"{location}: cannot open as a Zarr store: {type(err).__name__}: {err}"
        ) from err
    if "mia_store" in attrs:
        return SignalStore(location, group, modalities)
    import xarray as xr

    try:
        # raw (normalised) values: a one-channel variable is CF-packed, and xarray would
        # unpack it to physical units (pipelines.data.stores.field_attrs)
        ds = xr.open_zarr(
            location.zarr_store("r"), chunks=None, consolidated=False, mask_and_scale=False
        )
    except Exception as err:
        raise StoreError(
            f"{location}: not a signal store and not an xarray field store: "
            f"{type(err).__name__}: {err}"
        ) from err
    return FieldStore(location, ds, modalities, group)


def read_steps(store: Store, steps: Sequence[int]) -> dict[str, np.ndarray]:
    """Variable -> ``(n, P, C)`` values of the (not necessarily contiguous) ``steps``.

    Each step is read once for all variables (its chunks, not the range between steps).
    """
    rows = [store.read(int(i), int(i) + 1) for i in steps]
    return {m: np.stack([r[m][0] for r in rows]) for m in store.modalities}


__all__ = [
    "LEVEL_DIMS",
    "MEMBER_DIMS",
    "SPATIAL_SETS",
    "TIME_DIMS",
    "FieldStore",
    "ModalityInfo",
    "SignalStore",
    "Store",
    "grid_coords",
    "keep_rows",
    "open_store",
    "read_steps",
]

"""Write a field store in time blocks: memory bounded by one block, not by the store.

:class:`FieldStoreStream` appends blocks of raw values (float32) along time as they come
(``to_zarr(append_dim=...)``), chunked along time, and spatially in whole patches for a
store built for ``data.patch`` (:mod:`~pipelines.data.stores.patch_chunks`);
:meth:`FieldStoreStream.finish` then makes two passes over the
written store, whole chunks at a time: the per-channel normalisation statistics over the
training time steps (min/max, or shifted sums for mean and standard deviation, in
float64), then every block normalised in place, with the ``valid`` mask gathered on the way.
``split``, ``valid``, the attributes and the consolidated metadata come last, so a store
whose build stopped has no ``split`` and is refused by the reader, never read
half-normalised. The format is :mod:`pipelines.data.stores.field_writer`'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.field_attrs import normalised_attrs
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.patch_chunks import BUILT_PATCH_ATTR
from pipelines.data.stores.reader import LEVEL_DIMS, MEMBER_DIMS, SPATIAL_SETS, TIME_DIMS
from pipelines.data.stores.writer import NORMALISATIONS, apply_norm, quiet_consolidation

BLOCK_BYTES = 48 * 2**20  # float64 values of one variable handled at once by finish()
VALID_NOTE = "time steps with data: 1 where every variable has at least one finite value"
# No CF flag_values: Zarr attributes are JSON, so they would not keep the mask's int type.
SPLIT_NOTE = "split of each time step: 0 train, 1 validation, 2 test"


class FieldStoreStream:
    """Append raw time blocks to a new field store, then normalise it in place.

    Args:
        location: destination (overwritten by the first block).
        chunk_time: time steps per chunk.
        attrs: extra global attributes (source, builder arguments).
        normalisation: one of ``NORMALISATIONS`` (per variable and level), checked here,
            before anything is written.
        patch: the ``data.patch`` the store is built for (``--patch``), recorded as the
            ``mia_built_patch`` attribute; empty: chunks along time only.
        spatial_chunks: chunk extent per spatial axis (whole patches, see
            :func:`~pipelines.data.stores.patch_chunks.patch_layout`); the whole grid when
            empty.
        time_encoding: ``units`` / ``calendar`` of a datetime time axis (the input's, so
            the store and decoded files encode time as it did).

    Raises:
        StoreError: an unknown normalisation.
    """

    def __init__(
        self,
        location: StoreLocation,
        chunk_time: int = 16,
        attrs: dict[str, Any] | None = None,
        normalisation: str = "minmax01",
        patch: Sequence[int] = (),
        spatial_chunks: Sequence[int] = (),
        time_encoding: dict[str, Any] | None = None,
    ) -> None:
        if normalisation not in NORMALISATIONS:
            raise StoreError(f"{location}: normalisation must be one of {NORMALISATIONS}")
        self.location, self.chunk_time, self.attrs = location, int(chunk_time), attrs or {}
        self.spatial_chunks = tuple(int(c) for c in spatial_chunks)
        if patch:
            self.attrs = {**self.attrs, BUILT_PATCH_ATTR: [int(p) for p in patch]}
        self.normalisation = normalisation
        self.time_encoding = dict(time_encoding or {})
        self.tdim: str | None = None
        self.names: list[str] = []
        self.global_attrs: dict[str, Any] = {}
        self.n_time = 0

    def append(self, block: xr.Dataset) -> None:
        """Write the next time steps (physical values; the first block's variables)."""
        if not block.data_vars:
            raise StoreError(f"{self.location}: refusing to write a field store without variables")
        tdim = next((d for d in TIME_DIMS if d in block.dims), None)
        if tdim is None:
            raise StoreError(
                f"{self.location}: dataset has no time dimension (dims {dict(block.sizes)})"
            )
        for name, da in block.data_vars.items():
            if tdim not in da.dims:
                raise StoreError(
                    f"{self.location}: variable {name!r} has no {tdim!r} dimension (dims {da.dims})"
                )
        if self.tdim is None and block.sizes[tdim] == 0:  # before the destination is replaced
            raise StoreError(
                f"{self.location}: refusing to write an empty store ({tdim!r} of length 0)"
            )
        block = block.assign({n: da.astype(np.float32) for n, da in block.data_vars.items()})
        if self.spatial_chunks:  # patches count from the south: so do the chunks
            for lat in ("latitude", "lat"):
                if lat in block.coords and block[lat].size > 1 and block[lat][0] > block[lat][-1]:
                    block = block.isel({lat: slice(None, None, -1)})
        if self.tdim is None:
            self.tdim, self.names = tdim, [str(v) for v in block.data_vars]
            # Zarr lists arrays alphabetically; the variable order is kept explicitly.
            self.global_attrs = {**block.attrs, **self.attrs, "mia_variables": self.names}
            block.attrs = self.global_attrs
            encoding = {n: {"chunks": self._chunks(n, da, tdim)} for n, da in block.items()}
            if self.time_encoding and np.issubdtype(block[tdim].dtype, np.datetime64):
                encoding[tdim] = dict(self.time_encoding)  # the input's units and calendar
            for c in block.coords:  # CF: coordinates have no missing values, so no _FillValue
                encoding.setdefault(str(c), {})["_FillValue"] = None
            block.to_zarr(self.location.zarr_store("w"), mode="w", zarr_format=3,
                          encoding=encoding, consolidated=False)  # fmt: skip
        else:  # xarray rewrites the group's attributes on append: the first block's stay
            block.attrs = self.global_attrs
            block.to_zarr(self.location.zarr_store("a"), append_dim=tdim, zarr_format=3,
                          consolidated=False)  # fmt: skip
        self.n_time += block.sizes[tdim]

    def _chunks(self, name: str, da: xr.DataArray, tdim: str) -> tuple[int, ...]:
        """Chunk shape of variable ``name``: ``chunk_time`` steps, spatial chunks if any."""
        space: dict[str, int] = {}
        if self.spatial_chunks:
            dims = next((s for s in SPATIAL_SETS if all(d in da.dims for d in s)), ())
            if len(dims) != len(self.spatial_chunks):
                raise StoreError(
                    f"{self.location}: variable {name!r} has dims {da.dims}, not "
                    f"{len(self.spatial_chunks)} spatial axes (chunks {list(self.spatial_chunks)})"
                )
            space = dict(zip(dims, self.spatial_chunks, strict=True))
        return tuple(
            self.chunk_time if d == tdim else min(space.get(d, n_d), n_d)
            for d, n_d in da.sizes.items()
        )

    def finish(self, split: np.ndarray | None = None, attrs: dict[str, Any] | None = None) -> None:
        """Normalise every variable in place, write ``split`` and ``valid``, consolidate.

        Args:
            split: ``(time,)`` split codes; train-only when omitted. The normalisation
                statistics come from the train time steps (all of them when there are none).
            attrs: global attributes known only once every block is written (the time
                range), added to the store's.
        """
        if self.tdim is None or self.n_time == 0:
            raise StoreError(f"{self.location}: refusing to write an empty store (no time steps)")
        split = np.zeros(self.n_time, np.int8) if split is None else np.asarray(split, np.int8)
        if split.shape != (self.n_time,):
            raise StoreError(f"{self.location}: {len(split)} split codes for {self.n_time} steps")
        group = zarr.open_group(self.location.zarr_store("a"), mode="a", zarr_format=3)
        train = split == 0 if (split == 0).any() else np.ones(self.n_time, bool)
        arrays = {n: (group[n], list(group[n].metadata.dimension_names)) for n in self.names}
        sizes = {
            d: n for arr, dims in arrays.values() for d, n in zip(dims, arr.shape, strict=True)
        }
        signal_dims = [self.tdim] + [d for d in MEMBER_DIMS if d in sizes]
        valid = np.ones([sizes[d] for d in signal_dims], bool)
        for arr, dims in arrays.values():
            stats = self._stats(arr, dims, train, self.normalisation)
            valid &= self._normalise(arr, dims, stats, signal_dims)
            arr.attrs.update(normalised_attrs(dict(arr.attrs), stats))
        extra = xr.Dataset(
            {"split": ([self.tdim], split), "valid": (signal_dims, valid.astype(np.uint8))}
        )
        extra["valid"].attrs = {"long_name": VALID_NOTE}
        extra["split"].attrs = {"long_name": SPLIT_NOTE}
        encoding = {"split": {"chunks": (self.n_time,)}, "valid": {"chunks": valid.shape}}
        extra.to_zarr(self.location.zarr_store("a"), mode="a", zarr_format=3, encoding=encoding,
                      consolidated=False)  # fmt: skip
        group.attrs.update({**(attrs or {}), "missing_signals": int(valid.size - int(valid.sum()))})
        with quiet_consolidation():
            zarr.consolidate_metadata(self.location.zarr_store("a"))

    def _blocks(self, arr: zarr.Array, dims: list[str]) -> list[tuple[int, int]]:
        """Time ranges of whole chunks whose float64 values fit in ``BLOCK_BYTES``."""
        sizes = zip(dims, arr.shape, strict=True)
        per_step = 8 * int(np.prod([n for d, n in sizes if d != self.tdim]))
        step = max(1, BLOCK_BYTES // max(per_step, 1))
        step = max(self.chunk_time, step - step % self.chunk_time)
        return [(t, min(self.n_time, t + step)) for t in range(0, self.n_time, step)]

    def _index(self, dims: list[str], t0: int, t1: int) -> tuple[slice, ...]:
        return tuple(slice(t0, t1) if d == self.tdim else slice(None) for d in dims)

    def _read(self, arr: zarr.Array, dims: list[str], t0: int, t1: int) -> np.ndarray:
        """Block ``[t0, t1)`` as float64 with the level (channel) axis last (added if none)."""
        values = np.asarray(arr[self._index(dims, t0, t1)], np.float64)
        ldim = next((d for d in LEVEL_DIMS if d in dims), None)
        return np.moveaxis(values, dims.index(ldim), -1) if ldim else values[..., None]

    def _stats(
        self, arr: zarr.Array, dims: list[str], train: np.ndarray, how: str
    ) -> dict[str, Any]:
        """Per-channel statistics over the training time steps (NaN-aware), streamed."""
        lo = hi = shift = None
        total = squares = count = 0.0
        for t0, t1 in self._blocks(arr, dims):
            if not train[t0:t1].any():
                continue
            values = self._read(arr, dims, t0, t1)[train[t0:t1]]
            flat = values.reshape(-1, values.shape[-1])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a channel all-NaN in a block
                if how == "zscore":
                    shift = np.nan_to_num(np.nanmean(flat, 0)) if shift is None else shift
                    centred = flat - shift
                    total = total + np.nansum(centred, 0)
                    squares = squares + np.nansum(centred**2, 0)
                    count = count + np.isfinite(centred).sum(0)
                else:
                    bmin, bmax = np.nanmin(flat, 0), np.nanmax(flat, 0)
                    lo = bmin if lo is None else np.fmin(lo, bmin)
                    hi = bmax if hi is None else np.fmax(hi, bmax)
        if how == "zscore":
            with np.errstate(all="ignore"):
                mean = total / count
                std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
            return {"kind": how, "mean": np.atleast_1d(mean + shift).tolist(),
                    "std": np.atleast_1d(std).tolist()}  # fmt: skip
        return {"kind": how, "min": np.atleast_1d(lo).tolist(), "max": np.atleast_1d(hi).tolist()}

    def _normalise(
        self, arr: zarr.Array, dims: list[str], stats: dict[str, Any], signal_dims: list[str]
    ) -> np.ndarray:
        """Rewrite ``arr`` normalised, block by block; returns where a signal has a value.

        The mask has ``signal_dims``' shape; a member axis the variable lacks broadcasts.
        """
        ldim = next((d for d in LEVEL_DIMS if d in dims), None)
        kept = [d for d in dims if d != ldim]  # axes of a block from _read, channel last
        other = tuple(i for i, d in enumerate(kept) if d not in signal_dims)
        order = [kept.index(d) for d in signal_dims if d in kept]
        parts = []
        for t0, t1 in self._blocks(arr, dims):
            normed = apply_norm(self._read(arr, dims, t0, t1), stats).astype(np.float32)
            has = np.isfinite(normed).any(-1)
            parts.append(np.transpose(has.any(axis=other) if other else has, order))
            out = np.moveaxis(normed, -1, dims.index(ldim)) if ldim else normed[..., 0]
            arr[self._index(dims, t0, t1)] = out
        ok = np.concatenate(parts, 0)
        for i, d in enumerate(signal_dims):
            if d not in kept:
                ok = np.expand_dims(ok, i)
        return ok


def time_blocks(
    n_time: int, per_step: int, align: int = 1, budget: int = BLOCK_BYTES
) -> list[tuple[int, int]]:
    """Time ranges ``[t0, t1)`` of at most ``budget`` bytes (``per_step`` each; >= 1 step).

    Blocks hold a multiple of ``align`` steps (whole chunks of the store they are appended
    to) where the budget allows: the blocks a builder loads before :meth:`FieldStoreStream.append`.
    """
    step = max(1, int(budget) // max(int(per_step), 1))
    if step > align:
        step -= step % align
    return [(t, min(n_time, t + step)) for t in range(0, n_time, step)]


def chunk_steps(chunk_time: int, per_step: int, budget: int = BLOCK_BYTES) -> int:
    """Time steps per chunk: ``chunk_time``, fewer when such a chunk would exceed ``budget``.

    A block that ends inside a chunk makes every append read, grow and rewrite that chunk,
    so a build's memory and time follow the chunk: a chunk no larger than a block
    (``per_step`` bytes a step) keeps them bounded by the block.
    """
    return max(1, min(int(chunk_time), int(budget) // max(int(per_step), 1)))


__all__ = ["FieldStoreStream", "chunk_steps", "time_blocks"]

"""Reader of xarray-compatible field stores (climate fields, volumes over time).

Each data variable is a modality with dims ``time, [member], [level], lat, lon`` or
``time, z, y, x``; ``time x member`` are the signals, levels are channels. Latitude is
flipped to ascending so coordinates grow with the index. Reads take whole time chunks, and
optionally only a spatial region (``region``: the chunks of some patches, see
:mod:`~pipelines.data.stores.patches`). Every error names the store and the chunk key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from pipelines.data.stores.field_attrs import norm_from_attrs
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.store_base import (
    GRID,
    LEVEL_DIMS,
    MEMBER_DIMS,
    SPATIAL_SETS,
    TIME_DIMS,
    ModalityInfo,
    Store,
    _chunk_key,
    _chunk_spans,
)


class FieldStore(Store):
    """Reader of xarray-compatible field stores (see the module docstring).

    Attributes:
        available: every data variable of the store (``modalities``: those read).
        spatial_chunks: per variable, the chunk extent of each spatial axis (stored order).
        flipped: per variable, whether its first spatial axis (latitude) is stored
            descending and read reversed.
    """

    def __init__(
        self,
        location: StoreLocation,
        ds: Any,
        variables: list[str] | None,
        group: zarr.Group | None = None,
    ) -> None:
        self.location, self.ds, self.group = location, ds, group
        self.attrs = dict(ds.attrs)
        data_vars = [v for v in ds.data_vars if v not in ("split", "valid")]
        order = [v for v in ds.attrs.get("mia_variables", []) if v in data_vars]
        data_vars = order + [v for v in data_vars if v not in order]
        self.modalities = list(variables or data_vars)
        self.available = data_vars  # every variable of the store, those not read included
        missing = [v for v in self.modalities if v not in ds.data_vars]
        if missing:
            raise self._fail(f"missing variable(s) {missing}; the store has {data_vars}")
        if not self.modalities:
            raise self._fail("empty store (no data variables)")
        self.layout: dict[str, tuple[str, str | None, str | None, tuple[str, ...]]] = {}
        self.info, lengths, chunks = {}, {}, []
        self.time_chunks: dict[str, int] = {}
        self.spatial_chunks: dict[str, tuple[int, ...]] = {}
        self.flipped: dict[str, bool] = {}
        for v in self.modalities:
            dims = ds[v].dims
            tdim = next((d for d in TIME_DIMS if d in dims), None)
            sdims = next((s for s in SPATIAL_SETS if all(d in dims for d in s)), None)
            if tdim is None or sdims is None:
                raise self._fail(
                    f"variable {v!r} has dims {dims}; expected (time, [member], [level], lat, lon) "
                    "or (time, z, y, x)"
                )
            mdim = next((d for d in MEMBER_DIMS if d in dims), None)
            ldim = next((d for d in LEVEL_DIMS if d in dims), None)
            extra = set(dims) - {tdim, mdim, ldim, *sdims}
            if extra:
                raise self._fail(
                    f"variable {v!r} has unexpected dims {sorted(extra)} (dims {dims})"
                )
            self.layout[v] = (tdim, mdim, ldim, sdims)
            members = ds.sizes[mdim] if mdim else 1
            lengths[v] = ds.sizes[tdim] * members
            shape = tuple(ds.sizes[d] for d in sdims)
            extent = []
            for d in sdims:
                c = (
                    np.asarray(ds[d].values, np.float64)
                    if d in ds.coords
                    else np.arange(ds.sizes[d], dtype=float)
                )
                extent.append([float(c.min()), float(c.max())])
            norm = norm_from_attrs(ds[v].attrs)
            self.info[v] = ModalityInfo(v, shape, ds.sizes[ldim] if ldim else 1, GRID, extent, norm)
            enc = ds[v].encoding.get("chunks") or ds[v].encoding.get("preferred_chunks", {})

            def chunk_of(d: str, enc: Any = enc, dims: tuple = dims) -> int:
                c = enc[dims.index(d)] if isinstance(enc, tuple | list) else enc.get(d)
                return max(1, int(c if c is not None else ds.sizes[d]))

            self.time_chunks[v] = chunk_of(tdim)
            self.spatial_chunks[v] = tuple(min(chunk_of(d), ds.sizes[d]) for d in sdims)
            chunks.append(self.time_chunks[v] * members)
            lat = sdims[0]
            if "lat" in lat and lat in ds.coords:
                values = np.asarray(ds[lat].values)
                self.flipped[v] = bool(values.size > 1 and values[0] > values[-1])
            else:
                self.flipped[v] = False
        if len(set(lengths.values())) != 1:
            raise self._fail(
                f"variables have different numbers of signals (time x member): {lengths}"
            )
        self.num_signals = next(iter(lengths.values()))
        if self.num_signals == 0:
            raise self._fail("empty store (time axis of length 0)")
        self.chunk_size = min(chunks)
        tdim0, mdim0 = self.layout[self.modalities[0]][:2]
        members = ds.sizes[mdim0] if mdim0 else 1
        if "split" in ds.data_vars:
            self.split = np.repeat(np.asarray(ds["split"].values, np.int8), members)
        else:
            self.split = np.zeros(self.num_signals, np.int8)
        self.scale = np.ones(self.num_signals, np.float32)
        if "valid" in ds.data_vars:
            v = np.asarray(ds["valid"].values).astype(bool)
            self.valid = v.reshape(-1) if v.size == self.num_signals else np.repeat(v, members)
        else:
            self.valid = np.ones(self.num_signals, bool)

    def read(
        self, start: int, stop: int, region: Sequence[slice] | None = None
    ) -> dict[str, np.ndarray]:
        """See :meth:`Store.read`; signals are ``time`` major, ``member`` minor.

        Args:
            start: first signal.
            stop: end signal (exclusive).
            region: one ``slice(a, b)`` per spatial axis, in the reader's index order
                (latitude ascending): only these points are read (the chunks holding
                them), ``(n, prod(b - a), C)`` row-major; the whole grid when ``None``.
        """
        out = {}
        for v in self.modalities:
            tdim, mdim, ldim, sdims = self.layout[v]
            members = self.ds.sizes[mdim] if mdim else 1
            t0, t1 = start // members, -(-stop // members)
            order = [tdim] + ([mdim] if mdim else []) + list(sdims) + ([ldim] if ldim else [])
            where = self._stored(v, region)
            corner = {d: s.start for d, s in where.items()}
            shown = (
                ", points " + ", ".join(f"{d} {s.start}:{s.stop}" for d, s in where.items())
                if where
                else ""
            )
            parts = []
            for a, b in _chunk_spans(t0, t1, self.time_chunks[v]):
                key = self._key(v, a, corner)
                try:
                    block = self.ds[v].isel({tdim: slice(a, b), **where}).transpose(*order)
                    parts.append(self._retried(lambda block=block: block.values, key))
                except Exception as err:  # zarr/codec/IO errors: name the chunk
                    raise self._fail(
                        f"cannot read chunk {key!r} of variable {v!r} (time {a}:{b}{shown})",
                        err,
                    ) from err
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if self.flipped[v]:
                arr = np.flip(arr, axis=2 if mdim else 1)
            arr = np.asarray(arr, np.float32).reshape(
                (t1 - t0) * members, -1, self.info[v].channels
            )
            off = start - t0 * members
            out[v] = arr[off : off + (stop - start)]
        return out

    def _stored(self, v: str, region: Sequence[slice] | None) -> dict[str, slice]:
        """``region`` (reader order) as stored index slices per spatial dim of ``v``."""
        if region is None:
            return {}
        sdims = self.layout[v][3]
        grid = self.info[v].grid_shape
        out = {}
        for i, (d, s, n) in enumerate(zip(sdims, region, grid, strict=True)):
            a, b = max(0, int(s.start or 0)), min(n, int(n if s.stop is None else s.stop))
            out[d] = slice(n - b, n - a) if i == 0 and self.flipped[v] else slice(a, b)
        return out

    def _key(self, v: str, t: int, corner: dict[str, int] | None = None) -> str:
        """Key of the chunk holding time ``t`` (and the stored point ``corner``) of ``v``."""
        dims = self.ds[v].dims
        at = {dims.index(self.layout[v][0]): t}
        at.update({dims.index(d): i for d, i in (corner or {}).items()})
        try:
            return _chunk_key(self.group[v], v, at)
        except Exception:  # no group or no such array: time-chunk index only
            return f"{v}/<time chunk {t // self.time_chunks[v]}>"

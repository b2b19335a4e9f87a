"""Read signal stores and xarray field stores through one interface.

A :class:`Store` exposes ``N`` signals per modality as ``(n, P, C)`` float32 point
arrays with coordinates in ``[-1, 1]^d``, read by whole chunks along the signal axis:

* **signal stores** (``attrs["mia_store"]["kind"] == "signals"``, see ``writer.py``);
* **field stores**: xarray-compatible Zarr with a time axis and spatial axes
  (``time, [member], [level], lat, lon`` or ``time, z, y, x``); each data variable is
  a modality, ``time x member`` are the signals, levels are channels. Latitude is
  flipped to ascending so coordinates grow with the index.

Every error names the store (redacted URL) and the variable or chunk key.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.retry import read_with_retry

TIME_DIMS = ("time", "valid_time", "t")
MEMBER_DIMS = ("member", "number", "ensemble", "realization")
LEVEL_DIMS = ("level", "pressure_level", "isobaricInhPa", "plev", "lev")
SPATIAL_SETS = (("latitude", "longitude"), ("lat", "lon"), ("z", "y", "x"), ("y", "x"))


@dataclass
class ModalityInfo:
    """Geometry and normalisation of one modality.

    Attributes:
        name: modality (variable) name.
        grid_shape: spatial grid, or ``(P,)`` for point sets.
        channels: ``C``.
        coords: ``(P, d)`` float32 in ``[-1, 1]``; ``None`` when per-signal.
        extent: physical ``[lo, hi]`` per axis.
        norm: normalisation statistics (see ``writer.apply_norm``).
    """

    name: str
    grid_shape: tuple[int, ...]
    channels: int
    coords: np.ndarray | None
    extent: list[list[float]] = field(default_factory=list)
    norm: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})

    @property
    def num_points(self) -> int:
        """Points per signal ``P``."""
        return math.prod(self.grid_shape)


def grid_coords(shape: tuple[int, ...]) -> np.ndarray:
    """``(prod(shape), d)`` row-major grid coordinates in ``[-1, 1]`` (corners included)."""
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], -1).astype(np.float32)


def _chunk_key(arr: Any, name: str, axis: int, index: int) -> str:
    """Storage key of the chunk holding ``index`` along ``axis`` (chunk 0 along the others)."""
    try:
        coords = [0] * arr.ndim
        coords[axis] = index // arr.chunks[axis]
        return f"{name}/{arr.metadata.encode_chunk_key(tuple(coords))}"
    except Exception:  # unusual metadata (sharding...): name the array at least
        return f"{name}/<chunk of index {index}>"


def _chunk_spans(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut at multiples of ``size`` (one span per chunk touched)."""
    spans, a = [], start
    while a < stop:
        b = min(stop, (a // size + 1) * size)
        spans.append((a, b))
        a = b
    return spans or [(start, stop)]


class Store(abc.ABC):
    """Common reader API; use :func:`open_store`."""

    location: StoreLocation
    modalities: list[str]
    info: dict[str, ModalityInfo]
    num_signals: int
    chunk_size: int
    split: np.ndarray
    scale: np.ndarray
    valid: np.ndarray
    attrs: dict[str, Any]

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """``[start, stop)`` signal ranges aligned to the store's chunks."""
        return [
            (s, min(self.num_signals, s + self.chunk_size))
            for s in range(0, self.num_signals, self.chunk_size)
        ]

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Modality -> ``(stop - start, P, C)`` float32 (NaN where missing)."""

    def read_coords(self, modality: str, start: int, stop: int) -> np.ndarray:
        """``(P, d)`` shared coordinates, or ``(n, P, d)`` when per-signal."""
        c = self.info[modality].coords
        if c is None:
            raise StoreError(f"{self.location}: modality {modality!r} has no shared coordinates")
        return c

    def _retried(self, read: Callable[[], np.ndarray], key: str) -> np.ndarray:
        """``read()`` of chunk ``key``, retried through an outage of a remote store."""
        return read_with_retry(read, f"chunk {key!r} of {self.location}", self.location.is_remote)

    def _fail(self, what: str, err: Exception | None = None) -> StoreError:
        detail = f": {type(err).__name__}: {err}" if err is not None else ""
        return StoreError(f"{self.location}: {what}{detail}")


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


class FieldStore(Store):
    """Reader of xarray-compatible field stores (climate fields, volumes over time)."""

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
        missing = [v for v in self.modalities if v not in ds.data_vars]
        if missing:
            raise self._fail(f"missing variable(s) {missing}; the store has {data_vars}")
        if not self.modalities:
            raise self._fail("empty store (no data variables)")
        self.layout: dict[str, tuple[str, str | None, str | None, tuple[str, ...]]] = {}
        self.info, lengths, chunks = {}, {}, []
        self.time_chunks: dict[str, int] = {}
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
            norm = dict(ds[v].attrs.get("mia_norm", {"kind": "none"}))
            self.info[v] = ModalityInfo(
                v, shape, ds.sizes[ldim] if ldim else 1, grid_coords(shape), extent, norm
            )
            enc = ds[v].encoding.get("chunks") or ds[v].encoding.get("preferred_chunks", {})
            tchunk = (
                enc[dims.index(tdim)]
                if isinstance(enc, tuple | list)
                else enc.get(tdim, ds.sizes[tdim])
            )
            self.time_chunks[v] = max(1, int(tchunk))
            chunks.append(int(tchunk) * members)
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

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """See :meth:`Store.read`; signals are ``time`` major, ``member`` minor."""
        out = {}
        for v in self.modalities:
            tdim, mdim, ldim, sdims = self.layout[v]
            members = self.ds.sizes[mdim] if mdim else 1
            t0, t1 = start // members, -(-stop // members)
            order = [tdim] + ([mdim] if mdim else []) + list(sdims) + ([ldim] if ldim else [])
            parts = []
            for a, b in _chunk_spans(t0, t1, self.time_chunks[v]):
                try:
                    block = self.ds[v].isel({tdim: slice(a, b)}).transpose(*order)
                    parts.append(self._retried(lambda block=block: block.values, self._key(v, a)))
                except Exception as err:  # zarr/codec/IO errors: name the chunk
                    raise self._fail(
                        f"cannot read chunk {self._key(v, a)!r} of variable {v!r} (time {a}:{b})",
                        err,
                    ) from err
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if "lat" in sdims[0] or sdims[0] == "latitude":
                lat = np.asarray(self.ds[sdims[0]].values)
                if lat.size > 1 and lat[0] > lat[-1]:
                    arr = np.flip(arr, axis=2 if mdim else 1)
            arr = np.asarray(arr, np.float32).reshape(
                (t1 - t0) * members, -1, self.info[v].channels
            )
            off = start - t0 * members
            out[v] = arr[off : off + (stop - start)]
        return out

    def _key(self, v: str, t: int) -> str:
        tdim = self.layout[v][0]
        axis = self.ds[v].dims.index(tdim)
        try:
            return _chunk_key(self.group[v], v, axis, t)
        except Exception:  # no group or no such array: time-chunk index only
            return f"{v}/<time chunk {t // self.time_chunks[v]}>"


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
        ds = xr.open_zarr(location.zarr_store("r"), chunks=None, consolidated=False)
    except Exception as err:
        raise StoreError(
            f"{location}: not a signal store and not an xarray field store: "
            f"{type(err).__name__}: {err}"
        ) from err
    return FieldStore(location, ds, modalities, group)

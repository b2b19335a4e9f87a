"""The store reader's common pieces: dims, modality geometry, the :class:`Store` API.

Shared by :mod:`~pipelines.data.stores.reader` (signal stores, :func:`open_store`) and
:mod:`~pipelines.data.stores.field_reader` (field stores); import them from ``reader``.

Also the record of the splits served in this process (:func:`note_split`,
:func:`served_splits`): every reader that selects a split's signals (episode streams,
Ray Data reads, continual task sequences, labelled images) notes its name, so a test can
prove that training and checkpoint selection never served the test split (docs/splits.md).
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.retry import read_with_retry
from pipelines.data.stores.writer import SPLITS

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
        coords: ``(P, d)`` float32 in ``[-1, 1]``; ``None`` when per-signal; given as
            :data:`GRID`, the grid's coordinates (:func:`grid_coords`), computed when first
            read: a 256^3 grid's are 200 MB that patch and region readers never need.
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

    @property
    def per_signal(self) -> bool:
        """Coordinates differ per signal (``coords is None``), told without computing them."""
        return self.__dict__.get("_coords") is None


GRID = "grid"  # ModalityInfo(coords=GRID): the grid's coordinates, computed on first read


def _get_coords(info: ModalityInfo) -> np.ndarray | None:
    value = info.__dict__.get("_coords")
    if isinstance(value, str):  # GRID
        value = info.__dict__["_coords"] = grid_coords(tuple(info.grid_shape))
    return value


def _set_coords(info: ModalityInfo, value: np.ndarray | str | None) -> None:
    info.__dict__["_coords"] = value


ModalityInfo.coords = property(_get_coords, _set_coords)  # type: ignore[assignment]


def grid_coords(shape: tuple[int, ...]) -> np.ndarray:
    """``(prod(shape), d)`` row-major grid coordinates in ``[-1, 1]`` (corners included)."""
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], -1).astype(np.float32)


def _chunk_key(arr: Any, name: str, axis: int | dict[int, int], index: int = 0) -> str:
    """Storage key of the chunk holding ``index`` along ``axis`` (chunk 0 along the others).

    ``axis`` may also map several axes to an index each (``index`` is then unused).
    """
    at = axis if isinstance(axis, dict) else {axis: index}
    try:
        coords = [0] * arr.ndim
        for ax, i in at.items():
            coords[ax] = i // arr.chunks[ax]
        return f"{name}/{arr.metadata.encode_chunk_key(tuple(coords))}"
    except Exception:  # unusual metadata (sharding...): name the array at least
        return f"{name}/<chunk of index {list(at.values())}>"


def _chunk_spans(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut at multiples of ``size`` (one span per chunk touched)."""
    spans, a = [], start
    while a < stop:
        b = min(stop, (a // size + 1) * size)
        spans.append((a, b))
        a = b
    return spans or [(start, stop)]


_SERVED: set[str] = set()  # split names served in this process (see note_split)
_SERVED_LOCK = threading.Lock()  # episodes are built on prefetch threads


def note_split(split: str | None) -> None:
    """Record that a reader of this process serves the signals of ``split``.

    ``None`` (every signal) records every split. Call it wherever a split's signals are
    selected for reading, not where chunks are merely decoded.

    Raises:
        ValueError: ``split`` is not a split name (names the valid ones).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)} or None, got {split!r}")
    with _SERVED_LOCK:
        _SERVED.update(SPLITS if split is None else (split,))


def served_splits() -> frozenset[str]:
    """The split names served in this process since the last :func:`reset_served_splits`."""
    with _SERVED_LOCK:
        return frozenset(_SERVED)


def reset_served_splits() -> None:
    """Forget the splits served so far (a test starts its record here)."""
    with _SERVED_LOCK:
        _SERVED.clear()


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

    def split_indices(self, split: str) -> np.ndarray:
        """Indices of the signals of ``split`` (missing ones included), noted as served."""
        note_split(split)
        return np.flatnonzero(self.split == SPLITS[split])

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

"""A Ray Data Datasource over Zarr v3 signal and field stores.

Ray's own ``read_zarr`` supports only Zarr v2. Here the store's chunk ranges along the
signal (time) axis are grouped into at most ``parallelism`` contiguous read tasks; each
task opens the store once and reads whole chunks, so a large store is sharded across the
cluster without reading any chunk twice. Rows are signals:

* ``index`` (int64): global signal index; ``scale`` (float32);
* ``m:<modality>``: ``(P, C)`` float32 tensor (NaN where missing);
* ``c:<modality>``: ``(P, d)`` coordinates, only for per-signal point sets.

Filtering by split and by temporal stride (``lambda_t``) happens inside the read tasks;
the datasource notes its split as served (``store_base.note_split``) where it is built.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterator
from functools import partial

import numpy as np
import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata
from ray.data.extensions import ArrowTensorArray

from pipelines.data.stores import Store, StoreLocation, open_store
from pipelines.data.stores.patches import patched
from pipelines.data.stores.reader import keep_rows
from pipelines.data.stores.store_base import note_split
from pipelines.data.stores.writer import SPLITS

# Stores opened by this (worker) process, per datasource instance: the read tasks of one
# dataset that land on the same worker open the store once, not once per task (an open
# costs several requests on S3). A new datasource has a new token and opens afresh.
_OPENED: OrderedDict[str, Store] = OrderedDict()


def _open_once(
    token: str,
    location: StoreLocation,
    modalities: list[str],
    patch: tuple[int, ...] = (),
    patch_coords: str = "local",
) -> Store:
    store = _OPENED.get(token)
    if store is None:
        store = _OPENED[token] = patched(open_store(location, modalities), patch, patch_coords)
        while len(_OPENED) > 4:
            _OPENED.popitem(last=False)
    return store


def _read_ranges(
    location: StoreLocation,
    modalities: list[str],
    ranges: list[tuple[int, int]],
    split_code: int | None,
    time_stride: int,
    token: str = "",
    patch: tuple[int, ...] = (),
    patch_coords: str = "local",
) -> Iterator[pa.Table]:
    if token:
        store = _open_once(token, location, modalities, patch, patch_coords)
    else:
        store = patched(open_store(location, modalities), patch, patch_coords)
    per_signal = [m for m in modalities if store.info[m].per_signal]
    for start, stop in ranges:
        idx = np.arange(start, stop)
        keep = keep_rows(
            store.split[start:stop], store.valid[start:stop], start, split_code, time_stride
        )
        if not keep.any():
            continue
        data = store.read(start, stop)
        cols = {"index": pa.array(idx[keep]), "scale": pa.array(store.scale[start:stop][keep])}
        for m in modalities:
            cols[f"m:{m}"] = ArrowTensorArray.from_numpy(np.ascontiguousarray(data[m][keep]))
        for m in per_signal:
            cols[f"c:{m}"] = ArrowTensorArray.from_numpy(
                np.ascontiguousarray(store.read_coords(m, start, stop)[keep])
            )
        yield pa.table(cols)


class ZarrStoreDatasource(Datasource):
    """Chunk-sharded reads of a store (see the module docstring).

    Args:
        location: the store.
        modalities: modalities (variables) to read; all by default.
        split: ``train``, ``val``, ``test`` or ``None`` for every signal.
        time_stride: keep signals whose index is a multiple of ``lambda_t``.
        patch: rows are patches of this size (``data.patch``, see
            :mod:`pipelines.data.stores.patches`); empty: whole signals.
        patch_coords: ``local`` or ``global`` patch coordinates (``data.patch_coords``).
    """

    def __init__(
        self,
        location: StoreLocation,
        modalities: list[str] | None = None,
        split: str | None = None,
        time_stride: int = 1,
        patch: tuple[int, ...] = (),
        patch_coords: str = "local",
    ) -> None:
        super().__init__()
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)} or None, got {split!r}")
        if time_stride < 1:
            raise ValueError("time_stride must be >= 1")
        note_split(split)  # on the driver that builds the dataset (docs/splits.md)
        self.location, self.split_code, self.time_stride = location, SPLITS.get(split), time_stride
        self.token = uuid.uuid4().hex  # keys the per-worker cache of opened stores
        self.patch, self.patch_coords = tuple(patch), patch_coords
        store = patched(open_store(location, modalities), self.patch, patch_coords)
        self.modalities = store.modalities
        self.ranges = store.chunk_ranges()
        self.split, self.valid = store.split, store.valid
        self.row_bytes = sum(
            4 * store.info[m].num_points * store.info[m].channels for m in self.modalities
        )

    def get_name(self) -> str:
        """Name shown in Ray Data progress output."""
        return "ZarrStore"

    def _rows(self, ranges: list[tuple[int, int]]) -> int:
        return int(
            sum(
                keep_rows(
                    self.split[a:b], self.valid[a:b], a, self.split_code, self.time_stride
                ).sum()
                for a, b in ranges
            )
        )

    def estimate_inmemory_data_size(self) -> int | None:
        """Bytes of all selected rows."""
        return self._rows(self.ranges) * self.row_bytes

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: object | None = None,
    ) -> list[ReadTask]:
        """One task per group of contiguous chunks (at most ``parallelism`` groups)."""
        n_tasks = max(1, min(parallelism, len(self.ranges)))
        bounds = np.linspace(0, len(self.ranges), n_tasks + 1).astype(int)
        tasks = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            group = self.ranges[a:b]
            rows = self._rows(group)
            if not group or rows == 0:
                continue
            meta = BlockMetadata(
                num_rows=rows, size_bytes=rows * self.row_bytes, exec_stats=None, input_files=None
            )
            fn = partial(
                _read_ranges,
                self.location,
                self.modalities,
                group,
                self.split_code,
                self.time_stride,
                self.token,
                self.patch,
                self.patch_coords,
            )
            tasks.append(ReadTask(fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks


def read_store(
    location: StoreLocation,
    modalities: list[str] | None = None,
    split: str | None = None,
    time_stride: int = 1,
    override_num_blocks: int | None = None,
    num_cpus: float | None = None,
    patch: tuple[int, ...] = (),
    patch_coords: str = "local",
    **ray_remote_args,
):
    """``ray.data.Dataset`` of a store's signals (see :class:`ZarrStoreDatasource`).

    ``num_cpus`` is the CPU reservation per read task (Ray Data's default is 1); with
    ``patch`` the rows are patch signals (``patch_coords``: their coordinates).
    """
    import ray.data

    return ray.data.read_datasource(
        ZarrStoreDatasource(location, modalities, split, time_stride, patch, patch_coords),
        override_num_blocks=override_num_blocks,
        num_cpus=num_cpus,
        ray_remote_args=ray_remote_args or None,
    )

"""Episode streams: from a Ray Data dataset (or shard), or straight from a store.

Both yield :class:`~mia_core.data.Episode` batches built by
:func:`pipelines.data.episodes.build_episode`, so the two paths give identical episodes for
the same signals, seed and epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from mia_core.data import Episode
from pipelines.data.episodes import SCALE_PREFIX, EpisodeSpec, build_episode
from pipelines.data.stores import Store
from pipelines.data.stores.reader import keep_rows
from pipelines.data.stores.store_base import note_split
from pipelines.data.stores.writer import SPLITS

CACHE_BYTES = 256 * 2**20  # decoded chunks kept by store_episodes


def _named(spec: EpisodeSpec, store: Store) -> EpisodeSpec:
    """``spec`` with the store's redacted URL as label when it has none (error messages)."""
    if spec.store_name != EpisodeSpec.store_name:
        return spec
    return dataclasses.replace(spec, store_name=store.location.display)


def modality_scales(store: Store) -> dict[str, np.ndarray]:
    """Modality -> ``(N,)`` normalised-MSE scale over all signals of ``store``.

    The store's ``scale__<modality>`` extra array where it has one (synthetic ``paper``
    variant: ``a_m`` per modality), else its per-signal ``scale``.
    """
    extra = set(store.attrs.get("extra_arrays", ()))
    group = getattr(store, "group", None)
    out = {}
    for m in store.modalities:
        name = f"{SCALE_PREFIX}{m}"
        found = group is not None and name in extra
        out[m] = np.asarray(group[name][...], np.float32) if found else store.scale
    return out


def _episode_from_columns(
    batch: dict, store: Store, spec: EpisodeSpec, epoch: int, scales: dict[str, np.ndarray]
) -> Episode:
    rows, coords = {}, {}
    for m in store.modalities:
        rows[m] = np.asarray(batch[f"m:{m}"])
        c = store.info[m].coords
        coords[m] = c if c is not None else np.asarray(batch[f"c:{m}"])
    shapes = {m: store.info[m].grid_shape for m in store.modalities}
    index = np.asarray(batch["index"])
    scale = {m: s[index] for m, s in scales.items()}
    return build_episode(rows, index, coords, spec, epoch, scale, shapes)


def dataset_episodes(
    dataset,
    store: Store,
    spec: EpisodeSpec,
    batch_size: int,
    epoch: int = 0,
    local_shuffle_buffer_size: int | None = None,
    seed: int | None = None,
    drop_last: bool = False,
) -> Iterator[Episode]:
    """Episodes from a Ray ``Dataset`` or ``DataIterator`` (a Ray Train worker's shard).

    Batches arrive as NumPy arrays (``iter_batches(batch_format="numpy")``) and are turned
    into episodes in the consuming process. Not ``iter_torch_batches``: its default
    ``device="auto"`` delivers CUDA tensors inside a GPU Ray Train worker.
    """
    spec = _named(spec, store)
    kwargs = {"batch_size": batch_size, "drop_last": drop_last}
    if local_shuffle_buffer_size:
        kwargs.update(local_shuffle_buffer_size=local_shuffle_buffer_size, local_shuffle_seed=seed)
    scales = modality_scales(store)
    for batch in dataset.iter_batches(batch_format="numpy", **kwargs):
        yield _episode_from_columns(batch, store, spec, epoch, scales)


def shuffled_order(store: Store, selected: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The signal order of a shuffled epoch of ``store_episodes``, from ``(seed, epoch)``.

    A store whose decoded chunks fit :data:`CACHE_BYTES` gets one permutation of all its
    signals (each chunk is read once anyway). A larger store (patches of a 0.25-degree
    field: a 32-patch batch would otherwise read 32 chunk rows of 32 different steps)
    gets its read ranges in random order, and its signals permuted within windows of
    ranges that fill half the cache: each range is read once per epoch and a batch still
    mixes the steps and regions of a window.
    """
    rng = np.random.default_rng([seed, epoch])
    ranges = store.chunk_ranges()
    per_signal = sum(
        4 * store.info[m].num_points * (store.info[m].channels + store.info[m].per_signal)
        for m in store.modalities
    )
    if per_signal * store.num_signals <= CACHE_BYTES or len(ranges) < 2:
        return rng.permutation(selected)
    starts = np.array([a for a, _ in ranges])
    owner = np.searchsorted(starts, selected, "right") - 1
    out: list[np.ndarray] = []
    window: list[int] = []
    filled = 0
    for j in rng.permutation(len(ranges)):
        window.append(int(j))
        filled += (ranges[j][1] - ranges[j][0]) * per_signal
        if filled >= CACHE_BYTES // 2 or len(window) == len(ranges):
            out.append(rng.permutation(selected[np.isin(owner, window)]))
            window, filled = [], 0
    if window:
        out.append(rng.permutation(selected[np.isin(owner, window)]))
    return np.concatenate(out) if out else selected[:0]


def store_episodes(
    store: Store,
    spec: EpisodeSpec,
    batch_size: int,
    split: str | None = "train",
    epoch: int = 0,
    shuffle: bool = True,
    time_stride: int = 1,
    skip_batches: int = 0,
) -> Iterator[Episode]:
    """Episodes read directly from a store in one process (tests, small runs).

    Reads whole chunks; with ``shuffle`` the signal order is permuted per epoch from
    ``(spec.seed, epoch)``; ``skip_batches`` starts after that many batches (resume).
    """
    spec = _named(spec, store)
    note_split(split)  # the record of served splits (docs/splits.md)
    idx = np.arange(store.num_signals)
    code = None if split is None else SPLITS[split]
    keep = keep_rows(store.split, store.valid, 0, code, time_stride)  # never missing ones
    selected = idx[keep]
    if shuffle:
        selected = shuffled_order(store, selected, spec.seed, epoch)
    # Decoded chunks (values and per-signal coordinates), first in first out, bounded in
    # bytes: a shuffled epoch over a store that fits reads every chunk once.
    cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    cached_bytes = 0
    ranges = store.chunk_ranges()
    starts = np.array([a for a, _ in ranges])  # ranges may differ in size (patch stores)
    shapes = {m: store.info[m].grid_shape for m in store.modalities}
    per_signal = [m for m in store.modalities if store.info[m].per_signal]
    scales = modality_scales(store)
    for s in range(skip_batches * batch_size, len(selected), batch_size):
        batch_idx = selected[s : s + batch_size]
        rows = {m: [] for m in store.modalities}
        coords_rows = {m: [] for m in store.modalities}
        for i in batch_idx:
            r = ranges[int(np.searchsorted(starts, int(i), "right")) - 1]
            if r not in cache:
                data = store.read(*r)
                data.update({f"c:{m}": store.read_coords(m, *r) for m in per_signal})
                size = sum(v.nbytes for v in data.values())
                while cache and cached_bytes + size > CACHE_BYTES:
                    cached_bytes -= sum(v.nbytes for v in cache.pop(next(iter(cache))).values())
                cache[r], cached_bytes = data, cached_bytes + size
            for m in store.modalities:
                rows[m].append(cache[r][m][int(i) - r[0]])
                if m in per_signal:
                    coords_rows[m].append(cache[r][f"c:{m}"][int(i) - r[0]])
        coords = {
            m: (
                store.info[m].coords
                if store.info[m].coords is not None
                else np.stack(coords_rows[m])
            )
            for m in store.modalities
        }
        yield build_episode(
            {m: np.stack(v) for m, v in rows.items()},
            batch_idx,
            coords,
            spec,
            epoch,
            {m: v[batch_idx] for m, v in scales.items()},
            shapes,
        )

"""Episode streams: from a Ray Data dataset (or shard), or straight from a store.

Both yield :class:`~mia_core.data.Episode` batches built by
:func:`pipelines.episodes.build_episode`, so the two paths give identical episodes for
the same signals, seed and epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mia_core.data import Episode
from pipelines.episodes import EpisodeSpec, build_episode
from pipelines.stores import Store
from pipelines.stores.writer import SPLITS


def _episode_from_columns(batch: dict, store: Store, spec: EpisodeSpec, epoch: int) -> Episode:
    rows, coords = {}, {}
    for m in store.modalities:
        rows[m] = np.asarray(batch[f"m:{m}"])
        c = store.info[m].coords
        coords[m] = c if c is not None else np.asarray(batch[f"c:{m}"])
    shapes = {m: store.info[m].grid_shape for m in store.modalities}
    return build_episode(
        rows, np.asarray(batch["index"]), coords, spec, epoch, np.asarray(batch["scale"]), shapes
    )


def dataset_episodes(
    dataset,
    store: Store,
    spec: EpisodeSpec,
    batch_size: int,
    epoch: int = 0,
    local_shuffle_buffer_size: int | None = None,
    seed: int | None = None,
) -> Iterator[Episode]:
    """Episodes from a Ray ``Dataset`` or ``DataIterator`` (a Ray Train worker's shard).

    Batches arrive through ``iter_torch_batches`` (zero-copy CPU tensors) and are turned
    into episodes in the consuming process.
    """
    kwargs = {"batch_size": batch_size}
    if local_shuffle_buffer_size:
        kwargs.update(local_shuffle_buffer_size=local_shuffle_buffer_size, local_shuffle_seed=seed)
    for batch in dataset.iter_torch_batches(**kwargs):
        yield _episode_from_columns({k: v.numpy() for k, v in batch.items()}, store, spec, epoch)


def store_episodes(
    store: Store,
    spec: EpisodeSpec,
    batch_size: int,
    split: str | None = "train",
    epoch: int = 0,
    shuffle: bool = True,
    time_stride: int = 1,
) -> Iterator[Episode]:
    """Episodes read directly from a store in one process (tests, small runs).

    Reads whole chunks; with ``shuffle`` the signal order is permuted per epoch from
    ``(spec.seed, epoch)``.
    """
    idx = np.arange(store.num_signals)
    keep = idx % time_stride == 0
    if split is not None:
        keep &= store.split == SPLITS[split]
    selected = idx[keep]
    if shuffle:
        selected = np.random.default_rng([spec.seed, epoch]).permutation(selected)
    cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    ranges = store.chunk_ranges()
    shapes = {m: store.info[m].grid_shape for m in store.modalities}
    for s in range(0, len(selected), batch_size):
        batch_idx = selected[s : s + batch_size]
        rows = {m: [] for m in store.modalities}
        coords_rows = {m: [] for m in store.modalities}
        for i in batch_idx:
            r = ranges[int(i) // store.chunk_size]
            if r not in cache:
                if len(cache) > 8:
                    cache.pop(next(iter(cache)))
                cache[r] = store.read(*r)
            for m in store.modalities:
                rows[m].append(cache[r][m][int(i) - r[0]])
                if store.info[m].coords is None:
                    coords_rows[m].append(store.read_coords(m, int(i), int(i) + 1)[0])
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
            store.scale[batch_idx],
            shapes,
        )

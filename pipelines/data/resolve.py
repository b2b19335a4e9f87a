"""Resolve a config's data section to a store, building the synthetic store when needed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mia_core.config import Config, ConfigError
from mia_core.data import generate_synthetic1d
from mia_core.data.synthetic1d import ACTIVATIONS
from pipelines.data.episodes import SCALE_PREFIX, EpisodeSpec
from pipelines.data.stores import (
    ModalityData,
    Store,
    StoreLocation,
    make_location,
    write_signal_store,
)
from pipelines.data.stores.patches import open_patched


def synthetic_split(num_functions: int, num_train: int, val_fraction: float) -> np.ndarray:
    """First ``num_train`` functions train (their last ``val_fraction`` validation), rest test."""
    split = np.full(num_functions, 2, np.int8)
    n_val = int(num_train * val_fraction)
    split[: num_train - n_val] = 0
    split[num_train - n_val : num_train] = 1
    return split


def build_synthetic_store(cfg: Config, location: StoreLocation, chunk: int = 64) -> None:
    """Write the synthetic benchmark described by ``cfg.data`` to ``location``."""
    d = cfg.data
    sig = generate_synthetic1d(
        d.num_functions,
        d.num_points,
        tuple(d.x_range),
        d.noise_std,
        tuple(d.modalities),
        d.seed,
        d.synthetic_variant,
    )
    data = {
        m: ModalityData(v.numpy(), "grid", [list(d.x_range)], normalisation="none")
        for m, v in sig.values.items()
    }
    write_signal_store(
        location,
        data,
        synthetic_split(d.num_functions, d.num_train, d.val_fraction),
        sig.scale.numpy(),
        {"source": "synthetic1d", "seed": d.seed, "variant": d.synthetic_variant},
        chunk,
        extra_arrays={f"{SCALE_PREFIX}{m}": s.numpy() for m, s in sig.modality_scale.items()},
    )


def build_once(path: Path, build: Callable[[StoreLocation], None]) -> StoreLocation:
    """A local store at ``path``, written by ``build`` unless it exists already.

    ``build`` writes into a temporary sibling folder that is renamed to ``path`` when it
    is complete, so concurrent processes (Ray workers, parallel runs) never see a partial
    store; when two build at once, the first rename wins and the other copy is dropped
    (the builds are deterministic, so both are identical).
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(make_location(str(tmp)))
        try:
            os.replace(tmp, path)
        except OSError:  # another process won the race: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return make_location(str(path))


def resolve_store(cfg: Config) -> StoreLocation:
    """The store location of ``cfg``; builds the synthetic store once (atomically) if unset.

    The synthetic store's path carries a hash of the generator settings, so changing any
    of them builds a new store and an existing one is reused as is.
    """
    d = cfg.data
    if d.store:
        return make_location(d.store, endpoint_url=d.endpoint_url or None)
    unknown = [m for m in d.modalities if m not in ACTIVATIONS]
    if unknown:
        raise ConfigError(
            f"data.store is empty, so the synthetic 1-D store would be built, but "
            f"data.modalities {unknown} are not synthetic ({sorted(ACTIVATIONS)}); set "
            f"data.store to the store to train on"
        )
    keys = (
        "num_functions",
        "num_train",
        "num_points",
        "x_range",
        "noise_std",
        "modalities",
        "val_fraction",
        "seed",
    )
    settings = {k: getattr(d, k) for k in keys}
    if d.synthetic_variant != "shared":  # shared keeps the digest of stores built before
        settings["synthetic_variant"] = d.synthetic_variant
    digest = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]
    path = Path(cfg.run.out_dir).resolve() / "data" / f"{d.name}-{digest}.zarr"
    return build_once(path, lambda loc: build_synthetic_store(cfg, loc))


def open_training_store(cfg: Config) -> Store:
    """Open the resolved store restricted to ``cfg.data.modalities``.

    With ``cfg.data.patch`` set, its signals are patches of the time steps
    (:class:`~pipelines.data.stores.patches.PatchStore`).
    """
    return open_patched(
        resolve_store(cfg), list(cfg.data.modalities), cfg.data.patch, cfg.data.patch_coords
    )


def episode_spec(
    cfg: Config,
    store: Store,
    seed_offset: int = 0,
    ratio: tuple[float, float] | None = None,
    query_points: int = 0,
    support_points: int = 0,
) -> EpisodeSpec:
    """Episode settings for ``store``: per-modality ratios (or one ``ratio`` for all).

    ``query_points`` subsamples the query sets and ``support_points`` caps the support
    sets (training: ``cfg.data.query_points`` and ``cfg.data.support_points``).
    """
    ranges = {}
    for m in store.modalities:
        lo, hi = ratio or cfg.data.support_ratio_per_modality.get(m, cfg.data.support_ratio)
        ranges[m] = (float(lo), float(hi))
    return EpisodeSpec(
        ranges,
        cfg.run.seed + seed_offset,
        cfg.data.spatial_stride,
        store.location.display,
        query_points,
        support_points,
    )


def modality_dims(store: Store) -> dict[str, tuple[int, int]]:
    """Modality -> ``(d_in, d_out)`` for :func:`mia_core.builders.build_learner`."""
    out = {}
    for m in store.modalities:
        info = store.info[m]
        d_in = info.coords.shape[-1] if info.coords is not None else len(info.grid_shape)
        out[m] = (int(d_in), int(info.channels))
    return out

"""Rates the data benchmark compares: the engine's meta-training and the data paths.

Both are signals/s (``B`` signals per episode). The engine rate is ``MetaLearner``
forward + backward (no optimizer step) on real episodes of the synthetic store; a data
rate is a whole train split streamed as episodes, by Ray Data or by one process.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable

import torch

from benchmarks._timing import Contention, wait_idle
from mia_core.builders import build_learner
from mia_core.config import load_config
from mia_core.data.episode import Episode
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.ray_source import read_store
from pipelines.data.stores import Store, StoreLocation, open_store
from pipelines.data.streams import dataset_episodes, store_episodes


def engine_rate(
    store: Store, config: str, batch: int, iters: int, warmup: int, wait: float
) -> dict:
    """Signals/s of MetaLearner forward + backward on episodes from the synthetic store.

    The faster of 1 and 2 intra-op threads counts (a higher engine rate is the stricter
    target; 2 threads collapse when another process takes a core, 1 thread does not).

    Args:
        store: the synthetic signal store.
        config: the experiment config that builds the learner and its support ratio.
        batch: signals per episode.
        iters: timed iterations (median).
        warmup: untimed iterations per thread count.
        wait: max seconds to wait for a quiet machine before timing.
    """
    cfg = load_config(config)
    mods = list(store.modalities)
    torch.manual_seed(0)
    learner = build_learner(cfg.model, cfg.method, {m: (1, 1) for m in mods})
    lo, hi = cfg.data.support_ratio
    spec = EpisodeSpec({m: (lo, hi) for m in mods}, seed=0)
    episodes = []
    for ep in store_episodes(store, spec, batch, split="train"):
        if ep[mods[0]].batch_size == batch:
            episodes.append(ep)
        if len(episodes) == 4:
            break

    def step(ep: Episode) -> float:
        t0 = time.perf_counter()
        learner(ep).loss.backward()
        dt = time.perf_counter() - t0
        learner.zero_grad(set_to_none=True)
        return dt

    best = None
    for threads in sorted({1, min(2, os.cpu_count() or 1)}):
        torch.set_num_threads(threads)
        for i in range(warmup):
            step(episodes[i % len(episodes)])
        wait_idle(wait)
        with Contention() as c:
            times = [step(episodes[i % len(episodes)]) for i in range(iters)]
        med = statistics.median(times)
        if best is None or med < best[0]:
            best = (med, times, threads, c)
    med, times, threads, c = best
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return {
        "ms_per_iter": med * 1e3,
        "ms_samples": [round(t * 1e3, 1) for t in times],
        "signals_per_s": batch / med,
        "support_ratio": [lo, hi],
        "config": "synthetic_cavia",
        "width_depth_rank": [cfg.model.width, cfg.model.depth, cfg.model.context_tokens],
        "inner_steps": cfg.method.inner_steps,
        "modalities": len(mods),
        "threads": threads,
        "foreign_cores": c.foreign,
        "note": c.note(),
    }


def _count(episodes: Iterable[Episode], first: str) -> int:
    return sum(ep[first].batch_size for ep in episodes)


def data_rate(
    location: StoreLocation, spec: EpisodeSpec, batch: int, epochs: int, path: str, wait: float
) -> dict:
    """Signals/s over ``epochs`` epochs of the train split, after one warm-up epoch.

    Args:
        location: the store.
        spec: episode sampling (support ratios, seed).
        batch: signals per episode.
        epochs: timed epochs.
        path: ``direct`` (``store_episodes``), ``ray`` (``read_store`` with Ray's automatic
            number of read tasks + ``dataset_episodes``) or ``ray-<n>``
            (``override_num_blocks=n``). The Ray dataset is created once and re-executed
            every epoch, as a Ray Train shard is.
        wait: max seconds to wait for a quiet machine before timing.
    """
    store = open_store(location)
    first = store.modalities[0]
    ray_path = path.startswith("ray")
    blocks = int(path.split("-")[1]) if path.startswith("ray-") else None
    ds = read_store(location, split="train", override_num_blocks=blocks) if ray_path else None

    def one_epoch(epoch: int) -> int:
        if ray_path:
            return _count(dataset_episodes(ds, store, spec, batch, epoch), first)
        return _count(store_episodes(store, spec, batch, "train", epoch), first)

    one_epoch(0)  # warm-up: worker start, imports, OS file cache
    wait_idle(wait)
    with Contention() as c:
        t0 = time.perf_counter()
        signals = sum(one_epoch(e) for e in range(1, epochs + 1))
        dt = time.perf_counter() - t0
    return {
        "signals": signals,
        "seconds": dt,
        "signals_per_s": signals / dt,
        "episodes_per_s": signals / dt / batch,
        "foreign_cores": c.foreign,
        "note": c.note(),
    }

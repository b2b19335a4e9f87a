"""Peak-memory estimate of a training or encoding job, checked before it starts.

A job whose estimate exceeds what the node has stops with one :class:`ConfigError` line
(exit 2 through ``ray_jobs.common.run_main``) naming the estimate, what is available and
the setting to change, instead of being killed by the kernel after minutes of work.

The model (bytes, float32 = 4), per process:

- ``baseline``: this process's resident set now (torch, zarr, Ray client already loaded).
- ``reads``: a training signal reads whole store chunks (``store_episodes`` keeps up to
  :data:`~pipelines.data.streams.CACHE_BYTES` of them, always at least one;
  a Ray shard gets chunk-sized blocks), so ``max(min(cache, store), chunk) x 2``
  (a decoded chunk and its copy); an encoder reads one unit (``encode.chunk`` steps).
- ``batch``: ``batch x sum_m points_m x (channels + coordinate dims) x 4`` (rows, episode).
- ``graph``: activations kept for autograd,
  ``batch x width x depth x GRAPH_FLOATS x 4 x sum_m (inner_m x g + query_m)`` where
  ``inner_m`` is the support points an inner step uses (``method.inner_points``, else
  ``support_ratio[1]`` of the strided points capped by ``data.support_points``),
  ``query_m`` the query points (``data.query_points``, else every strided point) and
  ``g = method.inner_steps`` for a second-order inner loop (MAML, not
  ``method.first_order``; 1 otherwise: each step's graph is freed), x
  ``SECOND_ORDER_WEIGHTS`` when that loop adapts weights (MAML, Meta-INR); Reptile's
  query pass has no graph; a scoring pass without one holds ``2 x width`` per point.
  Validation adapts ``run.eval_batch_size`` validation signals without a graph
  (``g = 1`` on their support) and scores them; the larger of training and validation
  counts. Encoding: ``batch`` time steps (``encode.batch_size``, 0: a unit) on
  ``encode.points_per_step`` (0: every point), ``g = 1``, plus a no-grad scoring pass.
- ``model``: meta-parameters x 4 copies (weights, gradients, two Adam moments), plus the
  adapted weights ``batch x params x (g + 2)`` when the inner loop adapts weights.

The constants (``GRAPH_FLOATS``, ``RUNTIME_BYTES``, ``SECOND_ORDER_WEIGHTS``,
``SAFETY``) were fitted to the peak RSS (``VmHWM``, tcmalloc preloaded, one thread) of
two local training steps with validation, or 4 encoded time steps, on 2 cores
(``.venv/bin/python benchmarks/memory_estimate_bench.py``; SIREN width 32 depth 3 as
``meta_inr_ncep.yaml`` on an ``N x N`` one-variable field store, ``b`` signals per
batch; MIA: ``default.yaml`` on the synthetic 1-D store, 4 modalities)::

    case                    estimate MB  measured MB  ratio
    siren_reptile_64_b2             862          629   1.37
    siren_reptile_128_b4            972          680   1.43
    siren_reptile_256_b4           1418          916   1.55
    siren_reptile_256_b8           1787         1213   1.47
    siren_maml2nd_128_b4           1494         1132   1.32   (second order, K=4)
    mia_default_b16                 927          768   1.21
    mia_default_b16_p800           1227          850   1.44   (800 points)
    mia_default_b64_p800           2239         1104   2.03
    encode_siren_256_unit          1057          689   1.53   (4 steps at once)
    encode_siren_256_b1             725          491   1.48
    encode_siren_512_b2            1615          995   1.62

Always above the measurement, within ~2x. At 0.25 degrees (``meta_inr_ncep.yaml``,
4 x 721 x 1440) it estimates 60 GB (the run was killed at 20.5 GB) and 7 GB with
``data.spatial_stride=4`` (measured 3.5 GB).

Available memory: ``MIA_MEMORY_LIMIT_GB`` when set (``0`` or ``off`` skips the check:
tests, or a node whose swap is meant to be used); else the cgroup v2 limit
(``/sys/fs/cgroup/memory.max``, minus what the cgroup already uses, plus this
process's resident set) when one is set, else ``MemAvailable`` plus this process's
resident set. On Ray Train the check runs on the driver: with a cluster started here
(no address) every worker shares this node, so the estimate is per worker x
``run.num_workers``; with an existing cluster the driver's node is assumed to be like
the worker nodes and one worker is checked (documented limitation: a node that packs
several workers is not seen from the driver). Encoding on Ray: ``encode.concurrency``
actors on this node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from mia_core.builders import adapt_mode, build_learner
from mia_core.config import Config, ConfigError
from pipelines.data.resolve import modality_dims
from pipelines.data.stores import Store
from pipelines.data.streams import CACHE_BYTES

ENV_LIMIT = "MIA_MEMORY_LIMIT_GB"
F32 = 4
GRAPH_FLOATS = 3.0  # float32 values kept per point x width x layer x retained step (fit)
RUNTIME_BYTES = 256 * 2**20  # the training loop, tracker and store clients after the check
ENCODE_RUNTIME_BYTES = 128 * 2**20  # the encoder's code store and writer after the check
SAFETY = 1.25  # on top of the sum: allocator slack, temporaries (fit)
SECOND_ORDER_WEIGHTS = 1.5  # per-signal weight copies make a retained MAML step heavier (fit)
EXCLUSIVE = ("graph", "validation")  # never at once: the larger counts
CGROUP_MAX = "/sys/fs/cgroup/memory.max"
CGROUP_CURRENT = "/sys/fs/cgroup/memory.current"
GB = 2**30


@dataclass
class MemoryEstimate:
    """A job's estimated peak resident memory, in bytes, by term.

    Attributes:
        what: ``training`` or ``encoding``.
        terms: term -> bytes (see the module docstring).
        settings: term -> the settings that shrink it (for the message).
        processes: processes of this size on the node (Ray workers or actors).
    """

    what: str
    terms: dict[str, float]
    settings: dict[str, str] = field(default_factory=dict)
    processes: int = 1

    @property
    def per_process(self) -> float:
        """Bytes one process peaks at: ``SAFETY`` x (rest + larger of :data:`EXCLUSIVE`)."""
        rest = sum(v for k, v in self.terms.items() if k not in EXCLUSIVE)
        return SAFETY * (rest + max((self.terms.get(k, 0.0) for k in EXCLUSIVE), default=0.0))

    @property
    def total(self) -> float:
        """Bytes on this node."""
        return self.per_process * self.processes

    def largest(self) -> str:
        """The term with a setting that dominates the estimate."""
        named = {k: v for k, v in self.terms.items() if k in self.settings}
        return max(named, key=named.__getitem__) if named else max(self.terms)


def rss_bytes() -> float:
    """This process's resident set now (``/proc/self/statm``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0.0


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory() -> tuple[float | None, str]:
    """``(bytes this job may use, where that number comes from)``; ``None``: no check."""
    env = os.environ.get(ENV_LIMIT, "").strip().lower()
    if env:
        if env in ("0", "off", "false", "no"):
            return None, f"{ENV_LIMIT}={env}"
        try:
            return float(env) * GB, f"{ENV_LIMIT}"
        except ValueError:
            msg = f"{ENV_LIMIT}={env!r} is not a number of GB (0 skips the check)"
            raise ConfigError(msg) from None
    own = rss_bytes()
    limit = _read_int(CGROUP_MAX)
    if limit is not None:
        used = _read_int(CGROUP_CURRENT) or 0
        return max(0.0, limit - used) + own, "cgroup memory.max"
    try:
        import psutil

        return float(psutil.virtual_memory().available) + own, "MemAvailable"
    except ImportError:  # pragma: no cover - psutil is a dependency of Ray
        return None, "unknown"


def strided_points(grid_shape: tuple[int, ...], stride: int) -> int:
    """Points a spatial stride keeps (point sets, ``(P,)``, are strided too)."""
    return math.prod(math.ceil(n / max(1, stride)) for n in grid_shape)


def _coord_dims(store: Store, m: str) -> int:
    info = store.info[m]
    return len(info.grid_shape) if info.per_signal else int(info.coords.shape[-1])


def _chunk_bytes(store: Store, steps: int) -> float:
    """Bytes of ``steps`` signals of every modality (values, per-signal coordinates)."""
    per = 0
    for m in store.modalities:
        info = store.info[m]
        per += info.num_points * info.channels
        if info.per_signal:
            per += info.num_points * _coord_dims(store, m)
    return float(steps * per * F32)


def _param_count(cfg: Config, store: Store) -> int:
    learner = build_learner(cfg.model, cfg.method, modality_dims(store))
    return sum(p.numel() for p in learner.parameters())


def _second_order(cfg: Config) -> bool:
    return cfg.method.meta_gradient == "maml" and not cfg.method.first_order


def training_estimate(cfg: Config, store: Store, workers: int = 1) -> MemoryEstimate:
    """Peak memory of one meta-training process on ``store`` (see the module docstring).

    Args:
        cfg: resolved config.
        store: its training store (``open_training_store``).
        workers: training processes on this node.
    """
    d, r, me = cfg.data, cfg.run, cfg.method
    width, depth = cfg.model.width, cfg.model.depth
    g = max(1, me.inner_steps) if _second_order(cfg) else 1
    weights = adapt_mode(me) == "weights"
    heavy = SECOND_ORDER_WEIGHTS if weights and g > 1 else 1.0
    reptile = me.meta_gradient == "reptile"  # its query pass runs without a graph
    inner = query = scored = evals = batch_values = 0.0
    for m in store.modalities:
        info = store.info[m]
        pts = strided_points(info.grid_shape, d.spatial_stride)
        lo, hi = d.support_ratio_per_modality.get(m, d.support_ratio)
        support = min(pts, math.ceil(float(hi) * pts))
        if d.support_points:
            support = min(support, d.support_points)
        step = me.inner_points if 0 < me.inner_points < support else support
        q = d.query_points if 0 < d.query_points < pts else pts
        inner += step
        query += 0 if reptile else q
        scored += q
        evals += support
        batch_values += info.num_points * (info.channels + _coord_dims(store, m) + 1)
    per_point = width * depth * GRAPH_FLOATS * F32
    nograd = width * 2 * F32  # a scoring pass holds about two layers' outputs
    n_val = int(((store.split == 1) & store.valid).sum()) or store.num_signals
    n_eval = min(r.eval_batch_size, n_val)
    whole = _chunk_bytes(store, store.num_signals)
    chunk = _chunk_bytes(store, min(store.chunk_size, store.num_signals))
    reads = 2 * max(min(CACHE_BYTES, whole), chunk)
    params = _param_count(cfg, store)
    adapted = r.batch_size * params * F32 * (g + 2) if weights else 0.0
    terms = {
        "baseline": rss_bytes(),
        "reads": reads,
        "batch": r.batch_size * batch_values * F32 * 2,
        "runtime": float(RUNTIME_BYTES),
        "graph": r.batch_size * (per_point * (inner * g * heavy + query) + nograd * scored),
        "validation": n_eval * (per_point * evals + nograd * (evals + scored)),
        "model": params * F32 * 4 + adapted,
    }
    patch = "data.patch, " if hasattr(d, "patch") else ""
    knobs = "support_points, method.inner_points" if g > 1 else "support_points"
    settings = {
        "graph": f"run.batch_size ({r.batch_size}), data.spatial_stride ({d.spatial_stride}), "
        f"{patch}data.query_points/{knobs}",
        "validation": f"run.eval_batch_size ({r.eval_batch_size}) or data.spatial_stride",
        "reads": "the store's chunk (rebuild with a smaller --chunk)",
        "batch": f"run.batch_size ({r.batch_size})",
    }
    return MemoryEstimate("training", terms, settings, workers)


def encode_estimate(
    spec,
    cfg: Config,
    store: Store,
    params: int,
    processes: int = 1,
    patches: Store | None = None,
    patch_batch: int = 64,
) -> MemoryEstimate:
    """Peak memory of one encoding process (an :class:`EncodeSpec` ``spec``).

    Args:
        spec: the encoding settings (``batch_size``, ``points_per_step``, ``chunk``).
        cfg: the meta-model's training config (its width and depth).
        store: the field store to encode.
        params: meta-parameters of the model (the adapted weights per time step).
        processes: encoder processes on this node (``encode.concurrency`` on Ray).
        patches: ``store`` seen as the meta-model's patches, for a patch meta-model: a
            batch is then ``encode.batch_size`` patches (``patch_batch`` when 0), and a
            unit's steps are also held cut into patches.
        patch_batch: patches per batch when ``encode.batch_size`` is 0.
    """
    unit = min(store.num_signals, spec.chunk or store.chunk_size)
    batch = min(unit, spec.batch_size or unit)
    reads = 2 * _chunk_bytes(store, unit)
    if patches is not None:
        k = patches.num_signals // max(1, store.num_signals)
        batch = min(unit * k, spec.batch_size or patch_batch)
        reads += _chunk_bytes(patches, unit * k)  # the unit's steps, tiled
        store = patches
    pts = sum(store.info[m].num_points for m in store.modalities)
    step = sum(
        min(spec.points_per_step or store.info[m].num_points, store.info[m].num_points)
        for m in store.modalities
    )
    per_point = cfg.model.width * cfg.model.depth * GRAPH_FLOATS * F32
    terms = {
        "baseline": rss_bytes(),
        "reads": reads,
        "runtime": float(ENCODE_RUNTIME_BYTES),
        "graph": batch * (per_point * step + cfg.model.width * 2 * F32 * pts),
        "model": params * F32 * 4 * (1 + batch),
    }
    settings = {
        "graph": f"encode.batch_size ({spec.batch_size}) or encode.points_per_step "
        f"({spec.points_per_step})",
        "reads": f"encode.chunk ({spec.chunk})",
        "model": f"encode.batch_size ({spec.batch_size})",
    }
    return MemoryEstimate("encoding", terms, settings, processes)


def _size(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 2**20:.0f} MB"


def check_memory(est: MemoryEstimate) -> None:
    """Raise a one-line :class:`ConfigError` when ``est`` exceeds what the node has."""
    have, source = available_memory()
    if have is None or est.total <= have:
        return
    key = est.largest()
    times = f" ({est.processes} processes)" if est.processes > 1 else ""
    skip = "0 skips" if source.startswith(ENV_LIMIT) else f"{ENV_LIMIT}=0 skips"
    raise ConfigError(
        f"{est.what} needs ~{_size(est.total)}{times} ({key} "
        f"{_size(SAFETY * est.terms[key] * est.processes)}), {_size(have)} free "
        f"({source}; {skip}): lower {est.settings.get(key, key)}"
    )


__all__ = [
    "ENV_LIMIT",
    "MemoryEstimate",
    "available_memory",
    "check_memory",
    "encode_estimate",
    "strided_points",
    "training_estimate",
]

"""Batch encoding of a field store's time steps with a meta-trained INR (Meta-INR).

The driver loads the meta-model once to validate it against the store, opens (or
creates) the code store and lists the pending work: contiguous runs of time steps whose
``done`` flag is unset, never crossing a code-store chunk. Those units become a Ray Data
dataset over the time axis; ``map_batches`` sends them to a pool of :class:`ChunkEncoder`
actors, each holding the meta-model and the opened stores once. An actor reads its unit
(whole store chunks), adapts every time step of it at once (``K`` vectorised steps at
full resolution or on ``points_per_step`` sampled points), measures MSE/PSNR at full
resolution from the stored codes, writes codes and metrics and then the ``done`` flags.

Resuming: a rerun lists only steps not yet done, so a killed job loses at most the units
in flight and no step is ever written twice with different codes; changing the
meta-model or code settings on an existing output is refused (see ``codestore.py``).
The actors return one small row per unit, which the driver turns into a progress bar
with ETA; at the end a summary is stored in the code store and logged to MLflow.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mia_core.config import config_from_dict, config_to_dict, load_config
from mia_core.config.secrets import redact
from mia_core.runtime import set_matmul_precision
from pipelines.codecs.codestore import (
    create_code_store,
    mark_done,
    open_code_store,
    pending_units,
    write_unit,
)
from pipelines.codecs.meta_model import (
    EncodeError,
    MetaModel,
    batch_tensors,
    code_layout,
    codes_to_params,
    field_metrics,
    fit_batch,
    load_meta_model,
    params_to_codes,
    resolve_checkpoint,
)
from pipelines.data.stores import StoreLocation, make_location, open_store
from pipelines.data.stores.reader import FieldStore
from pipelines.engine.checkpoint import load_checkpoint

CODE_DTYPES = ("float32", "float16")


@dataclass
class EncodeOptions:
    """What to encode and how.

    Attributes:
        store: field store URL (local path or ``s3://``).
        checkpoint: meta-model run directory or checkpoint file.
        out: code store URL.
        config: the run's config (default: ``config.yaml`` of the checkpoint's run).
        steps: adaptation steps ``K`` per time step.
        lr: learning rate of ``adam``/``sgd`` (``rule`` uses the meta-trained rates).
        optimizer: ``rule`` (the inner-loop update the model was meta-trained with: MAML's
            SGD at ``method.inner_lr``, learned MetaSGD rates...), ``adam`` or ``sgd``. A
            MAML initialisation is tuned for its own inner rule; Adam's first steps move
            every weight by about ``lr`` and undo much of it.
        points_per_step: points sampled per step (0: every grid point, full resolution).
        batch_size: time steps adapted together (vectorised); 0: a whole chunk.
        chunk: time steps per code-store chunk (0: the field store's time chunk).
        time_range: ``(start, stop)`` time indices to encode; ``None``: all.
        code_dtype: ``float32`` or ``float16`` (metrics are measured on stored codes).
        endpoint_url: S3-compatible endpoint for both stores.
        use_ray: run on Ray Data with an actor pool; ``False`` runs in this process.
        address: Ray address (default: ``RAY_ADDRESS`` or a local instance).
        concurrency: encoder actors.
        cpus_per_actor: CPUs each actor reserves (fractional: leaves room for Ray Data).
        device: ``cpu``, ``cuda`` or ``auto``.
        seed: point sampling seed.
        overwrite: discard an existing code store.
        tracking_uri: MLflow URI (default: the meta-model run's tracking store).
        experiment: MLflow experiment.
        progress: show a progress bar.
        fault_at: testing aid: the unit containing this time index raises after writing
            its codes and before its ``done`` flags (a simulated crash).
        storage_options: fsspec options for both stores (credentials: never logged or
            stored; by default they come from the environment).
    """

    store: str
    checkpoint: str
    out: str
    config: str | None = None
    steps: int = 16
    lr: float = 1e-3
    optimizer: str = "rule"
    points_per_step: int = 0
    batch_size: int = 0
    chunk: int = 0
    time_range: tuple[int, int] | None = None
    code_dtype: str = "float32"
    endpoint_url: str | None = None
    use_ray: bool = True
    address: str | None = None
    concurrency: int = 2
    cpus_per_actor: float = 0.5
    device: str = "cpu"
    seed: int = 0
    overwrite: bool = False
    tracking_uri: str = ""
    experiment: str = "mia-inr-encode"
    progress: bool = True
    fault_at: int | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class EncodeSummary:
    """What an encoding run produced (also stored as ``mia_codes.summary``).

    Attributes:
        out: code store (redacted URL).
        num_time: time steps in the store.
        encoded: time steps encoded by this run.
        skipped: selected time steps already done before this run.
        done: time steps done in the store after this run.
        seconds: wall time of this run's encoding (Ray start-up excluded).
        timesteps_per_s: ``encoded / seconds``.
        adapt_seconds_per_step: mean adaptation time per time step (over done steps).
        psnr: ``mean/min/p05/median/max`` PSNR (dB) over done steps and variables.
        mse_mean: mean MSE over done steps and variables.
        psnr_per_variable: mean PSNR per variable.
        compression_codes: raw field bytes / code bytes.
        compression_total: raw field bytes / (code bytes + meta-model bytes), over done steps.
        code_dim: code length per time step.
        mlflow_run_id: MLflow run of this summary ("" when tracking failed).
    """

    out: str
    num_time: int
    encoded: int
    skipped: int
    done: int
    seconds: float
    timesteps_per_s: float
    adapt_seconds_per_step: float
    psnr: dict[str, float]
    mse_mean: float
    psnr_per_variable: dict[str, float]
    compression_codes: float
    compression_total: float
    code_dim: int
    mlflow_run_id: str = ""


def _location(url: str, opts: EncodeOptions) -> StoreLocation:
    return make_location(url, dict(opts.storage_options) or None, opts.endpoint_url)


def _time_coordinate(store: FieldStore) -> tuple[np.ndarray, dict[str, Any]]:
    tdim = store.layout[store.modalities[0]][0]
    values = np.asarray(store.ds[tdim].values) if tdim in store.ds.coords else None
    if values is None:
        return np.arange(store.num_signals, dtype=np.int64), {}
    if np.issubdtype(values.dtype, np.datetime64):
        ns = values.astype("datetime64[ns]").astype(np.int64)
        return ns, {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}
    return values.astype(np.float64), {}


def _variable_attrs(store: FieldStore) -> dict[str, Any]:
    """Per variable: what decoding needs (grid, dims, coordinates, levels, normalisation)."""
    out = {}
    for v in store.modalities:
        _, _, ldim, sdims = store.layout[v]
        info = store.info[v]
        coords = []
        for d in sdims:
            c = (
                np.asarray(store.ds[d].values, np.float64)
                if d in store.ds.coords
                else np.arange(store.ds.sizes[d], dtype=np.float64)
            )
            coords.append(np.sort(c).tolist() if d in ("lat", "latitude") else c.tolist())
        out[v] = {
            "dims": list(sdims),
            "grid_shape": list(info.grid_shape),
            "coords": coords,
            "extent": info.extent,
            "channels": info.channels,
            "level_dim": ldim,
            "levels": np.asarray(store.ds[ldim].values).tolist() if ldim else None,
            "norm": info.norm,
            "attrs": {
                k: a
                for k, a in store.ds[v].attrs.items()
                if k != "mia_norm" and isinstance(a, str | int | float)
            },
        }
    return out


def open_field_store(location: StoreLocation, variables: list[str]) -> FieldStore:
    """Open a field store for encoding, with errors naming the store and variables."""
    store = open_store(location)
    if not isinstance(store, FieldStore):
        raise EncodeError(f"{location}: encoding needs a field store with a time axis")
    missing = [v for v in variables if v not in store.modalities]
    if missing:
        raise EncodeError(
            f"{location}: the meta-model encodes variables {variables}; the store lacks "
            f"{missing} (it has {store.modalities})"
        )
    store = FieldStore(location, store.ds, variables, store.group)
    for v in variables:
        if store.layout[v][1] is not None:
            raise EncodeError(f"{location}: variable {v!r} has a member dimension; not supported")
    return store


def store_dims(store: FieldStore) -> dict[str, tuple[int, int]]:
    """Variable -> ``(d_in, channels)``."""
    return {v: (len(store.info[v].grid_shape), store.info[v].channels) for v in store.modalities}


class ChunkEncoder:
    """Encodes units of time steps; one instance per Ray actor (or the local process).

    Args:
        spec: picklable settings from :func:`run_encode` (locations, the meta-model's
            state and config, encoder options).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        threads = max(1, int(round(spec["threads"])))
        torch.set_num_threads(threads)
        self.device = torch.device(spec["device"])
        cfg = config_from_dict(spec["config"], "meta-model config")
        set_matmul_precision(cfg.run.matmul_precision)
        self.store = open_field_store(spec["store"], spec["variables"])
        self.model: MetaModel = load_meta_model(
            spec["reference"],
            store_dims(self.store),
            state=spec["state"],
            cfg=cfg,
            sha256=spec["sha256"],
            device=self.device,
        )
        self.group = open_code_store(spec["out"], "r+")
        self.coords = {
            m: torch.from_numpy(self.store.info[m].coords).to(self.device)
            for m in self.model.modalities
        }

    def encode_unit(self, start: int, stop: int) -> dict[str, float]:
        """Encode steps ``[start, stop)`` and publish them; returns a progress record."""
        s, t0 = self.spec, time.perf_counter()
        rows = self.store.read(start, stop)
        learner = self.model.learner
        bsz = s["batch_size"] or (stop - start)
        codes, mses, psnrs, secs = [], [], [], []
        for a in range(0, stop - start, bsz):
            part = {m: rows[m][a : a + bsz] for m in learner.modalities}
            values, valid = batch_tensors(part, self.device)
            fit = fit_batch(
                learner,
                self.coords,
                values,
                valid,
                s["steps"],
                s["lr"],
                s["optimizer"],
                s["points_per_step"],
                seed=s["seed"] + start + a,
            )
            code = params_to_codes(learner, fit.params).to(getattr(torch, s["code_dtype"]))
            stored = codes_to_params(learner, code.float())
            mse, p_db = field_metrics(
                learner, self.coords, values, valid, stored, self.model.cfg.data.psnr_range
            )
            n = code.shape[0]
            codes.append(code.cpu().numpy())
            mses.append(mse.cpu().numpy())
            psnrs.append(p_db.cpu().numpy())
            secs.append(np.full(n, fit.seconds / n))
        write_unit(
            self.group,
            start,
            np.concatenate(codes),
            np.concatenate(mses),
            np.concatenate(psnrs),
            np.concatenate(secs),
        )
        if s["fault_at"] is not None and start <= s["fault_at"] < stop:
            raise RuntimeError(
                f"injected fault after writing the codes of time steps {start}:{stop} "
                "(EncodeOptions.fault_at)"
            )
        mark_done(self.group, start, stop)
        psnr_all = np.concatenate(psnrs)
        return {
            "start": start,
            "stop": stop,
            "seconds": time.perf_counter() - t0,
            "psnr": float(np.mean(psnr_all)),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data entry: ``batch`` has ``start``/``stop`` columns (one row per unit)."""
        recs = [
            self.encode_unit(int(a), int(b))
            for a, b in zip(batch["start"], batch["stop"], strict=True)
        ]
        return {k: np.asarray([r[k] for r in recs]) for k in recs[0]}


def _raw_bytes_per_step(store: FieldStore) -> int:
    return sum(4 * store.info[v].num_points * store.info[v].channels for v in store.modalities)


def summarize(group, seconds: float = 0.0, encoded: int = 0, skipped: int = 0) -> EncodeSummary:
    """Summary statistics of a code store's done steps (see :class:`EncodeSummary`)."""
    attrs = dict(group.attrs["mia_codes"])
    done = np.asarray(group["done"][...]).astype(bool)
    psnr = np.asarray(group["psnr"][...])[done]
    mse = np.asarray(group["mse"][...])[done]
    secs = np.asarray(group["encode_seconds"][...])[done]
    n = int(done.sum())
    flat = psnr.reshape(-1) if n else np.full(1, np.nan)
    code_bytes = attrs["code_dim"] * np.dtype(attrs["code_dtype"]).itemsize
    raw = attrs["raw_bytes_per_step"]
    return EncodeSummary(
        out=attrs.get("out", ""),
        num_time=attrs["num_time"],
        encoded=encoded,
        skipped=skipped,
        done=n,
        seconds=seconds,
        timesteps_per_s=encoded / seconds if seconds > 0 else math.nan,
        adapt_seconds_per_step=float(secs.mean()) if n else math.nan,
        psnr={
            "mean": float(np.mean(flat)),
            "min": float(np.min(flat)),
            "p05": float(np.percentile(flat, 5)),
            "median": float(np.median(flat)),
            "max": float(np.max(flat)),
        },
        mse_mean=float(mse.mean()) if n else math.nan,
        psnr_per_variable={
            v: float(psnr[:, i].mean()) if n else math.nan for i, v in enumerate(attrs["variables"])
        },
        compression_codes=raw / code_bytes,
        compression_total=raw * max(n, 1) / (code_bytes * max(n, 1) + attrs["meta_bytes"]),
        code_dim=attrs["code_dim"],
    )


def _init_ray(address: str | None) -> None:
    from pipelines.engine.ray_train import _init_ray as init

    init(address)


def _run_units(spec: dict[str, Any], units: list[tuple[int, int]], opts: EncodeOptions):
    """Yield progress records as units finish (Ray actor pool or this process)."""
    if not opts.use_ray:
        enc = ChunkEncoder(spec)
        for a, b in units:
            yield enc.encode_unit(a, b)
        return
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(
        [{"start": a, "stop": b} for a, b in units], override_num_blocks=len(units)
    )
    out = ds.map_batches(
        ChunkEncoder,
        fn_constructor_kwargs={"spec": spec},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(opts.concurrency, len(units))),
        num_cpus=opts.cpus_per_actor,
    )
    yield from out.iter_rows()


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with ray
        return None
    return tqdm(total=total, unit="step", desc="encode", disable=not enabled, file=sys.stderr)


def run_encode(opts: EncodeOptions, log=print) -> EncodeSummary:
    """Encode (or resume encoding) a field store; see the module docstring.

    Raises:
        EncodeError: bad checkpoint, config, variables or options.
        StoreError: unreadable stores, or an existing output written with other settings.
    """
    if opts.code_dtype not in CODE_DTYPES:
        raise EncodeError(f"code_dtype must be one of {list(CODE_DTYPES)}, got {opts.code_dtype!r}")
    if opts.steps < 1:
        raise EncodeError(f"steps must be >= 1, got {opts.steps}")
    src, dst = _location(opts.store, opts), _location(opts.out, opts)
    ckpt, cfg_path = resolve_checkpoint(opts.checkpoint, opts.config)
    cfg = load_config(cfg_path)
    store = open_field_store(src, list(cfg.data.modalities))
    model = load_meta_model(ckpt, store_dims(store), cfg_path)
    state = load_checkpoint(ckpt)["model"]
    layout = code_layout(model.learner)
    chunk = opts.chunk or store.chunk_size
    n_t = store.num_signals
    lo, hi = opts.time_range or (0, n_t)
    if not (0 <= lo < hi <= n_t):
        raise EncodeError(f"time_range {opts.time_range} outside the store's 0:{n_t}")
    meta_np = {k: v.detach().cpu().numpy() for k, v in state.items() if v.is_floating_point()}
    attrs = {
        "store": src.display,
        "out": dst.display,
        "variables": model.modalities,
        "variable_info": _variable_attrs(store),
        "num_time": n_t,
        "time_dim": store.layout[store.modalities[0]][0],
        "mode": model.mode,
        "code_dim": layout.dim,
        "code_layout": layout.to_json(),
        "code_dtype": opts.code_dtype,
        "meta_reference": str(ckpt),
        "meta_sha256": model.sha256,
        "meta_bytes": int(sum(4 * v.size for v in meta_np.values())),
        "meta_config": redact(config_to_dict(cfg)),
        "raw_bytes_per_step": _raw_bytes_per_step(store),
        "encoder": {
            k: getattr(opts, k)
            for k in ("steps", "lr", "optimizer", "points_per_step", "batch_size", "seed")
        },
        "psnr_range": cfg.data.psnr_range,
    }
    tvals, tattrs = _time_coordinate(store)
    group = create_code_store(dst, attrs, chunk, tvals, tattrs, meta_np, opts.overwrite)
    done = np.asarray(group["done"][...]).astype(bool)
    units = pending_units(done, chunk, lo, hi)
    todo = sum(b - a for a, b in units)
    skipped = int(done[lo:hi].sum())
    log(
        f"encode {src.display} -> {dst.display}: {model.mode} codes of {layout.dim} values, "
        f"{todo} time steps to encode in {len(units)} units, {skipped} already done"
    )
    device = (
        opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    spec = {
        "store": src,
        "out": dst,
        "variables": model.modalities,
        "reference": str(ckpt),
        "state": {"model": state},
        "config": config_to_dict(cfg),
        "sha256": model.sha256,
        "threads": opts.cpus_per_actor if opts.use_ray else torch.get_num_threads(),
        "device": device,
        **attrs["encoder"],
        "code_dtype": opts.code_dtype,
        "fault_at": opts.fault_at,
    }
    if units and opts.use_ray:
        _init_ray(opts.address)  # before timing: start-up is not encoding throughput
    t0, encoded = time.perf_counter(), 0
    if units:
        bar = _progress(todo, opts.progress)
        try:
            for rec in _run_units(spec, units, opts):
                n = int(rec["stop"]) - int(rec["start"])
                encoded += n
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(psnr=f"{float(rec['psnr']):.2f}")
        finally:
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - t0
    summary = summarize(group, seconds, encoded, skipped)
    group.attrs["mia_codes"] = {**dict(group.attrs["mia_codes"]), "summary": asdict(summary)}
    summary.mlflow_run_id = log_summary(summary, opts, cfg, attrs)
    log(
        f"encoded {encoded} time steps in {seconds:.1f}s ({summary.timesteps_per_s:.2f}/s), "
        f"{summary.done}/{n_t} done; PSNR mean {summary.psnr['mean']:.2f} dB "
        f"(min {summary.psnr['min']:.2f}); compression {summary.compression_codes:.1f}x "
        f"(codes), {summary.compression_total:.2f}x (with meta-model)"
    )
    return summary


def log_summary(summary: EncodeSummary, opts: EncodeOptions, cfg, attrs: dict[str, Any]) -> str:
    """Log the summary to MLflow (params redacted); returns the MLflow run id."""
    import mlflow

    from pipelines.tracking.tracker import set_fluent_tracking_uri, tracking_uri

    uri = opts.tracking_uri or tracking_uri(cfg)
    Path(cfg.run.out_dir).mkdir(parents=True, exist_ok=True)
    set_fluent_tracking_uri(uri)
    # An explicit experiment id, not mlflow.set_experiment: that one is process-global
    # and makes later start_run(run_id=...) calls of other runs fail.
    exp = mlflow.get_experiment_by_name(opts.experiment)
    if exp is None:
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        where = (Path(cfg.run.out_dir).resolve() / "mlartifacts").as_uri() if local else None
        exp_id = mlflow.create_experiment(opts.experiment, artifact_location=where)
    else:
        exp_id = exp.experiment_id
    if mlflow.active_run() is not None:
        mlflow.end_run()
    name = f"encode {Path(attrs['out']).name}"
    with mlflow.start_run(run_name=name, experiment_id=exp_id) as run:
        params = {
            "store": attrs["store"],
            "out": attrs["out"],
            "meta_reference": attrs["meta_reference"],
            "meta_sha256": attrs["meta_sha256"],
            "mode": attrs["mode"],
            "code_dim": attrs["code_dim"],
            "code_dtype": attrs["code_dtype"],
            **{f"encoder.{k}": v for k, v in attrs["encoder"].items()},
            "use_ray": opts.use_ray,
            "concurrency": opts.concurrency,
        }
        mlflow.log_params(redact(params))
        metrics = {
            "encoded": summary.encoded,
            "skipped": summary.skipped,
            "done": summary.done,
            "seconds": summary.seconds,
            "timesteps_per_s": summary.timesteps_per_s,
            "adapt_seconds_per_step": summary.adapt_seconds_per_step,
            "mse_mean": summary.mse_mean,
            "compression_codes": summary.compression_codes,
            "compression_total": summary.compression_total,
            **{f"psnr_{k}": v for k, v in summary.psnr.items()},
            **{f"psnr/{k}": v for k, v in summary.psnr_per_variable.items()},
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        mlflow.log_dict(json.loads(json.dumps(asdict(summary))), "encode_summary.json")
        return run.info.run_id


__all__ = [
    "ChunkEncoder",
    "EncodeOptions",
    "EncodeSummary",
    "open_field_store",
    "run_encode",
    "summarize",
]

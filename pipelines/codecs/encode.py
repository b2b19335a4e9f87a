"""Batch encoding of a field store's time steps with a meta-trained INR (Meta-INR).

The driver loads the meta-model once to validate it against the store, opens (or
creates) the code store, takes its writer lock (a second encoder on the same output is
refused; :func:`~pipelines.codecs.codestore_lock.writer_lock`) and lists the pending work: one
unit per code-store chunk with steps whose ``done`` flag is unset (one actor writes each
chunk, encoding its pending runs in turn). Those units become a Ray Data
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

The settings are an :class:`~pipelines.codecs.encode_spec.EncodeSpec` (``configs/encode``);
the worker is :mod:`pipelines.codecs.encoder`, the summary
:mod:`pipelines.codecs.encode_summary`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from xarray.coding.times import encode_cf_datetime

from mia_core.config import Config, config_to_dict, load_config
from mia_core.config.secrets import redact
from mia_core.meta.codes import code_layout
from pipelines.cluster.connect import init_ray
from pipelines.codecs.calibrate import calibrate, existing_quantiser
from pipelines.codecs.codestore import create_code_store, pending_units
from pipelines.codecs.codestore_lock import writer_lock
from pipelines.codecs.encode_spec import EncodeSpec, actor_resources
from pipelines.codecs.encode_summary import EncodeSummary, log_summary, summarize
from pipelines.codecs.encoder import ChunkEncoder, open_field_store, store_dims
from pipelines.codecs.meta_model import (
    EncodeError,
    MetaModel,
    load_meta_model,
    resolve_checkpoint,
    resolve_model_uri,
)
from pipelines.codecs.patch_encode import DEFAULT_PATCH_BATCH, patch_grid, patch_store_for
from pipelines.codecs.quantise import bytes_per_step, num_scales
from pipelines.codecs.source_meta import source_attrs, variable_info
from pipelines.data.stores import StoreLocation, make_location
from pipelines.data.stores.output import disk_full_as, local_path
from pipelines.data.stores.patches import PatchStore
from pipelines.data.stores.reader import FieldStore
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.engine.memory_estimate import check_memory, encode_estimate

ENCODER_KEYS = (
    "steps", "lr", "optimizer", "adam_steps", "adam_lr", "points_per_step", "batch_size",
    "chain_length", "seed",
)  # fmt: skip


def _members(store: FieldStore) -> tuple[str | None, list[Any]]:
    """The store's member dimension and its values (``None, []`` without one)."""
    mdim = store.layout[store.modalities[0]][1]
    if mdim is None:
        return None, []
    if mdim in store.ds.coords:
        return mdim, np.asarray(store.ds[mdim].values).tolist()
    return mdim, list(range(store.ds.sizes[mdim]))


def _time_coordinate(store: FieldStore) -> tuple[np.ndarray, dict[str, Any]]:
    """Each signal's time value (repeated per member: signals are time major)."""
    tdim = store.layout[store.modalities[0]][0]
    values = np.asarray(store.ds[tdim].values) if tdim in store.ds.coords else None
    if values is None:
        return np.arange(store.num_signals, dtype=np.int64), {}
    values = np.repeat(values, max(1, len(_members(store)[1])))
    if np.issubdtype(values.dtype, np.datetime64):
        ns = values.astype("datetime64[ns]").astype(np.int64)
        return ns, {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}
    if values.dtype == object and hasattr(values[0], "calendar"):  # cftime (360-day, noleap)
        num, units, calendar = encode_cf_datetime(values, calendar=values[0].calendar)
        return np.asarray(num, np.float64), {"units": units, "calendar": calendar}
    return values.astype(np.float64), {}


def _rounded_meta(
    model: MetaModel, state: dict[str, torch.Tensor], dtype: str
) -> dict[str, torch.Tensor]:
    """The meta-model's state as stored: float16 rounds every weight (and the model in place)."""
    if dtype == "float32":
        return state
    with torch.no_grad():
        for p in model.learner.parameters():
            p.copy_(p.to(torch.float16).float())
    return {
        k: v.to(torch.float16).float() if v.is_floating_point() else v for k, v in state.items()
    }


def _quantiser(
    spec: EncodeSpec,
    dst: StoreLocation,
    model: MetaModel,
    store: FieldStore,
    patches: PatchStore | None,
    lo: int,
    hi: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The entropy-coding attributes of the code store (none without ``code_bits``).

    An existing store's quantiser is reused (a resumed job quantises alike); otherwise
    one is calibrated (:mod:`pipelines.codecs.calibrate`).
    """
    if not spec.code_bits:
        return {}
    found = None if spec.overwrite else existing_quantiser(dst)
    if found is None or int(found.get("bits", 0)) != spec.code_bits:
        settings = {k: getattr(spec, k) for k in ENCODER_KEYS}
        args = (spec.code_bits, spec.calibration_codes, settings, log)
        found = calibrate(model, store, patches, lo, hi, *args).to_json()
    return {"code_bits": spec.code_bits, "entropy_coder": spec.entropy_coder, "quantiser": found}


def _check_code_size(spec: EncodeSpec, attrs: dict[str, Any], log: Callable[[str], None]) -> None:
    """Refuse (or warn about) codes that take as many bytes as the data they encode."""
    k = attrs.get("patches_per_step", 0)
    code = bytes_per_step(attrs["code_dim"], spec.code_dtype, attrs["code_scales"], k)
    kind = spec.code_dtype
    if spec.code_bits:  # before entropy coding: an upper bound
        code = max(1, k) * math.ceil(attrs["code_dim"] * spec.code_bits / 8)
        kind = f"{spec.code_bits} bits"
    raw = attrs["raw_bytes_per_step"]
    if code < raw:
        return
    msg = (
        f"codes of {code:,} bytes per time step ({max(1, k)} x {attrs['code_dim']:,} x "
        f"{kind}) "
        f"are not smaller than the {raw:,} float32 bytes per time step of the data "
        f"({raw / code:.2f}x) in {attrs['store']}; use a context meta-model (cavia/mia), a "
        "smaller INR or encode.code_dtype=int8, or encode.larger_codes=warn"
    )
    if spec.larger_codes == "refuse":
        raise EncodeError(msg)
    log(f"warning: {msg}")


def _raw_bytes_per_step(store: FieldStore) -> int:
    return sum(4 * store.info[v].num_points * store.info[v].channels for v in store.modalities)


def _run_units(
    work: dict[str, Any], units: list[tuple[int, int]], spec: EncodeSpec, local: bool
) -> Iterator[dict[str, Any]]:
    """Yield progress records as units finish (Ray actor pool or this process)."""
    if local:
        enc = ChunkEncoder(work)
        for a, b in units:
            yield enc.encode_unit(a, b)
        return
    import ray
    import ray.data

    resources = actor_resources(spec, ray.cluster_resources().get("GPU", 0))
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(
        [{"start": a, "stop": b} for a, b in units], override_num_blocks=len(units)
    )
    out = ds.map_batches(
        ChunkEncoder,
        fn_constructor_kwargs={"spec": work},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(spec.concurrency, len(units))),
        **resources,  # num_gpus on the GPU path: Ray hides GPUs from actors without
    )
    yield from out.iter_rows()


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with ray
        return None
    return tqdm(total=total, unit="step", desc="encode", disable=not enabled, file=sys.stderr)


def _store_attrs(
    spec: EncodeSpec,
    src: StoreLocation,
    dst: StoreLocation,
    store: FieldStore,
    model: MetaModel,
    patches: PatchStore | None,
) -> dict[str, Any]:
    """The ``mia_codes`` attribute of a new code store (without ``meta_*`` weights info)."""
    layout = code_layout(model.learner)
    member_dim, members = _members(store)
    if patches is not None:
        extra = {"patch": patch_grid(patches).to_json(), "patches_per_step": patches.per_step}
    else:
        extra = {}
    return {
        **extra,
        "store": src.display,
        "out": dst.display,
        "variables": model.modalities,
        "variable_info": variable_info(store),
        "source_attrs": source_attrs(store),
        "num_time": store.num_signals,
        "time_dim": store.layout[store.modalities[0]][0],
        # Ensembles: signal i is (time i // M, member i % M); decoding unstacks them.
        "member_dim": member_dim,
        "members": members,
        "mode": model.mode,
        "code_dim": layout.dim,
        "code_layout": layout.to_json(),
        "code_dtype": spec.code_dtype,
        "code_scales": 0 if spec.code_bits else num_scales(spec.code_dtype, layout.sizes),
        "meta_sha256": model.sha256,
        # What the meta-model cost to train (the report's break-even); None when unknown.
        "meta_pretrain_seconds": (
            None if math.isnan(model.pretrain_seconds) else model.pretrain_seconds
        ),
        "raw_bytes_per_step": _raw_bytes_per_step(store),
        "encoder": {k: getattr(spec, k) for k in ENCODER_KEYS},
    }


def run_encode(
    spec: EncodeSpec,
    log: Callable[[str], None] = print,
    *,
    local: bool = False,
    address: str | None = None,
    storage_options: dict[str, Any] | None = None,
    fault_at: int | None = None,
    fault_kind: str = "raise",
) -> EncodeSummary:
    """Encode (or resume encoding) a field store; see the module docstring.

    Args:
        spec: what to encode and how.
        log: line printer.
        local: encode in this process (no Ray); otherwise an actor pool on Ray Data.
        address: Ray address (default ``RAY_ADDRESS`` or a new local instance).
        storage_options: fsspec options for both stores (credentials: never logged or
            stored; by default they come from the environment).
        fault_at: testing aid: the unit containing this time index fails after writing
            its codes and before its ``done`` flags (a simulated crash).
        fault_kind: ``raise`` (an exception, every time) or ``kill`` (the actor's process
            SIGKILLs itself, once per unit and output: a marker in the temp folder).

    Raises:
        EncodeError: bad checkpoint, config, variables or time range.
        StoreError: unreadable stores, an existing output written with other settings,
            or an output path that is not a code store (without ``spec.overwrite``).
        DiskFull: the disk filled up; the code store keeps every finished step and its
            lock is released, so a rerun resumes.
    """
    endpoint = spec.endpoint_url or None
    src = make_location(spec.store, storage_options or None, endpoint)
    dst = make_location(spec.out, storage_options or None, endpoint)
    if spec.model:
        ckpt, cfg_path = resolve_model_uri(spec.model, spec.tracking_uri)
    else:
        ckpt, cfg_path = resolve_checkpoint(spec.checkpoint, spec.run_config or None)
    cfg: Config = load_config(cfg_path)
    if cfg.data.residual_base != "none":
        raise EncodeError(
            f"{cfg_path}: data.residual_base {cfg.data.residual_base!r} is a study option; "
            "codes store the INR only: encode with a run trained with residual_base none"
        )
    store = open_field_store(src, list(cfg.data.modalities))
    model = load_meta_model(ckpt, store_dims(store), cfg_path)
    state = load_checkpoint(ckpt)["model"]
    chunk = spec.chunk or store.chunk_size
    n_t = store.num_signals
    lo, hi = spec.time_range or (0, n_t)
    if not (0 <= lo < hi <= n_t):
        raise EncodeError(f"encode.time_range {spec.time_range} outside the store's 0:{n_t}")
    state = _rounded_meta(model, state, spec.meta_dtype)
    meta_np = {k: v.detach().cpu().numpy() for k, v in state.items() if v.is_floating_point()}
    patches = patch_store_for(store, model)
    quant = _quantiser(spec, dst, model, store, patches, lo, hi, log)
    attrs = {
        **_store_attrs(spec, src, dst, store, model, patches),
        **quant,
        "meta_reference": spec.model or str(ckpt),
        "meta_bytes": int(sum(v.size for v in meta_np.values()))
        * np.dtype(spec.meta_dtype).itemsize,
        "meta_dtype": spec.meta_dtype,
        "meta_config": redact(config_to_dict(cfg)),
        "psnr_range": cfg.data.psnr_range,
    }
    _check_code_size(spec, attrs, log)
    on_node = 1 if local or address or os.environ.get("RAY_ADDRESS") else spec.concurrency
    n_params = sum(p.numel() for p in model.learner.parameters())
    est = encode_estimate(spec, cfg, store, n_params, on_node, patches, DEFAULT_PATCH_BATCH)
    check_memory(est)  # before any work
    tvals, tattrs = _time_coordinate(store)
    where = dst.display if dst.is_remote else local_path(dst)
    with disk_full_as(where, "codes"):  # every finished step is kept: a rerun resumes
        group = create_code_store(dst, attrs, chunk, tvals, tattrs, meta_np, spec.overwrite)
        done = np.asarray(group["done"][...]).astype(bool)
        units = pending_units(done, chunk, lo, hi)
        todo = int((~done[lo:hi]).sum())
        skipped = int(done[lo:hi].sum())
        log(
            f"encode {src.display} -> {dst.display}: {model.mode} codes of {attrs['code_dim']} "
            f"values, {todo} time steps to encode in {len(units)} units, {skipped} already done"
        )
        work = {
            "store": src,
            "out": dst,
            "variables": model.modalities,
            "reference": str(ckpt),
            "state": {"model": state},
            "config": config_to_dict(cfg),
            "sha256": model.sha256,
            "threads": torch.get_num_threads() if local else spec.cpus_per_actor,
            "device": spec.device,  # auto is resolved where it encodes (encode_device)
            **attrs["encoder"],
            "code_dtype": spec.code_dtype,
            "quantiser": attrs.get("quantiser"),
            "fault_at": fault_at,
            "fault_kind": fault_kind,
        }
        if units and not local:
            init_ray(address)  # before timing: start-up is not encoding throughput
        t0, encoded = time.perf_counter(), 0
        with writer_lock(group, dst):
            if units:
                bar = _progress(todo, spec.progress)
                try:
                    for rec in _run_units(work, units, spec, local):
                        n = int(rec["encoded"])
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
        summary.mlflow_run_id = log_summary(summary, spec, cfg, attrs, local)
        log(
            f"encoded {encoded} time steps in {seconds:.1f}s ({summary.timesteps_per_s:.2f}/s), "
            f"{summary.done}/{n_t} done; PSNR mean {summary.psnr['mean']:.2f} dB "
            f"(min {summary.psnr['min']:.2f}); compression {summary.compression_codes:.1f}x "
            f"(codes), {summary.compression_total:.2f}x (with meta-model)"
            + (
                f"; {summary.missing} (time, variable) fields had no valid value and were "
                "not scored"
                if summary.missing
                else ""
            )
        )
        return summary


__all__ = ["EncodeSpec", "EncodeSummary", "run_encode"]

"""What an encoding run produced: :class:`EncodeSummary`, computed from the code store.

The summary covers every ``done`` time step of the store (not only this run's): PSNR
statistics over steps and variables, mean MSE, adaptation time per step and the
compression ratios (raw field bytes over code bytes, without and with the meta-model's
weights). :func:`log_summary` logs it, with the encoder settings (redacted), to MLflow.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.config import Config
from mia_core.config.secrets import redact
from pipelines.codecs.codestore import stored_bytes
from pipelines.codecs.encode_spec import EncodeSpec
from pipelines.codecs.quantise import bytes_per_step
from pipelines.tracking.experiments import ensure_experiment
from pipelines.tracking.tracker import set_fluent_tracking_uri, tracking_uri


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
        psnr: ``mean/min/p05/median/max`` PSNR (dB) over done steps and variables with
            data (frames of fill values are left out and counted in ``missing``).
        mse_mean: mean MSE over the same.
        psnr_per_variable: mean PSNR per variable.
        missing: (time step, variable) pairs without a valid point: not scored.
        compression_codes: raw field bytes / code bytes (entropy-coded codes: the bytes
            the ``codes`` array takes in storage, metadata and quantiser included).
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
    missing: int = 0


def summarize(group, seconds: float = 0.0, encoded: int = 0, skipped: int = 0) -> EncodeSummary:
    """Summary statistics of a code store's done steps (see :class:`EncodeSummary`)."""
    attrs = dict(group.attrs["mia_codes"])
    done = np.asarray(group["done"][...]).astype(bool)
    psnr = np.asarray(group["psnr"][...])[done]
    mse = np.asarray(group["mse"][...])[done]
    secs = np.asarray(group["encode_seconds"][...])[done]
    n = int(done.sum())
    scored = psnr[np.isfinite(psnr)]
    flat = scored if scored.size else np.full(1, np.nan)
    code_bytes = bytes_per_step(
        attrs["code_dim"],
        attrs["code_dtype"],
        attrs.get("code_scales", 0),
        attrs.get("patches_per_step", 0),
    )
    if attrs.get("code_bits"):  # entropy coded: what the chunks take, per done step
        code_bytes = stored_bytes(group, "codes") / max(n, 1)
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
        mse_mean=_nanmean(mse),
        psnr_per_variable={v: _nanmean(psnr[:, i]) for i, v in enumerate(attrs["variables"])},
        compression_codes=raw / code_bytes,
        compression_total=raw * max(n, 1) / (code_bytes * max(n, 1) + attrs["meta_bytes"]),
        code_dim=attrs["code_dim"],
        missing=int((~np.isfinite(psnr)).sum()),
    )


def _nanmean(x: np.ndarray) -> float:
    """Mean over the finite entries (NaN when there are none)."""
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else math.nan


def log_summary(
    summary: EncodeSummary, spec: EncodeSpec, cfg: Config, attrs: dict[str, Any], local: bool
) -> str:
    """Log the summary to MLflow (params redacted); returns the MLflow run id."""
    import mlflow

    uri = spec.tracking_uri or tracking_uri(cfg)
    Path(cfg.run.out_dir).mkdir(parents=True, exist_ok=True)
    set_fluent_tracking_uri(uri)
    # An explicit experiment id, not mlflow.set_experiment: that one is process-global
    # and makes later start_run(run_id=...) calls of other runs fail.
    exp_id = ensure_experiment(uri, spec.experiment, cfg.run.out_dir)
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
            "use_ray": not local,
            "concurrency": spec.concurrency,
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
            "missing": summary.missing,
            "compression_codes": summary.compression_codes,
            "compression_total": summary.compression_total,
            **{f"psnr_{k}": v for k, v in summary.psnr.items()},
            **{f"psnr/{k}": v for k, v in summary.psnr_per_variable.items()},
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        mlflow.log_dict(json.loads(json.dumps(asdict(summary))), "encode_summary.json")
        return run.info.run_id


__all__ = ["EncodeSummary", "log_summary", "summarize"]

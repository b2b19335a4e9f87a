"""The settings of an encoding job: a typed :class:`EncodeSpec` and its YAML loader.

A file (``configs/encode/*.yaml``) holds the fields under one ``encode:`` section and may
``include`` others; on the command line every field is ``encode.<field>=value``
(``encode.steps=32``, ``encode.time_range=[0,100]``). ``store``, ``checkpoint`` and ``out``
have no default: a file or the command line must set them. Where the job runs (``--local``,
``--address``) is not part of the spec, and neither are storage credentials: fsspec
options go to :func:`~pipelines.codecs.encode.run_encode` directly, and the environment
provides the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mia_core.config.errors import ConfigError
from mia_core.config.spec import Problems, Validated, bounded, choice, load_spec
from pipelines.codecs.entropy import CODERS, MAX_BITS, MIN_BITS
from pipelines.codecs.quantise import CODE_DTYPES

LARGER_CODES = ("refuse", "warn")
META_DTYPES = ("float32", "float16")
ENCODE_OPTIMIZERS = ("rule", "adam", "sgd")
ENCODE_DEVICES = ("cpu", "cuda", "auto")
SECTION = "encode"


@dataclass
class EncodeSpec(Validated):
    """What to encode and how.

    Attributes:
        store: field store URL (local path or ``s3://``).
        checkpoint: meta-model run directory or checkpoint file.
        model: instead of ``checkpoint``, an MLflow model a training run logged:
            ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or
            ``runs:/<run id>/meta_model`` (from ``tracking_uri``, else
            ``MLFLOW_TRACKING_URI``, else ``runs/mlflow.db``).
        out: code store URL.
        run_config: the meta-model run's config (empty: ``config.yaml`` of the
            checkpoint's run).
        steps: adaptation steps ``K`` per time step (0: none; a meta-model with closed-form
            heads, ``method.head_ridge``, then only solves its heads).
        lr: learning rate of ``adam``/``sgd`` (``rule`` uses the meta-trained rates).
        optimizer: ``rule`` (the inner-loop update the model was meta-trained with: MAML's
            SGD at ``method.inner_lr``, learned MetaSGD rates...), ``adam`` or ``sgd``. A
            MAML initialisation is tuned for its own inner rule; Adam's first steps move
            every weight by about ``lr`` and undo much of it.
        adam_steps: Adam continuation for targets past what ``K`` steps reach: after
            the ``K`` steps, this many Adam steps at ``adam_lr`` (one state per time
            step) from where they ended; 0 (default) stops at ``K``. The codes, the
            metrics and the report's encoder curve include them.
        adam_lr: learning rate of the Adam continuation (small: it refines a fit that
            is already close, unlike Adam from the meta-init).
        points_per_step: points sampled per step (0: every grid point, full resolution).
        batch_size: time steps adapted together (vectorised); 0: a whole chunk.
        chain_length: warm start in time: 0 starts every time step from the meta-learned
            initialisation; ``L > 0`` splits each unit into chains of ``L`` consecutive
            time steps whose first step starts from the meta-init and every later one
            from the adapted weights of the step before it; position ``l`` of every
            chain is one vectorised batch (``batch_size`` is then unused). Chains never
            cross a unit (a code chunk), so a resumed job encodes exactly the same codes.
        chunk: time steps per code-store chunk (0: the field store's time chunk).
        time_range: ``[start, stop)`` time indices to encode; ``None``: all.
        code_dtype: ``float32``, ``float16`` or ``int8`` (one float32 scale per adapted
            tensor and time step, :mod:`pipelines.codecs.quantise`); metrics are
            measured on the codes as stored.
        code_bits: 0 (default: ``code_dtype`` decides) or 2-8: every code channel is
            quantised at this bit depth with its own calibrated step and the symbols are
            entropy coded (:mod:`pipelines.codecs.entropy`); ``code_dtype`` is then unused.
        entropy_coder: with ``code_bits``: ``auto`` (per chunk, the smaller of the two),
            ``ans`` (constriction's ANS with a Laplace model per channel) or ``zstd``.
        calibration_codes: with ``code_bits``: code vectors (time steps, or patches of
            whole time steps) fitted before encoding to calibrate each channel's step;
            evenly spaced over the steps being encoded.
        meta_dtype: how the meta-model's weights are stored with the codes: ``float32`` or
            ``float16`` (half the bytes; the encoder then fits against the rounded weights).
        larger_codes: what to do when a time step's code takes at least as many bytes as
            its float32 data (compression <= 1x): ``refuse`` (default: stop before
            encoding, naming both sizes and what to change) or ``warn`` (log and encode).
        endpoint_url: S3-compatible endpoint for both stores (empty: the environment's).
        concurrency: encoder actors (Ray).
        cpus_per_actor: CPUs each actor reserves (fractional: leaves room for Ray Data).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA where the actor was given a GPU,
            resolved inside the actor: the driver may be a CPU-only head).
        gpus_per_actor: GPUs each actor reserves with ``device`` ``cuda``, or ``auto`` on
            a cluster with GPUs (fractional: several actors share one GPU). Ray hides
            the GPUs from an actor that reserves none.
        seed: point sampling seed.
        overwrite: discard an existing code store.
        tracking_uri: MLflow URI (empty: the meta-model run's tracking store).
        experiment: MLflow experiment.
        progress: show a progress bar.
    """

    store: str
    out: str
    checkpoint: str = ""
    model: str = ""
    run_config: str = ""
    steps: int = bounded(16, ge=0)
    lr: float = bounded(1e-3, gt=0.0)
    optimizer: str = choice("rule", ENCODE_OPTIMIZERS)
    adam_steps: int = bounded(0, ge=0)
    adam_lr: float = bounded(1e-4, gt=0.0)
    points_per_step: int = bounded(0, ge=0)
    batch_size: int = bounded(0, ge=0)
    chain_length: int = bounded(0, ge=0)
    chunk: int = bounded(0, ge=0)
    time_range: list[int] | None = None
    code_dtype: str = choice("float32", CODE_DTYPES)
    code_bits: int = bounded(0, ge=0)
    entropy_coder: str = choice("auto", CODERS)
    calibration_codes: int = bounded(256, ge=1)
    meta_dtype: str = choice("float32", META_DTYPES)
    larger_codes: str = choice("refuse", LARGER_CODES)
    endpoint_url: str = ""
    concurrency: int = bounded(2, ge=1)
    cpus_per_actor: float = bounded(0.5, gt=0.0)
    device: str = choice("cpu", ENCODE_DEVICES)
    gpus_per_actor: float = bounded(1.0, gt=0.0)
    seed: int = bounded(0, ge=0)
    overwrite: bool = False
    tracking_uri: str = ""
    experiment: str = "mia-inr-encode"
    progress: bool = True

    def _extra_problems(self) -> Problems:
        for name in ("store", "out"):
            if getattr(self, name) == "":
                yield name, "must not be empty"
        if not self.checkpoint and not self.model:
            yield "checkpoint", "must not be empty (or set encode.model to an MLflow model URI)"
        if self.code_bits and not MIN_BITS <= self.code_bits <= MAX_BITS:
            yield (
                "code_bits",
                (
                    f"must be 0 (off) or {MIN_BITS}..{MAX_BITS} bits per code value, "
                    f"got {self.code_bits}"
                ),
            )
        tr = self.time_range
        if tr is not None and not (len(tr) == 2 and 0 <= tr[0] < tr[1]):
            yield "time_range", f"must be [start, stop] with 0 <= start < stop, got {tr}"


def actor_resources(spec: EncodeSpec, cluster_gpus: float) -> dict[str, float]:
    """Ray resources of one encoder actor: ``num_cpus`` and, on the GPU path, ``num_gpus``.

    Args:
        spec: the encoding settings (``device``, ``cpus_per_actor``, ``gpus_per_actor``).
        cluster_gpus: GPUs of the Ray cluster (``ray.cluster_resources().get("GPU", 0)``).

    Raises:
        ConfigError: ``encode.device=cuda`` on a cluster without GPUs (the actors would
            wait for one forever).
    """
    out = {"num_cpus": spec.cpus_per_actor}
    if spec.device == "cpu" or (spec.device == "auto" and cluster_gpus <= 0):
        return out
    if cluster_gpus <= 0:
        raise ConfigError(
            "encode.device=cuda but the Ray cluster has no GPU: set encode.device=auto or "
            "cpu, or add GPU nodes"
        )
    if spec.gpus_per_actor > cluster_gpus:
        raise ConfigError(
            f"encode.gpus_per_actor={spec.gpus_per_actor:g} exceeds the cluster's "
            f"{cluster_gpus:g} GPU(s): lower it (fractions share a GPU)"
        )
    return {**out, "num_gpus": spec.gpus_per_actor}


def load_encode_spec(path: str | Path | None, overrides: Sequence[str] = ()) -> EncodeSpec:
    """Load an ``encode:`` file (``None``: the defaults) with ``encode.<key>=value`` overrides.

    Raises:
        ConfigError: naming the file or override and the dotted key (``encode.steps``).
    """
    return load_spec(EncodeSpec, path, overrides, SECTION)


__all__ = ["CODE_DTYPES", "EncodeSpec", "actor_resources", "load_encode_spec"]

"""A meta-trained model as an encoder: load it safely, adapt batches of fields, make codes.

The encoder starts every time step from the meta-learned initialisation and takes ``K``
gradient steps on that step's own values, for a batch of time steps at once: the adapted
tensors carry a leading batch dimension (one slice per time step) and each step is a
single ``autograd.grad`` for the whole batch (see :mod:`mia_core.meta.learner`). What is
adapted depends on how the model was meta-trained:

* ``weights`` (``maml``, ``meta_inr``): every INR weight; the code of a time step is its
  weight delta from the meta-model, flattened.
* ``head`` (``maml``/``meta_inr`` with ``method.head_ridge``): only each INR's last
  layer, solved in closed form; the code is the heads' deltas.
* ``context`` (``cavia``, ``metasgd``, ...): only the context vectors, which are the code
  (much smaller).

The adaptation itself (also the from-scratch baseline's) is
:func:`pipelines.codecs.fitting.fit_batch`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mia_core.builders import build_learner
from mia_core.config import Config, load_config
from mia_core.meta.learner import MetaLearner
from mia_core.meta.metrics import masked_mse, psnr
from pipelines.data.stores.location import redact_url
from pipelines.engine.checkpoint import file_sha256, load_checkpoint
from pipelines.engine.run_dir import CheckpointMissing, selected_checkpoint
from pipelines.tracking.tracker import tracking_uri


class EncodeError(ValueError):
    """Bad encoder input: checkpoint, config, variables or options (the message says which)."""


@dataclass
class MetaModel:
    """A meta-learner restored from a training checkpoint.

    Attributes:
        learner: the meta-learner in eval mode (its weights are the shared init).
        cfg: the run's resolved config.
        dims: variable -> ``(d_in, d_out)``.
        reference: where the checkpoint came from (path as given).
        sha256: hash of the checkpoint file (identifies the meta-model).
        pretrain_seconds: meta-training wall time up to this checkpoint (NaN when the
            checkpoint predates the record).
    """

    learner: MetaLearner
    cfg: Config
    dims: dict[str, tuple[int, int]]
    reference: str
    sha256: str
    pretrain_seconds: float = math.nan

    @property
    def modalities(self) -> list[str]:
        """Variables the meta-model encodes, in code order."""
        return list(self.learner.modalities)

    @property
    def mode(self) -> str:
        """``weights`` or ``context``."""
        return self.learner.adapt_mode


def resolve_checkpoint(checkpoint: str | Path, config: str | Path | None) -> tuple[Path, Path]:
    """Checkpoint file and its config: a run directory, or a ``.pt`` inside one.

    A run directory ``runs/<name>`` (or its ``checkpoints/``) resolves to ``best.pt``, else
    ``last.pt`` (:func:`~pipelines.engine.run_dir.selected_checkpoint`); an existing file
    is taken as it is. The config defaults to the run's ``config.yaml`` two levels above
    the checkpoint.

    Raises:
        EncodeError: a missing checkpoint or config, naming the path.
    """
    ckpt = Path(checkpoint)
    if ckpt.is_dir() or not ckpt.exists():
        try:
            ckpt = selected_checkpoint(ckpt)
        except CheckpointMissing as err:
            raise EncodeError(f"meta-model: {err}") from err
    cfg_path = Path(config) if config else ckpt.resolve().parent.parent / "config.yaml"
    if not cfg_path.exists():
        raise EncodeError(
            f"meta-model config {cfg_path} does not exist "
            "(set encode.run_config to the run's config.yaml)"
        )
    return ckpt, cfg_path


def resolve_model_uri(uri: str, tracking: str = "") -> tuple[Path, Path]:
    """Checkpoint file and config of an MLflow model that a training run logged.

    ``uri`` is ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or
    ``runs:/<id>/meta_model``. Its artifacts are downloaded from ``tracking`` (default:
    ``MLFLOW_TRACKING_URI``, else the project's ``runs/mlflow.db``).

    Raises:
        EncodeError: an unknown model, or one that is not a logged meta-model.
    """
    import mlflow

    uri_store = tracking or tracking_uri(load_config(None))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=uri_store))
    except Exception as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise EncodeError(
            f"MLflow model {uri} not found in {redact_url(uri_store)}: {detail} "
            "(set encode.tracking_uri to the store it was registered in)"
        ) from err
    found = sorted((local / "artifacts").glob("*.pt"))
    cfg_path = local / "artifacts" / "config.yaml"
    if not found or not cfg_path.exists():
        raise EncodeError(f"MLflow model {uri} has no checkpoint and config.yaml artifacts")
    return found[0], cfg_path


def load_meta_model(
    checkpoint: str | Path,
    dims: Mapping[str, tuple[int, int]],
    config: str | Path | None = None,
    device: torch.device | str = "cpu",
    state: dict[str, Any] | None = None,
    cfg: Config | None = None,
    sha256: str = "",
) -> MetaModel:
    """Rebuild the meta-learner of a training run and load its weights.

    Args:
        checkpoint: run directory or checkpoint file (see :func:`resolve_checkpoint`).
        dims: variable -> ``(d_in, d_out)`` of the store to encode; must cover the run's
            ``data.modalities``.
        config: the run's config file (default: beside the checkpoint).
        device: where the learner lives.
        state: an already loaded checkpoint (Ray actors get it from the driver), used
            together with ``cfg`` instead of reading files.
        cfg: the run's config when ``state`` is given.
        sha256: the checkpoint's hash when ``state`` is given.

    Raises:
        EncodeError: unreadable checkpoint, a checkpoint without model weights, variables
            the store lacks, or weights that do not fit the config and the store's shapes.
    """
    sha = sha256
    if state is None or cfg is None:
        ckpt, cfg_path = resolve_checkpoint(checkpoint, config)
        try:
            state = load_checkpoint(ckpt, "cpu")
        except RuntimeError as err:
            raise EncodeError(f"meta-model checkpoint {ckpt}: {err}") from err
        cfg = load_config(cfg_path)
        sha = file_sha256(ckpt)
    if not isinstance(state, dict) or "model" not in state:
        raise EncodeError(f"meta-model checkpoint {checkpoint}: no 'model' weights in it")
    missing = [m for m in cfg.data.modalities if m not in dims]
    if missing:
        raise EncodeError(
            f"meta-model {checkpoint} was trained on variables {list(cfg.data.modalities)}; "
            f"the store lacks {missing} (it has {list(dims)})"
        )
    use = {m: tuple(dims[m]) for m in cfg.data.modalities}
    learner = build_learner(cfg.model, cfg.method, use)
    try:
        learner.load_state_dict(state["model"])
    except RuntimeError as err:
        detail = str(err).replace("\n", " ")
        raise EncodeError(
            f"meta-model checkpoint {checkpoint} does not fit its config and this store's "
            f"variables {use} (d_in, channels): {detail}"
        ) from err
    learner.to(device).eval()
    for p in learner.parameters():
        p.requires_grad_(False)
    pretrain_s = float(state.get("wall_seconds", math.nan))
    return MetaModel(learner, cfg, use, str(checkpoint), sha, pretrain_s)


@torch.no_grad()
def predict(
    learner: MetaLearner,
    modality: str,
    coords: Tensor,
    params: Mapping[str, Tensor],
    chunk_points: int = 65536,
) -> Tensor:
    """``(B, P, C)`` values at shared coordinates ``(P, d)``, evaluated in point chunks."""
    outs = [
        learner.predict(modality, coords[None, a : a + chunk_points], dict(params))
        for a in range(0, coords.shape[0], chunk_points)
    ]
    return torch.cat(outs, 1)


@torch.no_grad()
def field_metrics(
    learner: MetaLearner,
    coords: Mapping[str, Tensor],
    values: Mapping[str, Tensor],
    valid: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    data_range: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Per-signal MSE and PSNR on valid points, ``(B, M)``; NaN where a signal has none."""
    mses = []
    for m in learner.modalities:
        err = masked_mse(predict(learner, m, coords[m], params), values[m], valid[m])
        empty = ~valid[m].reshape(valid[m].shape[0], -1).bool().any(1)
        mses.append(err.masked_fill(empty, float("nan")))
    mse = torch.stack(mses, 1)
    return mse, psnr(mse, data_range)


def batch_tensors(
    rows: Mapping[str, np.ndarray], device: torch.device | str = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Store rows ``(B, P, C)`` (NaN = missing) -> values with NaN zeroed and valid masks."""
    values, valid = {}, {}
    for m, arr in rows.items():
        arr = np.asarray(arr, np.float32)
        ok = np.isfinite(arr).all(-1)
        values[m] = torch.from_numpy(np.nan_to_num(arr, nan=0.0)).to(device)
        valid[m] = torch.from_numpy(ok.astype(np.float32)).to(device)
    return values, valid

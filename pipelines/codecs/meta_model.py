"""A meta-trained model as an encoder: load it safely, adapt batches of fields, make codes.

The encoder starts every time step from the meta-learned initialisation and takes ``K``
gradient steps on that step's own values, for a batch of time steps at once: the adapted
tensors carry a leading batch dimension (one slice per time step) and each step is a
single ``autograd.grad`` for the whole batch (see :mod:`mia_core.meta.learner`). What is
adapted depends on how the model was meta-trained:

* ``weights`` (``maml``, ``meta_inr``): every INR weight; the code of a time step is its
  weight delta from the meta-model, flattened.
* ``context`` (``cavia``, ``metasgd``, ...): only the context vectors, which are the code
  (much smaller).

The same routine fits a model from its random initialisation (the from-scratch baseline),
optionally until each signal reaches a target PSNR.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mia_core.adapt import SGD, Adam, UpdateRule
from mia_core.builders import build_learner
from mia_core.config import Config, load_config
from mia_core.meta.learner import MetaLearner
from mia_core.meta.metrics import masked_mse, psnr
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.engine.run_dir import CheckpointMissing, selected_checkpoint

OPTIMIZERS = ("adam", "sgd", "rule")


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
    """

    learner: MetaLearner
    cfg: Config
    dims: dict[str, tuple[int, int]]
    reference: str
    sha256: str

    @property
    def modalities(self) -> list[str]:
        """Variables the meta-model encodes, in code order."""
        return list(self.learner.modalities)

    @property
    def mode(self) -> str:
        """``weights`` or ``context``."""
        return self.learner.adapt_mode


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    return MetaModel(learner, cfg, use, str(checkpoint), sha)


@dataclass
class Layout:
    """How the adapted tensors of one time step are flattened into its code.

    Attributes:
        keys: adapted tensor names (``<var>`` for contexts, ``<var>/<weight>``).
        shapes: unbatched shape of each.
    """

    keys: list[str]
    shapes: list[tuple[int, ...]]

    @property
    def sizes(self) -> list[int]:
        """Elements per tensor."""
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        """Code length per time step."""
        return sum(self.sizes)

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-able description (stored with the codes)."""
        return [{"key": k, "shape": list(s)} for k, s in zip(self.keys, self.shapes, strict=True)]


def code_layout(learner: MetaLearner) -> Layout:
    """The layout of ``learner``'s adapted tensors (fixed order)."""
    init = learner.initial_params(1)
    return Layout(list(init), [tuple(v.shape[1:]) for v in init.values()])


def base_params(learner: MetaLearner) -> dict[str, Tensor]:
    """Unbatched meta-learned values of the adapted tensors.

    Weight codes are deltas from these; context codes are the contexts themselves.
    """
    return {k: v[0].detach() for k, v in learner.initial_params(1).items()}


def params_to_codes(learner: MetaLearner, params: Mapping[str, Tensor]) -> Tensor:
    """``(B, D)`` codes: weight deltas (weights mode) or contexts (context mode)."""
    base = base_params(learner)
    parts = []
    for k in code_layout(learner).keys:
        v = params[k].detach()
        if learner.adapt_mode == "weights":
            v = v - base[k]
        parts.append(v.reshape(v.shape[0], -1))
    return torch.cat(parts, 1)


def codes_to_params(learner: MetaLearner, codes: Tensor) -> dict[str, Tensor]:
    """Inverse of :func:`params_to_codes` (``codes``: ``(B, D)``)."""
    layout, base = code_layout(learner), base_params(learner)
    if codes.shape[-1] != layout.dim:
        raise EncodeError(f"codes have length {codes.shape[-1]}, the meta-model {layout.dim}")
    out, off = {}, 0
    for k, shape, n in zip(layout.keys, layout.shapes, layout.sizes, strict=True):
        v = codes[:, off : off + n].reshape(codes.shape[0], *shape).to(base[k].dtype)
        out[k] = v + base[k] if learner.adapt_mode == "weights" else v
        off += n
    return out


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


@dataclass
class FitResult:
    """Outcome of :func:`fit_batch`.

    Attributes:
        params: adapted tensors ``(B, ...)`` (detached).
        steps: gradient steps taken.
        seconds: wall time of the steps (evaluations for ``target_psnr`` excluded).
        steps_to_target: per signal, the first evaluated step reaching its target
            (``-1`` when never reached); empty without targets.
        seconds_to_target: per signal, the step time spent until then.
        history: ``(step, mean psnr)`` at every evaluation.
    """

    params: dict[str, Tensor]
    steps: int
    seconds: float
    steps_to_target: list[int] = field(default_factory=list)
    seconds_to_target: list[float] = field(default_factory=list)
    history: list[tuple[int, float]] = field(default_factory=list)


def fit_rule(
    learner: MetaLearner, optimizer: str, lr: float, params: Mapping[str, Tensor]
) -> UpdateRule:
    """The rule :func:`fit_batch` steps ``params`` (key -> ``(B, *shape)``) with.

    ``adam`` keeps one Adam state per signal, ``sgd`` uses ``lr`` too, ``rule`` is the
    update rule the learner was meta-trained with (its own rates; ``lr`` unused).

    Raises:
        EncodeError: ``optimizer`` is not one of ``OPTIMIZERS``.
    """
    if optimizer not in OPTIMIZERS:
        raise EncodeError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "rule":
        return learner.rule
    return (Adam if optimizer == "adam" else SGD).for_params(dict(params), lr=lr)


def fit_batch(
    learner: MetaLearner,
    coords: Mapping[str, Tensor],
    values: Mapping[str, Tensor],
    valid: Mapping[str, Tensor],
    steps: int,
    lr: float,
    optimizer: str = "adam",
    points_per_step: int = 0,
    seed: int = 0,
    init: Mapping[str, Tensor] | None = None,
    target_psnr: Tensor | None = None,
    eval_every: int = 10,
    data_range: float = 1.0,
) -> FitResult:
    """Adapt a batch of ``B`` fields from the learner's initialisation, vectorised.

    Args:
        learner: the (meta-)model; its own weights are not changed.
        coords: variable -> ``(P, d)`` coordinates shared by the batch.
        values: variable -> ``(B, P, C)`` normalised values (NaN replaced by 0).
        valid: variable -> ``(B, P)`` float, 1 where the value counts.
        steps: gradient steps ``K`` (an upper bound with ``target_psnr``).
        lr: learning rate.
        optimizer: ``adam`` (per-element, batched), ``sgd``, or ``rule`` (the update
            rule the model was meta-trained with, e.g. learned MetaSGD rates).
        points_per_step: points sampled per step (shared by the batch); 0 uses all.
        seed: seed of the point sampling.
        init: starting tensors ``(B, ...)`` instead of the meta-learned ones.
        target_psnr: ``(B,)`` mean-over-variables PSNR at which a signal counts as fitted;
            the fit stops once every signal reached it (checked every ``eval_every``).
        eval_every: evaluation period for ``target_psnr``.
        data_range: PSNR peak-to-peak range.
    """
    bsz = next(iter(values.values())).shape[0]
    start = init if init is not None else learner.initial_params(bsz)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    keys = list(params)
    rule = fit_rule(learner, optimizer, lr, params)
    rule_state = rule.init_state(params)
    gen = torch.Generator().manual_seed(seed)
    reached = torch.full((bsz,), -1, dtype=torch.long)
    reached_s = torch.full((bsz,), math.nan)
    history: list[tuple[int, float]] = []
    seconds, k = 0.0, 0
    for k in range(1, steps + 1):
        t0 = time.perf_counter()
        loss = 0.0
        for m in learner.modalities:
            x, y, mask = coords[m], values[m], valid[m]
            if 0 < points_per_step < x.shape[0]:
                idx = torch.randint(0, x.shape[0], (points_per_step,), generator=gen)
                idx = idx.to(x.device)
                x, y, mask = x[idx], y[:, idx], mask[:, idx]
            loss = loss + masked_mse(learner.predict(m, x[None], params), y, mask).sum()
        grads = torch.autograd.grad(loss, [params[key] for key in keys])
        with torch.no_grad():
            g = dict(zip(keys, grads, strict=True))
            new, rule_state, _ = rule(params, g, rule_state, k - 1)
        params = {key: v.detach().requires_grad_(True) for key, v in new.items()}
        seconds += time.perf_counter() - t0
        if target_psnr is not None and (k % eval_every == 0 or k == steps):
            _, p_db = field_metrics(learner, coords, values, valid, params, data_range)
            mean_db = p_db.mean(1).cpu()
            history.append((k, float(mean_db.mean())))
            hit = (mean_db >= target_psnr) & (reached < 0)
            reached[hit], reached_s[hit] = k, seconds
            if bool((reached >= 0).all()):
                break
    return FitResult(
        {key: v.detach() for key, v in params.items()},
        k,
        seconds,
        reached.tolist() if target_psnr is not None else [],
        reached_s.tolist() if target_psnr is not None else [],
        history,
    )


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

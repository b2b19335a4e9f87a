"""A run's selected checkpoint as an MLflow model: physical values at physical points.

Every evaluated run (``run.log_model``, on by default) logs its validation-selected
checkpoint as the MLflow model ``meta_model`` of its run, registered as
``run.registered_model`` (default ``mia-inr-<run.name>``; empty: logged, not
registered) with the alias ``selected`` on the version just registered
(``models:/mia-inr-<run.name>@selected``), with a signature, an input example and
metadata. The model is defined *from code* (``mlflow_model_code.py``), not pickled, and
its artifacts are the checkpoint (loaded with ``weights_only=True``), the run's
``config.yaml`` and the modalities' dimensions.

**Field stores** (``time, [member], [level], lat, lon`` or ``time, z, y, x``): the model
answers in the user's terms (:mod:`pipelines.reports.mlflow_physical`, the artifact
``geometry``): rows of ``time``, ``latitude``, ``longitude`` (either convention; ``z, y,
x`` for volumes) and ``level`` / ``member`` where the store has them, in; one column per
variable in physical units, out, predicted from the code of each row's time step (the
model's code table, else computed from the training store as ``mia-inr encode`` does).
docs/mlflow_model.md shows the temperature at 45N, 100W on a date.

**Signal stores and patch-trained models** keep the model's own frame. Input: one row per
(signal, modality, role) with columns ``signal`` (int), ``modality``
(str), ``role`` (``support``, ``query`` or ``code``, below), ``x`` (flattened ``(P, d_in)``
coordinates in the model's ``[-1, 1]`` frame) and ``y`` (flattened ``(P, C)`` normalised
values of the support points; empty for queries). For each signal the model adapts its
inner loop to the support rows (a modality without support keeps the meta-learned start)
and returns one row per query row: ``signal``, ``modality`` and ``prediction`` (flattened
``(P, C)``). ``params={"steps": K}`` overrides the number of inner steps.

Codes are the code store's (``mia-inr encode``, :mod:`pipelines.codecs.codestore`): a
signal's code is ONE vector over all modalities, the adapted tensors in
:func:`~mia_core.meta.codes.code_layout` order, flattened: the contexts for CAVIA-style
methods, the weight deltas from the meta-model for MAML-style ones such as Meta-INR
(weights or head mode). Both directions go through
:func:`~mia_core.meta.codes.params_to_codes` and :func:`~mia_core.meta.codes.codes_to_params`,
the encoder's and the decoder's own. In the model's own frame,
``params={"output": "codes"}`` returns one row per signal, ``signal`` and ``code`` (with
the encoder's settings: the same ``K``, ``encode.optimizer=rule``, every point, the vector
the code store holds for that time step), and one row with ``role`` ``code`` and a
signal's code in ``y`` (``x`` empty, ``modality`` ignored) stands in for that signal's
adaptation. The meta-model is the checkpoint whose SHA-256 a code store records as
``meta_sha256``; a code of another length is refused, naming the expected length and the
meta-model. (A store written with ``encode.meta_dtype=float16`` holds deltas from the
rounded weights, which this model adds to its float32 ones; patch code stores, ``(time,
patch, code)``, decode with the code store's own decoder only.)

:func:`log_dataset` records the training store as the run's MLflow dataset input, with
its URL (credentials removed) and a digest of its metadata.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mia_core.builders import build_learner
from mia_core.config import Config, load_config
from mia_core.data.episode import ModalityBatch
from mia_core.meta.codes import CodeLayoutError, code_layout, codes_to_params, params_to_codes
from mia_core.meta.learner import MetaLearner
from pipelines.data.resolve import open_training_store
from pipelines.data.stores import Store
from pipelines.data.stores.location import redact_url
from pipelines.data.stores.reader import FieldStore
from pipelines.engine.checkpoint import file_sha256, load_checkpoint
from pipelines.reports.mlflow_geometry import Geometry
from pipelines.reports.mlflow_physical import CodeTable, encodes_itself, metadata, signature
from pipelines.reports.mlflow_physical import input_example as physical_example

MODEL_NAME = "meta_model"
SELECTED_ALIAS = "selected"  # the alias of the version a run registers
ROLES = ("support", "query", "code")
OUTPUTS = ("predictions", "codes")
CODE = Path(__file__).with_name("mlflow_model_code.py")


def load_learner(artifacts: Mapping[str, str]) -> tuple[MetaLearner, Config]:
    """The meta-learner of a logged model's artifacts (``checkpoint``, ``config``, ``dims``)."""
    cfg = load_config(artifacts["config"])
    dims = {m: tuple(d) for m, d in json.loads(Path(artifacts["dims"]).read_text()).items()}
    learner = build_learner(cfg.model, cfg.method, dims)
    learner.load_state_dict(load_checkpoint(artifacts["checkpoint"], "cpu")["model"])
    learner.eval()
    for p in learner.parameters():
        p.requires_grad_(False)
    return learner, cfg


def meta_model_name(artifacts: Mapping[str, str], cfg: Config) -> str:
    """How errors name a logged meta-model: its run and its checkpoint's SHA-256 prefix.

    The prefix is that of ``meta_sha256`` in code stores encoded from the same checkpoint.
    """
    return f"{cfg.run.name!r} (checkpoint sha256 {file_sha256(artifacts['checkpoint'])[:12]})"


def _points(values: Any, width: int) -> torch.Tensor:
    arr = np.asarray(values if values is not None else [], np.float32)
    return torch.from_numpy(arr.reshape(-1, width))


def _episode(learner: MetaLearner, rows: pd.DataFrame) -> tuple[dict, dict]:
    """One signal's rows -> a ``B = 1`` episode and its query coordinates per modality."""
    episode, queries = {}, {}
    for m in learner.modalities:
        inr = learner.inrs[m]
        d_in, c = inr.d_in, inr.d_out
        sup = rows[(rows["modality"] == m) & (rows["role"] == "support")]
        xs = [_points(x, d_in) for x in sup["x"]] or [torch.zeros(1, d_in)]
        ys = [_points(y, c) for y in sup["y"]] or [torch.zeros(1, c)]
        sx, sy = torch.cat(xs)[None], torch.cat(ys)[None]
        mask = torch.ones(sx.shape[:2]) if len(sup) else torch.zeros(sx.shape[:2])
        q = rows[(rows["modality"] == m) & (rows["role"] == "query")]
        qx = [_points(x, d_in) for x in q["x"]]
        queries[m] = qx
        n_q = max(1, sum(len(v) for v in qx))
        episode[m] = ModalityBatch(
            sx, sy, mask, torch.zeros(1, n_q, d_in), torch.zeros(1, n_q, c),
            torch.ones(1, n_q), torch.zeros(1, n_q), torch.ones(1),
        )  # fmt: skip
    return episode, queries


def _signal_code(
    learner: MetaLearner, signal: int, rows: pd.DataFrame, name: str
) -> dict[str, torch.Tensor] | None:
    """The adapted tensors of a signal's ``code`` row (decode), or ``None`` without one.

    Raises:
        CodeLayoutError: several code rows, a code row beside support rows, or a code whose
            length is not the meta-model's code length.
    """
    given = rows[rows["role"] == "code"]
    if not len(given):
        return None
    if len(given) > 1 or (rows["role"] == "support").any():
        raise CodeLayoutError(
            f"signal {signal}: a code row stands for the whole signal (every modality); give "
            f"one code row and no support rows, got {len(given)} code and "
            f"{int((rows['role'] == 'support').sum())} support rows"
        )
    flat = torch.as_tensor(np.asarray(given["y"].iloc[0], np.float32)).reshape(-1)
    dim = code_layout(learner).dim
    if flat.numel() != dim:
        raise CodeLayoutError(
            f"signal {signal}: a code has {flat.numel()} values; meta-model {name} expects "
            f"{dim} (the code store's code_dim of a store encoded from it)"
        )
    return codes_to_params(learner, flat[None])


def adapt_and_predict(
    learner: MetaLearner,
    frame: pd.DataFrame,
    steps: int | None = None,
    output: str = "predictions",
    name: str = "(unnamed)",
) -> pd.DataFrame:
    """Adapt to each signal's support rows and predict its query rows (module docstring).

    Args:
        learner: the meta-learner.
        frame: the model input (module docstring).
        steps: inner steps ``K`` (``None``: the model's).
        output: ``predictions``, or ``codes`` (encode): one row per signal with its
            code-store vector.
        name: how errors name the meta-model (:func:`meta_model_name`).

    Raises:
        ValueError: missing columns, unknown modalities, roles or output.
        CodeLayoutError: a bad ``code`` row (:func:`_signal_code`).
    """
    bad = {"signal", "modality", "role", "x", "y"} - set(frame.columns)
    if bad:
        raise ValueError(f"model input lacks columns {sorted(bad)}")
    unknown = set(frame.loc[frame["role"] != "code", "modality"]) - set(learner.modalities)
    if unknown:
        have = learner.modalities
        raise ValueError(f"unknown modalities {sorted(unknown)}; the model has {have}")
    if set(frame["role"]) - set(ROLES) or output not in OUTPUTS:
        raise ValueError(f"roles must be among {list(ROLES)} and output one of {list(OUTPUTS)}")
    out = []
    for signal, rows in frame.groupby("signal", sort=True):
        episode, queries = _episode(learner, rows[rows["role"] != "code"])
        params = _signal_code(learner, int(signal), rows, name)
        if params is None:
            with torch.enable_grad():
                params, _ = learner.adapt(
                    episode, create_graph=False, prune=False, steps=steps or None, track_graph=False
                )
        with torch.no_grad():
            if output == "codes":
                out.append((int(signal), params_to_codes(learner, params)[0].double().tolist()))
                continue
            for m, qx in queries.items():
                for x in qx:
                    pred = learner.predict(m, x[None], dict(params))[0]
                    out.append((int(signal), m, pred.reshape(-1).double().tolist()))
    columns = ["signal", "code"] if output == "codes" else ["signal", "modality", "prediction"]
    return pd.DataFrame(out, columns=columns)


def input_example(learner: MetaLearner, points: int = 4) -> pd.DataFrame:
    """A two-row-per-modality example: ``points`` support and query points of signal 0."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for m in learner.modalities:
        inr = learner.inrs[m]
        x = (torch.rand(points, inr.d_in, generator=gen) * 2 - 1).reshape(-1).tolist()
        y = torch.rand(points, inr.d_out, generator=gen).reshape(-1).tolist()
        rows += [(0, m, "support", x, y), (0, m, "query", x, [])]
    return pd.DataFrame(rows, columns=["signal", "modality", "role", "x", "y"])


def registered_name(cfg: Config) -> str:
    """``run.registered_model`` with ``<run.name>`` filled in ("" = do not register)."""
    return cfg.run.registered_model.replace("<run.name>", cfg.run.name)


def field_geometry(store: Store, cfg: Config) -> Geometry | None:
    """The geometry of a field store the model answers physically for (else ``None``).

    Patch-trained models and signal stores keep the model's own frame.
    """
    if not isinstance(store, FieldStore) or cfg.data.patch:
        return None
    loc = store.location
    url = loc.display if loc.is_remote else str(Path(loc.url.removeprefix("file://")).resolve())
    return Geometry.of_store(store, url, redact_url(cfg.data.endpoint_url or ""))


def log_meta_model(
    run_dir: Path,
    checkpoint: Path,
    cfg: Config,
    dims: Mapping[str, tuple[int, int]],
    store: Store | None = None,
    codes: CodeTable | None = None,
) -> str:
    """Log ``checkpoint`` as the active MLflow run's pyfunc model (and register it).

    Args:
        run_dir: the run directory (the artifacts are written there first).
        checkpoint: the selected checkpoint.
        cfg: the run's config.
        dims: the modalities' ``(d_in, channels)``.
        store: the training store (default: opened from ``cfg``); a field store's model
            answers in physical terms (module docstring).
        codes: codes of the store's signals to hold (default: computed on first use).

    Returns:
        The model's URI: ``models:/<name>/<version>`` when registered (the version also
        gets the alias ``selected``), else MLflow's ``models:/<model id>``.

    Raises:
        CodeLayoutError: ``codes`` of another length than the meta-model's codes.
    """
    import mlflow
    from mlflow.models import infer_signature

    dims_file = run_dir / "model_dims.json"
    dims_file.write_text(json.dumps({m: list(d) for m, d in dims.items()}))
    artifacts = {
        "checkpoint": str(checkpoint),
        "config": str(run_dir / "config.yaml"),
        "dims": str(dims_file),
    }
    learner, _ = load_learner(artifacts)
    geometry = field_geometry(store or open_training_store(cfg), cfg)
    extra: dict[str, Any] = {}
    if geometry is not None:
        artifacts["geometry"] = str(run_dir / "model_geometry.json")
        geometry.save(Path(artifacts["geometry"]))
        if codes is not None:
            count = len(geometry.times) * max(1, len(geometry.members))
            signals = np.asarray(codes.signals)
            if len(signals) != len(codes.codes) or ((signals < 0) | (signals >= count)).any():
                raise ValueError(
                    f"a code table needs one store signal (0..{count - 1}) per code; got "
                    f"{len(signals)} signals for {len(codes.codes)} codes"
                )
            dim = code_layout(learner).dim
            if np.shape(codes.codes)[-1] != dim:
                raise CodeLayoutError(
                    f"codes of {np.shape(codes.codes)[-1]} values; meta-model "
                    f"{meta_model_name(artifacts, cfg)} expects {dim}"
                )
            artifacts["codes"] = str(run_dir / "model_codes.npz")
            codes.save(Path(artifacts["codes"]))
        extra = dict(signature=signature(geometry), metadata=metadata(geometry, codes))
        if codes is not None or encodes_itself(geometry):  # MLflow predicts it once
            first = int(np.min(codes.signals)) if codes is not None else 0
            extra["input_example"] = physical_example(geometry, first)
    else:
        example = input_example(learner)
        with warnings.catch_warnings():  # the hint about integer columns: ids never miss
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            sig = infer_signature(
                example,
                adapt_and_predict(learner, example, steps=1),
                params={"steps": 0, "output": "predictions"},
            )
        extra = dict(signature=sig, input_example=example)
    name = registered_name(cfg)
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=str(CODE),
        artifacts=artifacts,
        registered_model_name=name or None,
        pip_requirements=["mia-inr", f"torch=={torch.__version__.split('+')[0]}"],
        **extra,
    )
    version = info.registered_model_version
    if not version:
        return info.model_uri
    mlflow.MlflowClient().set_registered_model_alias(name, SELECTED_ALIAS, str(version))
    return f"models:/{name}/{version}"


def store_digest(store: Store, sample_signals: int = 16) -> str:
    """SHA-256 (first 16 hex digits) of the store's metadata and a sample of its content.

    Metadata: shapes, dtypes, attributes; content: the split and valid masks and the values
    of ``sample_signals`` evenly spaced signals (first and last included), so rewriting a
    store's data with the same layout changes the digest without reading all of it.
    """
    group = getattr(store, "group", None)
    if group is not None:
        docs = {"/": group.metadata.to_dict()}
        docs.update({name: arr.metadata.to_dict() for name, arr in sorted(group.arrays())})
    else:  # a field store opened through xarray
        docs = {"dims": dict(store.ds.sizes), "attrs": dict(store.ds.attrs)}
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(store.split).tobytes())
    digest.update(np.ascontiguousarray(store.valid).tobytes())
    n = store.num_signals
    picked = np.unique(np.linspace(0, n - 1, min(n, sample_signals)).round().astype(int))
    for start, stop in store.chunk_ranges():
        rows = picked[(picked >= start) & (picked < stop)] - start
        if len(rows):
            values = store.read(start, stop)
            for m in store.modalities:
                digest.update(np.ascontiguousarray(values[m][rows]).tobytes())
    return digest.hexdigest()[:16]


def log_dataset(store: Store, context: str = "training") -> None:
    """Record ``store`` as a dataset input of the active MLflow run."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    url = store.location.display
    with warnings.catch_warnings():  # a local path matches two registered source kinds
        warnings.filterwarnings("ignore", message=".*multiple ways", category=UserWarning)
        source = resolve_dataset_source(url)
    dataset = MetaDataset(source, name=Path(url.rstrip("/")).name, digest=store_digest(store))
    mlflow.log_input(dataset, context=context)


__all__ = [
    "MODEL_NAME",
    "SELECTED_ALIAS",
    "adapt_and_predict",
    "field_geometry",
    "input_example",
    "load_learner",
    "log_dataset",
    "log_meta_model",
    "meta_model_name",
    "registered_name",
    "store_digest",
]

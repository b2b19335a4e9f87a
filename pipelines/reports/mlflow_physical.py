"""The MLflow model of a field-store run in the user's terms: physical in, physical out.

Input: one row per point, with columns ``time`` (a datetime, or the store's own time
value: ISO text for other calendars, numbers for numeric time axes), the spatial
coordinates in the store's terms (``latitude`` and ``longitude`` in degrees, either
longitude convention; ``z``, ``y``, ``x`` for volumes), ``level`` (the level's value, e.g.
``850``) for variables with levels and ``member`` for ensembles
(:mod:`pipelines.reports.mlflow_geometry`). Output: one column per variable in physical
units (the stored normalisation undone with :func:`~pipelines.data.stores.writer.invert_norm`;
the units are in the model's metadata), one row per input row.

Each row is predicted from the code of its time step (and member), the code store's vector
(:func:`~mia_core.meta.codes.codes_to_params`): from the model's own :class:`CodeTable`
when it was logged with one (``codes.npz``; a time step it lacks is refused, naming the
steps it has), else computed on first use from the field store the model was trained on,
as ``mia-inr encode`` does with ``encode.optimizer=rule``, the model's ``K`` inner steps
(``params={"steps": K}`` overrides) and every grid point, and kept for later calls (up to
:data:`MAX_ENCODE_POINTS` points per time step: a larger store's model needs a table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mia_core.data.episode import ModalityBatch
from mia_core.meta.codes import codes_to_params, params_to_codes
from mia_core.meta.learner import MetaLearner
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.reader import FieldStore
from pipelines.data.stores.writer import invert_norm
from pipelines.reports.mlflow_geometry import Geometry, ModelInputError

CODES_FILE = "codes.npz"
CHUNK_POINTS = 1 << 16  # points per forward pass
# Points per time step (all variables) up to which the model computes a code itself: the
# inner loop holds every point's activations at once (a 256-wide SIREN: ~1 GB per 40k).
MAX_ENCODE_POINTS = 1 << 18
TIME_TYPES = {"datetime": "datetime", "cftime": "string", "number": "double", "index": "long"}


@dataclass
class CodeTable:
    """Codes of some of the store's signals: ``signals (S,)`` indices, ``codes (S, D)``.

    A code store of the same meta-model gives one directly: its time axis is the store's
    signals, so ``CodeTable(np.arange(n), read_codes(group, np.arange(n)))``.
    """

    signals: np.ndarray
    codes: np.ndarray

    def save(self, path: Path) -> None:
        """Write ``codes.npz``."""
        np.savez(path, signals=np.asarray(self.signals, np.int64), codes=self.codes)

    @classmethod
    def load(cls, path: str | Path) -> CodeTable:
        """Read ``codes.npz``."""
        with np.load(path) as f:
            return cls(np.asarray(f["signals"], np.int64), np.asarray(f["codes"], np.float32))


class PhysicalModel:
    """Predict physical values at physical points from codes (see the module docstring).

    Args:
        learner: the meta-learner.
        geometry: the training store's geometry.
        codes: the model's code table (``None``: codes computed from the store).
    """

    def __init__(
        self, learner: MetaLearner, geometry: Geometry, codes: CodeTable | None = None
    ) -> None:
        self.learner, self.geometry, self.table = learner, geometry, codes
        self._codes: dict[tuple[int, int], torch.Tensor] = {}
        self._store: FieldStore | None = None
        if codes is not None:
            vectors = torch.as_tensor(np.asarray(codes.codes, np.float32))
            self._codes = {(int(s), 0): c for s, c in zip(codes.signals, vectors, strict=True)}

    def predict(self, frame: pd.DataFrame, steps: int | None = None) -> pd.DataFrame:
        """One column per variable, physical units, one row per row of ``frame``.

        Raises:
            ModelInputError: bad columns, points off the grid, times or levels the model
                lacks (one line).
        """
        geo = self.geometry
        if "level" in frame.columns and not geo.has_levels:
            raise ModelInputError("the model's variables have no levels; drop the 'level' column")
        signals = geo.signals(frame)
        names = list(self.learner.modalities)
        points = {v: geo.variables[v].points(frame) for v in names}
        channels = {v: geo.variables[v].channels(frame) for v in names}
        out = {v: np.full(len(frame), np.nan) for v in names}
        for s in np.unique(signals):
            rows = np.flatnonzero(signals == s)
            params = codes_to_params(self.learner, self.code(int(s), steps)[None])
            for v in names:
                pred = self._values(v, points[v][rows], params)
                physical = invert_norm(pred, geo.variables[v].norm)
                out[v][rows] = physical[np.arange(len(rows)), channels[v][rows]]
        return pd.DataFrame(out, index=frame.index)

    def code(self, signal: int, steps: int | None = None) -> torch.Tensor:
        """The code of store signal ``signal`` (table, cache, or computed now).

        Raises:
            ModelInputError: the model has a code table without that signal.
        """
        key = (signal, 0 if self.table is not None else int(steps or 0))
        if key in self._codes:
            return self._codes[key]
        if self.table is not None:
            per = max(1, len(self.geometry.members))
            raise ModelInputError(
                f"time {self.geometry.times[signal // per]} has no code in this model; it "
                f"holds codes of {self.geometry.describe(self.table.signals)}"
            )
        self._codes[key] = self._encode(signal, steps)
        return self._codes[key]

    def _values(self, v: str, points: np.ndarray, params: dict) -> np.ndarray:
        """Normalised predictions ``(n, C)`` of variable ``v`` at ``points`` (model frame)."""
        parts = []
        with torch.no_grad():
            for i in range(0, len(points), CHUNK_POINTS):
                x = torch.from_numpy(points[i : i + CHUNK_POINTS])[None]
                parts.append(self.learner.predict(v, x, dict(params))[0].double().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 1))

    def _encode(self, signal: int, steps: int | None) -> torch.Tensor:
        """Adapt to every point of ``signal`` in the training store: its code-store code.

        Raises:
            ModelInputError: a time step of more than :data:`MAX_ENCODE_POINTS` points.
        """
        if not encodes_itself(self.geometry):
            per = max(1, len(self.geometry.members))
            raise ModelInputError(
                f"time {self.geometry.times[signal // per]}: this model computes codes itself "
                f"only for up to {MAX_ENCODE_POINTS} points per time step, its store has "
                f"{points_per_step(self.geometry)}; log it with a code store's codes "
                "(docs/mlflow_model.md)"
            )
        store = self._open()
        values = store.read(signal, signal + 1)
        episode = {}
        for m in self.learner.modalities:
            x = torch.from_numpy(np.asarray(store.read_coords(m, signal, signal + 1)))[None]
            y = torch.from_numpy(values[m][:1])
            mask = torch.isfinite(y).all(-1).float()
            y = torch.nan_to_num(y)
            d_in, c = x.shape[-1], y.shape[-1]
            episode[m] = ModalityBatch(
                x, y, mask, torch.zeros(1, 1, d_in), torch.zeros(1, 1, c),
                torch.ones(1, 1), torch.zeros(1, 1), torch.ones(1),
            )  # fmt: skip
        with torch.enable_grad():
            params, _ = self.learner.adapt(
                episode, create_graph=False, prune=False, steps=steps or None, track_graph=False
            )
        with torch.no_grad():
            return params_to_codes(self.learner, params)[0].detach()

    def _open(self) -> FieldStore:
        if self._store is None:
            geo = self.geometry
            location = make_location(geo.store, endpoint_url=geo.endpoint_url or None)
            store = open_store(location, list(self.learner.modalities))
            if not isinstance(store, FieldStore):
                raise ModelInputError(f"{location}: not the field store this model was trained on")
            self._store = store
        return self._store


def points_per_step(geometry: Geometry) -> int:
    """Grid points of one time step over all variables."""
    return sum(math.prod(len(a.values) for a in v.axes) for v in geometry.variables.values())


def encodes_itself(geometry: Geometry) -> bool:
    """Whether the model computes a time step's code itself (see :data:`MAX_ENCODE_POINTS`)."""
    return points_per_step(geometry) <= MAX_ENCODE_POINTS


def signature(geometry: Geometry) -> Any:
    """The model's ``ModelSignature``: physical columns in, one double per variable out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    cols = [ColSpec(TIME_TYPES[geometry.time_kind], "time")]
    cols += [ColSpec("double", c) for c in geometry.columns]
    if geometry.has_levels:
        cols.append(ColSpec("double", "level"))
    if geometry.members:
        kind = _member_type(geometry.members)
        cols.append(ColSpec(kind, "member", required=len(geometry.members) > 1))
    outputs = [ColSpec("double", v) for v in geometry.variables]
    params = ParamSchema([ParamSpec("steps", "long", 0)])
    return ModelSignature(Schema(cols), Schema(outputs), params)


def _member_type(members: list[Any]) -> str:
    if all(isinstance(m, int) for m in members):
        return "long"
    return "double" if all(isinstance(m, float) for m in members) else "string"


def input_example(geometry: Geometry, signal: int = 0) -> pd.DataFrame:
    """One row at the middle of the grid: store signal ``signal``'s time (and member)."""
    per = max(1, len(geometry.members))
    t = geometry.times[signal // per]
    row: dict[str, Any] = {"time": pd.Timestamp(t) if geometry.time_kind == "datetime" else t}
    for var in geometry.variables.values():
        for a in var.axes:
            row.setdefault(a.column, float(a.values[len(a.values) // 2]))
        if var.levels:
            row.setdefault("level", float(var.levels[0]))
    if geometry.members:
        row["member"] = geometry.members[signal % per]
    return pd.DataFrame([row])


def metadata(geometry: Geometry, codes: CodeTable | None) -> dict[str, Any]:
    """The model's metadata: units and names per variable, the time steps, the codes."""
    variables = {}
    for name, var in geometry.variables.items():
        keep = ("units", "standard_name", "long_name")
        variables[name] = {k: var.attrs[k] for k in keep if k in var.attrs}
        if var.levels:
            variables[name].update(levels=var.levels, level_units=var.level_units)
    return {
        "input": "physical",
        "variables": variables,
        "time": {
            "kind": geometry.time_kind,
            "calendar": geometry.calendar,
            "steps": geometry.describe(),
        },
        "members": geometry.members,
        "codes": (
            f"code table of {geometry.describe(codes.signals)}"
            if codes is not None
            else f"computed on first use from {geometry.store}"
        ),
    }


__all__ = [
    "CODES_FILE",
    "CodeTable",
    "PhysicalModel",
    "encodes_itself",
    "input_example",
    "metadata",
    "signature",
]

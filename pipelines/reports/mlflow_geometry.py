"""A field store's geometry for the MLflow model: physical coordinates -> the model's frame.

The meta-model sees a field store's grid as coordinates in ``[-1, 1]`` (grid index ``i``
of ``n`` at ``-1 + 2 i / (n - 1)``, latitude ascending, see
:func:`~pipelines.data.stores.reader.grid_coords`) and time steps (times members) as
signals. :class:`Geometry` keeps what it takes to go back from the user's terms, saved as
the model artifact ``geometry.json``: per variable its spatial axes with their coordinate
values, its levels, normalisation statistics and physical attributes (units); the store's
time values and members; the store's location.

A point between grid lines maps between them (linearly in the coordinate values, so
uneven grids such as Gaussian latitudes map right). Longitudes are taken in either
convention (``-100`` and ``260`` are the same) and wrapped into the store's own range,
``0..360``, ``-180..180`` or a regional box such as ``-140..-52.5``. A point more than half
a grid step outside the grid's extent is refused with a :class:`ModelInputError` naming
the column, row and extent (within half a step it takes the edge's value, so a global
grid answers everywhere). A time must be one of the store's time steps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.stores.field_attrs import physical_attrs
from pipelines.data.stores.reader import FieldStore

LONGITUDES = ("longitude", "lon")
COLUMNS = {"lat": "latitude", "lon": "longitude"}  # input column of a spatial dim


class ModelInputError(ValueError):
    """Model input the model cannot answer (one line: the column, the row, what it has).

    A missing column, a point off the grid, a time step or level the model lacks.
    """


@dataclass
class Axis:
    """One spatial axis: its dim, input column, units and values in the reader's order."""

    dim: str
    column: str
    values: list[float]
    units: str = ""

    def frame(self, given: np.ndarray) -> np.ndarray:
        """``given`` physical coordinates -> the model's ``[-1, 1]`` coordinates.

        Raises:
            ModelInputError: a missing value, or a point off the grid (see the module).
        """
        vals = np.asarray(self.values, np.float64)
        n = len(vals)
        v = np.asarray(given, np.float64)
        if np.isnan(v).any():
            raise _rows_error(f"column {self.column!r} has missing values", ~np.isnan(v))
        if n == 1:
            ok = np.isclose(v, vals[0])
            if not ok.all():
                raise _rows_error(f"{self.column} {v[~ok][0]:g} is not {vals[0]:g}", ok)
            return np.zeros_like(v)
        asc, pos = (vals[::-1], np.arange(n)[::-1]) if vals[0] > vals[-1] else (vals, np.arange(n))
        lo, hi = float(asc[0]), float(asc[-1])
        lo_tol, hi_tol = (asc[1] - asc[0]) / 2, (asc[-1] - asc[-2]) / 2
        if self.dim in LONGITUDES:
            d = np.mod(v - lo, 360.0)
            below = (360.0 - d) <= lo_tol + 1e-9
            v = np.where(d <= hi - lo + hi_tol + 1e-9, lo + d, np.where(below, lo, np.nan))
            ok = ~np.isnan(v)
            where = f"{lo:g} to {hi:g}{self._units()} (either convention: -100 is 260)"
        else:
            ok = (v >= lo - lo_tol - 1e-9) & (v <= hi + hi_tol + 1e-9)
            where = f"{lo:g} to {hi:g}{self._units()}"
        if not ok.all():
            bad = np.asarray(given, np.float64)[~ok][0]
            raise _rows_error(f"{self.column} {bad:g} is outside the model's grid, {where}", ok)
        idx = np.interp(np.clip(v, lo, hi), asc, pos.astype(np.float64))
        return -1.0 + 2.0 * idx / (n - 1)

    def _units(self) -> str:
        return f" {self.units}" if self.units else ""


@dataclass
class VariableGeometry:
    """One variable: spatial axes, levels (channels), normalisation and physical attrs."""

    name: str
    axes: list[Axis]
    norm: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    level_dim: str | None = None
    levels: list[float] | None = None
    level_units: str = ""

    @property
    def units(self) -> str:
        """Physical units ("" when unknown)."""
        return str(self.attrs.get("units", ""))

    def points(self, frame: pd.DataFrame) -> np.ndarray:
        """``(rows, d)`` float32 coordinates of ``frame``'s rows in the model's frame."""
        cols = [a.frame(_column(frame, a.column)) for a in self.axes]
        return np.stack(cols, -1).astype(np.float32)

    def channels(self, frame: pd.DataFrame) -> np.ndarray:
        """The channel (level index) of each row: 0 without levels.

        Raises:
            ModelInputError: levels without a ``level`` column, or a level not stored.
        """
        if not self.levels:
            return np.zeros(len(frame), np.int64)
        shown = f"{self.levels}{' ' + self.level_units if self.level_units else ''}"
        if "level" not in frame.columns:
            raise ModelInputError(
                f"variable {self.name!r} has levels {shown}; give a 'level' column"
            )
        given = np.asarray(frame["level"], np.float64)
        hits = np.isclose(given[:, None], np.asarray(self.levels, np.float64)[None])
        ok = hits.any(1)
        if not ok.all():
            raise _rows_error(f"level {given[~ok][0]:g} is not one of {shown}", ok)
        return hits.argmax(1)


@dataclass
class Geometry:
    """A field store's geometry as the MLflow model keeps it (see the module docstring)."""

    store: str
    variables: dict[str, VariableGeometry]
    time_kind: str  # datetime, cftime, number or index
    times: list[Any]
    calendar: str = ""
    member_dim: str | None = None
    members: list[Any] = field(default_factory=list)
    endpoint_url: str = ""

    @classmethod
    def of_store(cls, store: FieldStore, url: str, endpoint_url: str = "") -> Geometry:
        """The geometry of ``store`` (its modalities), opened again from ``url``."""
        ds = store.ds
        tdim, mdim = store.layout[store.modalities[0]][:2]
        kind, times, calendar = _times(ds[tdim].values if tdim in ds.coords else None, ds, tdim)
        variables = {}
        for v in store.modalities:
            _, _, ldim, sdims = store.layout[v]
            axes = []
            for i, d in enumerate(sdims):
                known = d in ds.coords
                vals = np.asarray(ds[d].values if known else np.arange(ds.sizes[d]), np.float64)
                if i == 0 and store.flipped[v]:
                    vals = vals[::-1]
                units = str(ds[d].attrs.get("units", "")) if known else ""
                axes.append(Axis(d, COLUMNS.get(d, d), vals.tolist(), units))
            levels = np.asarray(ds[ldim].values if ldim in ds.coords else []).tolist()
            variables[v] = VariableGeometry(
                v,
                axes,
                dict(store.info[v].norm),
                _plain(physical_attrs(ds[v].attrs)),
                ldim,
                (levels or list(range(ds.sizes[ldim]))) if ldim else None,
                str(ds[ldim].attrs.get("units", "")) if ldim in ds.coords else "",
            )
        members = []
        if mdim:
            raw = ds[mdim].values if mdim in ds.coords else np.arange(ds.sizes[mdim])
            members = np.asarray(raw).tolist()
        return cls(url, variables, kind, times, calendar, mdim, members, endpoint_url)

    @property
    def columns(self) -> list[str]:
        """The spatial input columns (``latitude``, ``longitude`` or ``z, y, x``...)."""
        seen: dict[str, None] = {}
        for var in self.variables.values():
            seen.update({a.column: None for a in var.axes})
        return list(seen)

    @property
    def has_levels(self) -> bool:
        """Whether a variable has levels (the input then takes a ``level`` column)."""
        return any(v.levels for v in self.variables.values())

    def describe(self, signals: np.ndarray | None = None) -> str:
        """``"20 steps from A to B"`` of all time steps, or of those of ``signals``."""
        count = max(1, len(self.members))
        steps = np.arange(len(self.times)) if signals is None else np.unique(signals // count)
        if not len(steps):
            return "no time steps"
        first, last = self.times[int(steps[0])], self.times[int(steps[-1])]
        return f"{len(steps)} time steps from {first} to {last}"

    def signals(self, frame: pd.DataFrame) -> np.ndarray:
        """The store signal (time step x member) of each row of ``frame``.

        Raises:
            ModelInputError: no ``time`` column, a time that is not a time step, a missing
                or unknown ``member``.
        """
        steps = self._steps(_column(frame, "time"))
        count = max(1, len(self.members))
        if "member" not in frame.columns:
            if count > 1:
                raise ModelInputError(
                    f"the model has members {self.members} ({self.member_dim}); give a "
                    "'member' column"
                )
            return steps
        if not self.members:
            raise ModelInputError("the model's store has no members; drop the 'member' column")
        given = list(frame["member"])
        index = {_key(m): i for i, m in enumerate(self.members)}
        found = np.asarray([index.get(_key(m), -1) for m in given])
        if (found < 0).any():
            bad = given[int(np.argmin(found))]
            raise _rows_error(f"member {bad!r} is not one of {self.members}", found >= 0)
        return steps * count + found

    def _steps(self, given: pd.Series) -> np.ndarray:
        if self.time_kind == "number" or self.time_kind == "index":
            try:
                v = np.asarray(given, np.float64)
            except (TypeError, ValueError) as err:
                raise ModelInputError(f"column 'time': expected numbers ({err})") from err
            times = np.asarray(self.times, np.float64)
            near = np.abs(v[:, None] - times[None]).argmin(1)
            ok = np.isclose(v, times[near], rtol=1e-9, atol=1e-9)
            shown = v
        else:
            shown = np.asarray(_time_keys(given, self.time_kind), object)
            index = {t: i for i, t in enumerate(self.times)}
            near = np.asarray([index.get(k, -1) for k in shown])
            ok = near >= 0
        if not ok.all():
            raise _rows_error(
                f"time {shown[~ok][0]} is not a time step of the model; it has {self.describe()}",
                ok,
            )
        return near.astype(np.int64)

    def save(self, path: Path) -> None:
        """Write ``geometry.json``."""
        path.write_text(json.dumps(asdict(self), default=str))

    @classmethod
    def load(cls, path: str | Path) -> Geometry:
        """Read ``geometry.json``."""
        doc = json.loads(Path(path).read_text())
        doc["variables"] = {
            k: VariableGeometry(**{**v, "axes": [Axis(**a) for a in v["axes"]]})
            for k, v in doc["variables"].items()
        }
        return cls(**doc)


def _times(values: np.ndarray | None, ds: Any, tdim: str) -> tuple[str, list[Any], str]:
    """``(kind, values as saved, calendar)`` of a store's time axis."""
    if values is None:
        return "index", list(range(ds.sizes[tdim])), ""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        keys = np.datetime_as_string(values.astype("datetime64[s]"), unit="s")
        return "datetime", keys.tolist(), "proleptic_gregorian"
    if values.dtype == object and hasattr(values.flat[0], "calendar"):  # cftime
        return "cftime", [v.isoformat()[:19] for v in values], str(values.flat[0].calendar)
    return "number", values.astype(np.float64).tolist(), ""


def _time_keys(given: pd.Series, kind: str) -> list[str]:
    """Input times as the saved keys (``YYYY-MM-DDTHH:MM:SS``)."""
    if kind == "datetime":
        try:
            stamps = pd.to_datetime(pd.Series(list(given)), format="mixed")
        except (TypeError, ValueError) as err:
            raise ModelInputError(f"column 'time': expected dates or datetimes ({err})") from err
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert(None)
        values = stamps.to_numpy().astype("datetime64[s]")
        return np.datetime_as_string(values, unit="s").tolist()
    keys = []
    for t in given:  # another calendar (cftime): ISO text or objects with isoformat
        text = t.isoformat() if hasattr(t, "isoformat") else str(t).strip()
        text = text.replace(" ", "T")
        text += "T00:00:00"[: max(0, 19 - len(text))] if len(text) == 10 else ""
        keys.append((text + ":00")[:19] if len(text) == 16 else text[:19])
    return keys


def _key(value: Any) -> Any:
    """A member value as a lookup key (``2``, ``2.0`` and ``np.int64(2)`` alike)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise ModelInputError(f"model input lacks column {name!r} (it has {list(frame.columns)})")
    return frame[name]


def _rows_error(what: str, ok: np.ndarray) -> ModelInputError:
    bad = np.flatnonzero(~np.asarray(ok))
    more = f", and {len(bad) - 1} more" if len(bad) > 1 else ""
    return ModelInputError(f"{what} (row {int(bad[0])}{more})")


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe scalar attributes (not the encoding ones such as ``_FillValue``)."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, str | int | float | bool) and not k.startswith("_") and v == v:
            out[k] = v
    return out


__all__ = ["Axis", "Geometry", "ModelInputError", "VariableGeometry"]

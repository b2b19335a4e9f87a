"""CF metadata of a built field store: coordinate attributes, Conventions, history.

Regridding builds new coordinate arrays, which carry no attributes, so tools that find
axes by meaning (cf-xarray, Panoply, CDO, our own reader) would have to guess. The builder
puts the CF attributes back on every coordinate it writes, keeps the input's
``Conventions`` (``CF-1.8`` when it had none) and appends one line to its ``history``, the
way NCO and CDO record what they did to a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import xarray as xr

COORDINATE_ATTRS: dict[str, dict[str, str]] = {
    "latitude": {
        "standard_name": "latitude",
        "long_name": "latitude",
        "units": "degrees_north",
        "axis": "Y",
    },
    "longitude": {
        "standard_name": "longitude",
        "long_name": "longitude",
        "units": "degrees_east",
        "axis": "X",
    },
    "time": {"standard_name": "time", "long_name": "time", "axis": "T"},
    "level": {"long_name": "pressure level", "axis": "Z", "positive": "down"},
    "member": {"standard_name": "realization", "long_name": "ensemble member"},
}
VARIABLE_ATTRS = ("units", "long_name", "standard_name")
# Attributes that describe how the input stored its values (packing, fill, valid range) or
# point at variables the store does not have: they would be wrong on the stored values.
NOT_KEPT = (
    "scale_factor", "add_offset", "_FillValue", "missing_value", "valid_range", "valid_min",
    "valid_max", "actual_range", "coordinates", "bounds", "grid_mapping", "cell_measures",
    "ancillary_variables", "_Unsigned", "dtype", "mia_norm",
)  # fmt: skip


def _safe(value: Any) -> bool:
    """An attribute value netCDF and Zarr both store: text, a number, numbers or texts."""
    if isinstance(value, str | int | float | np.number):
        return True
    if isinstance(value, list | tuple | np.ndarray):
        items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
        return bool(items) and (
            all(isinstance(v, str) for v in items)
            or all(isinstance(v, int | float | np.number) for v in items)
        )
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.number) else value


def variable_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The input variable's attributes that stay true of its values in the store."""
    return {
        k: _plain(v)
        for k, v in attrs.items()
        if k not in NOT_KEPT and not k.startswith("mia_norm") and _safe(v)
    }


def with_cf_metadata(
    ds: xr.Dataset,
    source: Mapping[str, Any],
    command: Sequence[str],
    level_units: str | None = None,
    changes: Sequence[str] = (),
) -> xr.Dataset:
    """``ds`` with CF coordinate attributes, the input's global ones and ``history``.

    Args:
        ds: the regridded dataset (dims named as ``FIELD_DIMS``).
        source: global attributes of the (first) input, kept (title, institution, source,
            references ...) where netCDF can store them.
        command: the builder's command line, recorded in ``history``.
        level_units: units of the ``level`` coordinate in the input (``hPa`` if unknown).
        changes: what the build changed in the data (one line each), added to ``history``.
    """
    out = ds.copy()
    for name, attrs in COORDINATE_ATTRS.items():
        if name in out.coords:
            extra = {"units": level_units or "hPa"} if name == "level" else {}
            # time's units live in its encoding (xarray writes them), never as an attribute;
            # the input's cell bounds are not written, so no coordinate may point at them
            kept = {
                k: v
                for k, v in out[name].attrs.items()
                if k != "bounds" and (k != "units" or name != "time")
            }
            out[name].attrs = {**kept, **attrs, **extra}
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp}: {' '.join(command)}"
    if changes:
        line += " (changes: " + "; ".join(changes) + ")"
    previous = str(source.get("history", "")).strip()
    kept = {k: _plain(v) for k, v in source.items() if _safe(v) and not k.startswith("_")}
    out.attrs = {
        **kept,
        **out.attrs,
        "Conventions": str(source.get("Conventions", "CF-1.8")),
        "history": f"{previous}\n{line}" if previous else line,
    }
    return out

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


def with_cf_metadata(
    ds: xr.Dataset,
    source: Mapping[str, Any],
    command: Sequence[str],
    level_units: str | None = None,
) -> xr.Dataset:
    """``ds`` with CF coordinate attributes, ``Conventions`` and an appended ``history``.

    Args:
        ds: the regridded dataset (dims named as ``FIELD_DIMS``).
        source: global attributes of the (first) input.
        command: the builder's command line, recorded in ``history``.
        level_units: units of the ``level`` coordinate in the input (``hPa`` if unknown).
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
    previous = str(source.get("history", "")).strip()
    out.attrs = {
        **out.attrs,
        "Conventions": str(source.get("Conventions", "CF-1.8")),
        "history": f"{previous}\n{line}" if previous else line,
    }
    return out

"""Decoded files that read like their input: CF attributes, history, time and latitude order.

The decoder builds its dataset from the code store (:mod:`pipelines.codecs.decode`); this
module gives it what the input had (:mod:`pipelines.codecs.source_meta`): every
coordinate's attributes (CF ``units``, ``standard_name``, ``axis``; the builder's
:data:`~pipelines.data.builders.cf.COORDINATE_ATTRS` for code stores written before they
were kept), the global attributes with ``Conventions`` and one more ``history`` line, the
input's time encoding (units and calendar), and its latitude order (north to south when
the input ran that way). Values are in the input's units with its ``standard_name`` and
``long_name``: :func:`~pipelines.data.stores.field_attrs.physical_attrs` undoes the store's
normalisation attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import xarray as xr

from pipelines.data.builders.cf import COORDINATE_ATTRS

FILL_NOTE = "values where the source had none are the network's (decoded with --fill)"


def with_source_cf(
    ds: xr.Dataset, codes: Mapping[str, Any], command: str, filled: bool
) -> xr.Dataset:
    """``ds`` (decoded, physical values) with the input's CF metadata back.

    Args:
        ds: the decoded dataset (store dimension names, latitude ascending).
        codes: the code store's ``mia_codes`` attribute.
        command: what decoded it, for ``history``.
        filled: the gaps of the source hold the network's values (``--fill``).
    """
    source = codes.get("source_attrs", {})
    kept = source.get("coords", {})
    for name in ds.coords:
        attrs = kept.get(str(name)) or COORDINATE_ATTRS.get(str(name), {})
        ds[name].attrs = {k: v for k, v in attrs.items() if not (name == "time" and k == "units")}
    for dim in ("latitude", "lat"):
        if source.get("latitude_descending") and dim in ds.dims:
            ds = ds.isel({dim: slice(None, None, -1)})
    tdim = codes.get("time_dim", "time")
    enc = source.get("time_encoding", {})
    if enc and tdim in ds.coords and ds[tdim].dtype.kind in "MO":
        ds[tdim].encoding.update(enc)
    glob = dict(source.get("global", {}))
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp}: {command}" + (f" ({FILL_NOTE})" if filled else "")
    previous = str(glob.get("history", "")).strip()
    ds.attrs = {
        **glob,
        "Conventions": str(glob.get("Conventions", "CF-1.8")),
        "history": f"{previous}\n{line}" if previous else line,
        "mia_decoded_from": str(codes.get("out", "")),
    }
    return ds


__all__ = ["with_source_cf"]

"""What a code store keeps of its field store, so decoded files read like the input.

Per variable: the grid, dimensions, coordinates, levels, normalisation and attributes
(:func:`variable_info`); for the whole store (:func:`source_attrs`): the global
attributes (title, institution, source, references, Conventions, history), every
coordinate's attributes, the time encoding (units and calendar) and whether the input's
latitudes ran north to south. The decoder puts them back
(:mod:`pipelines.codecs.decoded_cf`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.data.builders.cf import variable_attrs
from pipelines.data.stores.reader import FieldStore

# Store attributes about the build, not about the data: not carried to decoded files.
BUILD_ONLY = ("mia_", "missing_signals")


def variable_info(store: FieldStore) -> dict[str, Any]:
    """Per variable: what decoding needs (grid, dims, coordinates, levels, normalisation)."""
    out = {}
    for v in store.modalities:
        _, _, ldim, sdims = store.layout[v]
        info = store.info[v]
        coords = []
        for d in sdims:
            c = (
                np.asarray(store.ds[d].values, np.float64)
                if d in store.ds.coords
                else np.arange(store.ds.sizes[d], dtype=np.float64)
            )
            coords.append(np.sort(c).tolist() if d in ("lat", "latitude") else c.tolist())
        out[v] = {
            "dims": list(sdims),
            "grid_shape": list(info.grid_shape),
            "coords": coords,
            "extent": info.extent,
            "channels": info.channels,
            "level_dim": ldim,
            "levels": np.asarray(store.ds[ldim].values).tolist() if ldim else None,
            "norm": info.norm,
            "attrs": variable_attrs(store.ds[v].attrs),
        }
    return out


def source_attrs(store: FieldStore) -> dict[str, Any]:
    """Global and coordinate attributes, time encoding and latitude order of the store."""
    ds = store.ds
    glob = {k: v for k, v in variable_attrs(ds.attrs).items() if not k.startswith(BUILD_ONLY)}
    coords = {str(c): variable_attrs(ds[c].attrs) for c in ds.coords}
    tdim = store.layout[store.modalities[0]][0]
    enc = ds[tdim].encoding if tdim in ds.coords else {}
    return {
        "global": glob,
        "coords": coords,
        "time_encoding": {k: str(enc[k]) for k in ("units", "calendar") if k in enc},
        "latitude_descending": bool(ds.attrs.get("mia_input_latitude_descending", 0)),
    }


__all__ = ["source_attrs", "variable_info"]

"""What the era5 builder changes in a user's data, said out loud: longitudes and the list.

A field store keeps the input's variables, grid and longitude convention unless an option
asks otherwise (``--variables``, ``--resolution``, ``--domain``, ``--longitudes``). Every
change that is made, asked for or not (a float64 input stored as float32, latitudes
stored south to north), is one line of :func:`describe_changes`: the builder prints them
and appends them to the store's ``history``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

LONGITUDES = ("input", "0-360", "180W-180E")


def convention(lon: np.ndarray) -> str:
    """``180W-180E`` when any longitude is negative, else ``0-360``."""
    return "180W-180E" if float(np.nanmin(np.asarray(lon, float))) < 0 else "0-360"


def wrap(lon: np.ndarray, conv: str) -> np.ndarray:
    """``lon`` in the convention ``conv`` (``0-360``: [0, 360); ``180W-180E``: [-180, 180))."""
    offset = -180.0 if conv == "180W-180E" else 0.0
    return (np.asarray(lon, float) - offset) % 360.0 + offset


def express(tlon: np.ndarray, periodic: bool, wanted: str, src_lon: np.ndarray) -> np.ndarray:
    """Target longitudes in the output convention, ascending.

    Args:
        tlon: target longitudes (ascending, contiguous, in any frame).
        periodic: the target wraps around the globe (any rotation of it is contiguous).
        wanted: ``--longitudes`` (``input``: the convention of ``src_lon``).
        src_lon: the input's longitudes as it stores them.

    Raises:
        ValueError: an explicit convention in which a regional domain is not contiguous
            (a box across 180 E in ``180W-180E``, across 0 E in ``0-360``).
    """
    conv = convention(src_lon) if wanted == "input" else wanted
    out = wrap(tlon, conv)
    if periodic:
        return np.sort(out)
    if np.all(np.diff(out) > 0):
        return out
    if wanted == "input":  # the input's own box crosses its seam: keep the contiguous frame
        return np.asarray(tlon, float)
    seam = "180 E" if conv == "180W-180E" else "0 E"
    raise ValueError(
        f"--longitudes {wanted}: the domain {tlon[0]:g}..{tlon[-1]:g} E crosses {seam}, so its "
        f"longitudes cannot ascend in {conv}; use --longitudes input or the other convention"
    )


def _span(values: np.ndarray) -> str:
    values = np.asarray(values, float)
    return f"{values[0]:g}..{values[-1]:g}"


def describe_changes(
    inputs: list[xr.Dataset],
    parts: list[xr.Dataset],
    mapping: dict[str, str],
    target_lat: np.ndarray,
    target_lon: np.ndarray,
    moved: list[str],
    method: str,
    flags: dict[str, str],
) -> list[str]:
    """One line per change the build makes to the input's data.

    Args:
        inputs: the standardised inputs (every variable, as opened).
        parts: the selected data (variables, times, levels, members).
        mapping: store name -> input variable name.
        target_lat: the store's latitudes (ascending).
        target_lon: the store's longitudes.
        moved: the variables whose input is not on the target grid (regridded).
        method: the regridding method.
        flags: the options as given (``--variables``, ``--time-slice`` ...), for the lines.
    """
    lines: list[str] = []
    available = list(dict.fromkeys(v for ds in inputs for v in ds.data_vars))
    dropped = [v for v in available if v not in mapping.values()]
    if dropped:
        lines.append(
            f"variables: kept {', '.join(mapping.values())}, left out {', '.join(dropped)} "
            f"(--variables {flags.get('variables', '')})"
        )
    renamed = {s: m for m, s in mapping.items() if s != m}
    if renamed:
        lines.append("variables renamed: " + ", ".join(f"{s} -> {m}" for s, m in renamed.items()))
    first = inputs[0]
    lat, lon = np.asarray(first["latitude"].values), np.asarray(first["longitude"].values)
    if moved and len(moved) < len(mapping):
        lines.append(
            f"grid: {', '.join(moved)} regridded from their input's grid onto the first "
            f"input's {target_lat.size}x{target_lon.size} grid, {method}"
        )
    elif moved:
        lines.append(
            f"grid: regridded {lat.size}x{lon.size} (latitudes {_span(lat)}, longitudes "
            f"{_span(lon)}) -> {target_lat.size}x{target_lon.size} (latitudes "
            f"{_span(target_lat)}, longitudes {_span(target_lon)}), {method}"
        )
    elif not np.allclose(np.sort(lon.astype(float)), np.sort(target_lon)):
        lines.append(
            f"longitudes: {_span(np.sort(lon))} written as {_span(target_lon)} "
            f"(--longitudes {flags.get('longitudes', 'input')})"
        )
    if lat.size > 1 and lat[0] > lat[-1]:
        lines.append(
            "latitudes: stored south to north (the input runs north to south); decoded "
            "files restore the input's order"
        )
    n_in = np.unique(np.concatenate([ds["time"].values for ds in inputs])).size
    n_out = int(sum(p.sizes["time"] for p in parts))
    if n_out != n_in:
        how = " ".join(f"--{k} {flags[k]}" for k in ("time-slice", "time-stride") if flags.get(k))
        lines.append(f"time: kept {n_out} of {n_in} time steps ({how})")
    for dim, flag in (("level", "levels"), ("member", "members")):
        if flags.get(flag) and dim in first.dims:
            lines.append(
                f"{dim}s: kept {flags[flag]} of {np.asarray(first[dim].values).tolist()} (--{flag})"
            )
    wide = [
        s for s in mapping.values() if any(s in ds and ds[s].dtype == np.float64 for ds in inputs)
    ]
    if wide:
        lines.append(f"values: {', '.join(wide)} stored as float32 (the input's are float64)")
    return lines


__all__ = ["LONGITUDES", "convention", "describe_changes", "express", "wrap"]

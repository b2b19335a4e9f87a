"""Write a multimodal signal store (Zarr v3 group); the format is documented in README.

Layout of a signal store group::

    attrs["mia_store"]  = {"kind": "signals", "version": 1, "modalities": [...],
                           "num_signals": N, "split_names": ["train", "val", "test"],
                           "info": {modality: {...see ModalityData...}}, **user attrs}
    <modality>          (N, *grid, C) float32  or  (N, P, C) for point sets
    <modality>__coords  (P, d) or (N, P, d) float32 in [-1, 1]  (point sets only)
    split               (N,) int8   0 train / 1 val / 2 test
    scale               (N,) float32  per-signal scale of the normalised MSE
    <extra>             (N, ...) optional per-signal side arrays (labels, source indices),
                        listed in attrs["mia_store"]["extra_arrays"]; never normalised

Values are written normalised; the per-channel statistics needed to undo it are kept in
``info[m]["norm"]``. Arrays are chunked along the signal axis only, so a chunk holds
whole signals and one read task reads whole chunks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.location import StoreLocation

NORMALISATIONS = ("none", "minmax01", "minmax11", "zscore")
SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ModalityData:
    """One modality to write.

    Attributes:
        values: ``(N, *grid, C)`` for grids, ``(N, P, C)`` for point sets.
        kind: ``grid`` or ``points``.
        extent: physical ``[lo, hi]`` per grid axis (for decoding at other resolutions);
            defaults to ``[-1, 1]``.
        coords: point sets only: ``(P, d)`` shared or ``(N, P, d)`` per-signal, in [-1, 1].
        normalisation: one of ``NORMALISATIONS``; statistics are computed per channel
            on the training split (NaN-aware).
        units: free text kept in the metadata.
    """

    values: np.ndarray
    kind: str = "grid"
    extent: list[list[float]] | None = None
    coords: np.ndarray | None = None
    normalisation: str = "minmax01"
    units: str = ""


def _stats(values: np.ndarray, train: np.ndarray, how: str, name: str) -> dict[str, Any]:
    if how not in NORMALISATIONS:
        raise StoreError(
            f"modality {name!r}: normalisation must be one of {NORMALISATIONS}, got {how!r}"
        )
    ref = values[train] if train.any() else values
    flat = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    with np.errstate(all="ignore"):
        if how == "zscore":
            return {
                "kind": how,
                "mean": np.nanmean(flat, 0).tolist(),
                "std": np.nanstd(flat, 0).tolist(),
            }
        return {"kind": how, "min": np.nanmin(flat, 0).tolist(), "max": np.nanmax(flat, 0).tolist()}


def norm_affine(norm: Mapping[str, Any]) -> tuple[np.ndarray | float, np.ndarray | float]:
    """``(offset, scale)`` with ``normalised = (values - offset) / scale`` per channel.

    A zero spread (a constant channel) counts as 1, so constants map to 0 (``zscore``,
    ``minmax01``) or -1 (``minmax11``) instead of NaN; ``none`` is ``(0, 1)``.
    """
    kind = norm["kind"]
    if kind == "none":
        return 0.0, 1.0
    if kind == "zscore":
        std = np.asarray(norm["std"])
        return np.asarray(norm["mean"]), np.where(std > 0, std, 1.0)
    lo, hi = np.asarray(norm["min"]), np.asarray(norm["max"])
    spread = np.where(hi > lo, hi - lo, 1.0)
    if kind == "minmax01":
        return lo, spread
    return lo + spread / 2.0, spread / 2.0  # minmax11: [lo, hi] -> [-1, 1]


def apply_norm(values: np.ndarray, norm: Mapping[str, Any]) -> np.ndarray:
    """Normalise ``values (..., C)`` with stored statistics."""
    if norm["kind"] == "none":
        return values
    offset, scale = norm_affine(norm)
    return (values - offset) / scale


def invert_norm(values: np.ndarray, norm: Mapping[str, Any]) -> np.ndarray:
    """Undo :func:`apply_norm` (``values (..., C)``)."""
    if norm["kind"] == "none":
        return values
    offset, scale = norm_affine(norm)
    return values * scale + offset


@contextlib.contextmanager
def quiet_consolidation() -> Iterator[None]:
    """Silence zarr's note that consolidated metadata is not in the Zarr v3 spec.

    We write it so that ``xr.open_zarr`` opens our stores without its "no consolidated
    metadata" warning, in one metadata read on object stores; our readers do not need it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        yield


def write_signal_store(
    location: StoreLocation,
    modalities: Mapping[str, ModalityData],
    split: np.ndarray,
    scale: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    chunk_signals: int = 64,
    extra_arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write (overwrite) a signal store.

    Args:
        location: destination.
        modalities: modality name -> data; all with the same number of signals ``N``.
        split: ``(N,)`` ints (0 train, 1 val, 2 test).
        scale: ``(N,)`` per-signal normalised-MSE scale, in units of the stored
            (normalised) values; ones by default.
        attrs: extra metadata (source, builder arguments); must be JSON-serialisable.
        chunk_signals: signals per chunk along the signal axis.
        extra_arrays: optional name -> ``(N, ...)`` side arrays (e.g. integer labels)
            written unchanged at the group root, chunked like the modalities; names
            must not clash with modalities or the reserved arrays.
    """
    if not modalities:
        raise StoreError(f"{location}: refusing to write a store without modalities")
    lengths = {m: int(d.values.shape[0]) for m, d in modalities.items()}
    if len(set(lengths.values())) != 1:
        raise StoreError(f"{location}: modalities have different numbers of signals {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise StoreError(f"{location}: refusing to write an empty store (0 signals)")
    split = np.asarray(split, dtype=np.int8)
    if split.shape != (n,):
        raise StoreError(f"{location}: split has shape {split.shape}, expected ({n},)")
    scale = np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32)
    extra = {k: np.asarray(v) for k, v in (extra_arrays or {}).items()}
    for k, v in extra.items():
        if k in modalities or k in ("split", "scale", "valid") or k.endswith("__coords"):
            raise StoreError(f"{location}: extra array name {k!r} clashes with a store array")
        if v.ndim < 1 or v.shape[0] != n or v.dtype.kind not in "biuf":
            raise StoreError(
                f"{location}: extra array {k!r} needs numeric shape ({n}, ...), "
                f"got {v.dtype} {v.shape}"
            )
    group = zarr.open_group(location.zarr_store("w"), mode="w", zarr_format=3)
    info = {}
    valid = np.ones(n, bool)
    for m, d in modalities.items():
        vals = np.asarray(d.values, dtype=np.float32)
        if d.kind not in ("grid", "points") or vals.ndim < 3:
            raise StoreError(
                f"{location}: modality {m!r} needs values (N, *grid, C) or (N, P, C), "
                f"got {vals.shape}"
            )
        norm = _stats(vals, split == 0, d.normalisation, m)
        vals = apply_norm(vals, norm).astype(np.float32)
        grid = list(vals.shape[1:-1])
        entry: dict[str, Any] = {
            "kind": d.kind,
            "channels": int(vals.shape[-1]),
            "norm": norm,
            "units": d.units,
        }
        if d.kind == "grid":
            entry["grid_shape"] = grid
            entry["extent"] = d.extent or [[-1.0, 1.0]] * len(grid)
        else:
            if d.coords is None:
                raise StoreError(f"{location}: point-set modality {m!r} needs coords")
            c = np.asarray(d.coords, np.float32)
            entry["num_points"], entry["coord_dim"] = int(vals.shape[1]), int(c.shape[-1])
            entry["coords_per_signal"] = c.ndim == 3
            point_dims = [f"{m}_point", f"{m}_coord"]
            group.create_array(
                f"{m}__coords",
                data=c,
                chunks=(min(chunk_signals, n), *c.shape[1:]) if c.ndim == 3 else c.shape,
                dimension_names=["signal", *point_dims] if c.ndim == 3 else point_dims,
            )
        arr = group.create_array(
            m,
            shape=vals.shape,
            dtype="float32",
            chunks=(min(chunk_signals, n), *vals.shape[1:]),
            fill_value=np.nan,
            dimension_names=_value_dims(m, d.kind, vals.ndim),
        )
        if norm["kind"] != "none":
            arr.attrs.update({"units": "1", **({"physical_units": d.units} if d.units else {})})
        elif d.units:
            arr.attrs["units"] = d.units
        arr[...] = vals
        valid &= np.isfinite(vals).reshape(n, -1).any(1)
        info[m] = entry
    # tiny, read whole by every open (each read task): one chunk, one request
    group.create_array("split", data=split, chunks=(n,), dimension_names=["signal"])
    group.create_array("scale", data=scale, chunks=(n,), dimension_names=["signal"])
    group.create_array(
        "valid", data=valid.astype(np.uint8), chunks=(n,), dimension_names=["signal"]
    )
    for k, v in extra.items():
        group.create_array(
            k,
            data=v,
            chunks=(min(chunk_signals, n), *v.shape[1:]),
            dimension_names=["signal", *(f"{k}_dim{i}" for i in range(1, v.ndim))],
        )
    group.attrs["mia_store"] = {
        "kind": "signals",
        "version": 1,
        "modalities": list(modalities),
        "num_signals": n,
        "split_names": list(SPLITS),
        "info": info,
        "missing_signals": int(n - valid.sum()),
        **({"extra_arrays": list(extra)} if extra else {}),
        **dict(attrs or {}),
    }
    with quiet_consolidation():
        zarr.consolidate_metadata(location.zarr_store("w"))


def _value_dims(m: str, kind: str, ndim: int) -> list[str]:
    """``dimension_names`` of a modality's values (xarray opens the store as a Dataset)."""
    if kind == "grid":
        return ["signal", *(f"{m}_axis{i}" for i in range(ndim - 2)), f"{m}_channel"]
    return ["signal", f"{m}_point", f"{m}_channel"]

"""The code store: per-time-step INR codes of a field store, as Zarr v3 aligned with time.

Layout (every array chunked along time with the same chunk length, so one unit of work
writes whole chunks; xarray opens it through ``dimension_names``):

* ``codes (time, code)``: weight deltas from the meta-model or context vectors, in
  ``code_dtype``; ``codes (time, patch, code)`` for a meta-model trained on patches
  (attribute ``patch``: the patch and grid shapes, :mod:`pipelines.codecs.patch_codes`;
  ``patches_per_step`` is ``K``);
* with ``code_bits`` (format ``mia-codes/2``) ``codes`` reads as float32 but is stored
  quantised and entropy coded by the :class:`~pipelines.codecs.entropy.QuantisedCodes`
  codec (its quantiser in the array's metadata) followed by Zarr's ``crc32c`` checksum:
  the chunks' bytes are exactly what decoding reads (:func:`stored_bytes`), and a damaged
  chunk is named when read (:func:`read_codes`);
* ``code_scale (time, segment)`` float32, ``int8`` codes only: one scale per adapted
  tensor (:mod:`pipelines.codecs.quantise`; attribute ``code_scales`` is the count);
  ``(time, patch, segment)`` for patch codes;
* ``mse, psnr (time, variable)`` float32: reconstruction quality measured on the stored
  (possibly float16 or int8) codes at full resolution, in normalised units;
* ``encode_seconds (time,)``: each step's share of its batch's adaptation time;
* ``done (time,)`` uint8: 1 once the time step's codes and metrics are complete. It is
  written after them, so a crash between the two leaves the step pending and a rerun
  encodes it again; readers use only steps with ``done == 1``. Chunk writes are atomic
  (Zarr's local store writes a temporary file and renames; an S3 PUT is atomic), so a
  reader never sees a half-written chunk;
* ``time (time,)``: the field store's time coordinate (datetimes as CF-encoded ns);
* group ``meta``: the meta-model's weights (one array per parameter, float32, or float16
  with ``encode.meta_dtype``: the encoder then fits against the float16-rounded weights,
  so the codes match what is stored), so decoding needs nothing but the code store.

A new store is first created with only the attribute ``mia_codes_creating``; the full
``mia_codes`` attribute replaces it once every array exists, so a store whose creation
stopped (a full disk, a crash) is recognised and recreated by the next run, never
resumed and never mistaken for another program's folder.

The root attribute ``mia_codes`` holds the meta-model reference and hash, its resolved
config (credentials redacted), the encoder settings, the code layout and, per variable,
the grid, dimension names, coordinates and normalisation needed to decode.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec
from zarr.errors import UnknownCodecError

from pipelines.codecs.entropy import QuantisedCodes
from pipelines.codecs.missing_mask import create_masks
from pipelines.codecs.quantise import dequantise
from pipelines.data.stores import StoreError, StoreLocation
from pipelines.data.stores.output import check_output, clear_in_place, output_state

FORMAT = "mia-codes/1"
# Entropy-coded codes need the QuantisedCodes codec: older readers must not try them.
FORMAT_ENTROPY = "mia-codes/2"
FORMATS = (FORMAT, FORMAT_ENTROPY)
# Settings that change what a code means: a rerun with other values must not mix codes.
IDENTITY_KEYS = (
    "meta_sha256", "mode", "code_dim", "code_dtype", "variables", "num_time", "store",
    "code_bits", "quantiser", "entropy_coder", "meta_dtype",
)  # fmt: skip
# What an identity key means when an older store lacks it.
IDENTITY_DEFAULTS = {
    "code_bits": 0, "quantiser": None, "entropy_coder": None, "meta_dtype": "float32",
}  # fmt: skip
# Every member a code store can have: a Zarr group holding only these and no attributes
# is one whose creation stopped before its attributes were written (older versions).
MEMBERS = {"codes", "code_scale", "mse", "psnr", "encode_seconds", "done", "time", "meta"}


def _array(group: zarr.Group, name: str, shape, chunks, dtype, dims, fill=0) -> zarr.Array:
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill,
        dimension_names=dims,
        overwrite=True,
    )


def create_code_store(
    location: StoreLocation,
    attrs: dict[str, Any],
    chunk: int,
    time_values: np.ndarray,
    time_attrs: dict[str, Any],
    meta_state: dict[str, np.ndarray],
    overwrite: bool = False,
) -> zarr.Group:
    """Create the code store, or reopen a compatible one for resuming.

    Args:
        location: destination.
        attrs: the ``mia_codes`` attribute (must hold ``IDENTITY_KEYS`` and ``code_dim``,
            ``variables``, ``num_time``, ``code_dtype``).
        chunk: time steps per chunk.
        time_values: ``(T,)`` numeric time coordinate.
        time_attrs: attributes of the time array (``units``/``calendar`` for datetimes).
        meta_state: meta-model parameters by name.
        overwrite: replace whatever is at ``location`` instead of resuming.

    Raises:
        StoreError: an existing store written with another meta-model or settings, or
            a destination that is not a code store (a folder with other files, a file)
            without ``overwrite``.
    """
    attrs = {**attrs, "format": FORMAT_ENTROPY if attrs.get("quantiser") else FORMAT}
    state = output_state(location)
    if state == "zarr" and _unfinished(location):
        state = "codes"  # created by an older version that stopped before its attributes
    check_output(location, ("codes",), overwrite, state)
    if overwrite:
        clear_in_place(location, state)
    elif state == "codes":
        group = zarr.open_group(location.zarr_store("w"), mode="r+")
        old = dict(group.attrs.get("mia_codes", {}))
        if old:
            diff = [
                k for k in IDENTITY_KEYS
                if old.get(k, IDENTITY_DEFAULTS.get(k)) != attrs.get(k, IDENTITY_DEFAULTS.get(k))
            ]  # fmt: skip
            if diff:
                detail = ", ".join(f"{k}: {old.get(k)!r} -> {attrs.get(k)!r}" for k in diff)
                raise StoreError(
                    f"{location}: an existing code store was written with other settings "
                    f"({detail}); pass --overwrite or choose another output"
                )
            if int(old.get("chunk", -1)) != chunk:
                raise StoreError(
                    f"{location}: existing code store has time chunks of {old.get('chunk')}, "
                    f"not {chunk}"
                )
            return group
    group = zarr.open_group(
        location.zarr_store("w"), mode="w", zarr_format=3, attributes={"mia_codes_creating": FORMAT}
    )
    n_t, dim, n_var = attrs["num_time"], attrs["code_dim"], len(attrs["variables"])
    k = int(attrs.get("patches_per_step", 0))
    lead, lead_dims = ((k,), ["patch"]) if k else ((), [])
    shape, chunks = (n_t, *lead, dim), (chunk, *lead, dim)
    if attrs.get("quantiser"):
        group.create_array(
            "codes", shape=shape, chunks=chunks, dtype="float32", fill_value=0,
            dimension_names=["time", *lead_dims, "code"], overwrite=True,
            serializer=QuantisedCodes(attrs["quantiser"], attrs.get("entropy_coder", "auto")),
            compressors=[Crc32cCodec()],
        )  # fmt: skip
    else:
        _array(group, "codes", shape, chunks, attrs["code_dtype"], ["time", *lead_dims, "code"])
    if n_s := int(attrs.get("code_scales", 0)):
        dims = ["time", *lead_dims, "segment"]
        shape, chunks = (n_t, *lead, n_s), (chunk, *lead, n_s)
        _array(group, "code_scale", shape, chunks, "float32", dims, np.nan)
    for name in ("mse", "psnr"):
        _array(group, name, (n_t, n_var), (chunk, n_var), "float32", ["time", "variable"], np.nan)
    _array(group, "encode_seconds", (n_t,), (chunk,), "float32", ["time"], np.nan)
    _array(group, "done", (n_t,), (chunk,), "uint8", ["time"])
    info = attrs.get("variable_info", {})
    sizes = {v: math.prod(i["grid_shape"]) * int(i["channels"]) for v, i in info.items()}
    create_masks(group, sizes, n_t, chunk)
    t = _array(group, "time", (n_t,), (n_t,), time_values.dtype, ["time"])
    t[...] = time_values
    t.attrs.update(time_attrs)
    meta = group.create_group("meta")
    for name, value in meta_state.items():
        axes = [f"{name.replace('.', '_').replace('/', '_')}_axis{i}" for i in range(value.ndim)]
        dtype = attrs.get("meta_dtype", "float32")
        arr = meta.create_array(
            name, shape=value.shape, dtype=dtype, overwrite=True, dimension_names=axes
        )
        arr[...] = value.astype(dtype)
    group.attrs.put({"mia_codes": {**attrs, "chunk": chunk}})  # drops mia_codes_creating
    return group


def _unfinished(location: StoreLocation) -> bool:
    """A Zarr group without attributes whose members are all code-store members."""
    try:
        group = zarr.open_group(location.zarr_store("r"), mode="r")
        return not dict(group.attrs) and set(group.keys()) <= MEMBERS
    except Exception:  # unreadable: not ours to recreate
        return False


def open_code_store(location: StoreLocation, mode: str = "r") -> zarr.Group:
    """Open an existing code store, checking its format.

    Raises:
        StoreError: unreachable or not a code store (naming the location).
    """
    try:
        group = zarr.open_group(location.zarr_store(mode), mode="r" if mode == "r" else "r+")
        attrs = dict(group.attrs.get("mia_codes", {}))
    except Exception as err:
        raise StoreError(
            f"{location}: cannot open code store: {type(err).__name__}: {err}"
        ) from err
    fmt = attrs.get("format")
    if isinstance(fmt, str) and fmt.startswith("mia-codes/") and fmt not in FORMATS:
        raise StoreError(
            f"{location}: code store format {fmt} was written by a newer mia-inr (this one "
            f"reads {', '.join(FORMATS)}); upgrade mia-inr to read it"
        )
    if fmt not in FORMATS:
        if "mia_codes_creating" in group.attrs:
            raise StoreError(
                f"{location}: this code store's creation never finished (a crash or a full "
                "disk); rerun encode to recreate it"
            )
        raise StoreError(f"{location}: not a code store (no 'mia_codes' attribute of {FORMAT})")
    try:
        group["codes"]
    except UnknownCodecError as err:
        raise StoreError(
            f"{location}: its codes use a codec this mia-inr does not have ({err}; written by "
            "a newer version): upgrade mia-inr to read it"
        ) from err
    return group


def pending_units(done: np.ndarray, chunk: int, start: int, stop: int) -> list[tuple[int, int]]:
    """One unit per code chunk with pending steps in ``[start, stop)``: its first to last.

    A unit never crosses a chunk and a chunk is never split between units, so one actor
    writes each chunk; the encoder skips the done steps inside a unit.
    """
    units = []
    for c0 in range(start - start % chunk, stop, chunk):
        a, b = max(start, c0), min(stop, c0 + chunk)
        pending = np.flatnonzero(~np.asarray(done[a:b], bool))
        if pending.size:
            units.append((a + int(pending[0]), a + int(pending[-1]) + 1))
    return units


def write_unit(
    group: zarr.Group,
    start: int,
    codes: np.ndarray,
    mse: np.ndarray,
    psnr: np.ndarray,
    seconds: np.ndarray,
    scales: np.ndarray | None = None,
) -> None:
    """Write the results of steps ``start .. start + len(codes)`` (``done`` is separate)."""
    stop = start + len(codes)
    group["codes"][start:stop] = codes
    if scales is not None:
        group["code_scale"][start:stop] = scales.astype(np.float32)
    group["mse"][start:stop] = mse.astype(np.float32)
    group["psnr"][start:stop] = psnr.astype(np.float32)
    group["encode_seconds"][start:stop] = seconds.astype(np.float32)


def mark_done(group: zarr.Group, start: int, stop: int) -> None:
    """Publish steps ``[start, stop)`` (after :func:`write_unit`)."""
    group["done"][start:stop] = np.ones(stop - start, np.uint8)


def read_codes(group: zarr.Group, sel: np.ndarray) -> np.ndarray:
    """Float32 codes of the time steps ``sel`` (dequantised where stored as ``int8``).

    ``(n, code)``, or ``(n, K, code)`` for patch codes.
    """
    arr = group["codes"]
    try:
        values = np.asarray(arr.get_orthogonal_selection((sel, *[slice(None)] * (arr.ndim - 1))))
    except Exception as err:
        raise damaged_chunk(group, np.asarray(sel), err) from err
    if "code_scale" not in group:
        return values.astype(np.float32)
    scale = group["code_scale"]
    scales = np.asarray(scale.get_orthogonal_selection((sel, *[slice(None)] * (scale.ndim - 1))))
    sizes = [math.prod(e["shape"]) for e in group.attrs["mia_codes"]["code_layout"]]
    flat = dequantise(
        torch.from_numpy(values.reshape(-1, values.shape[-1])),
        torch.from_numpy(scales.reshape(-1, scales.shape[-1])),
        sizes,
    )
    return flat.numpy().reshape(values.shape)


def damaged_chunk(group: zarr.Group, sel: np.ndarray, err: Exception) -> StoreError:
    """A one-line error naming the first ``codes`` chunk of ``sel`` that does not decode."""
    arr, attrs = group["codes"], dict(group.attrs["mia_codes"])
    chunk = int(arr.chunks[0])
    where = attrs.get("out", "the code store")
    for c in sorted({int(i) // chunk for i in np.atleast_1d(sel)}):
        a, b = c * chunk, min((c + 1) * chunk, arr.shape[0])
        try:
            arr[a:b]
        except Exception as bad:  # this chunk's bytes are damaged
            return StoreError(
                f"{where}: codes chunk {c} (time steps {a}:{b}) is damaged "
                f"({type(bad).__name__}: {bad}); the other chunks are intact: decode other "
                f"steps (--time), or encode steps {a}:{b} again into a new store"
            )
    return StoreError(f"{where}: cannot read codes: {type(err).__name__}: {err}")


def stored_bytes(group: zarr.Group, name: str) -> int:
    """Bytes a member (array or group) of the code store takes in storage, metadata included."""
    member = group[name]
    if isinstance(member, zarr.Array):
        return int(member.nbytes_stored())
    return sum(stored_bytes(member, k) for k in member.keys())


def meta_state(group: zarr.Group) -> dict[str, np.ndarray]:
    """The meta-model parameters stored with the codes (names as in the state dict)."""
    meta = group["meta"]
    return {name: np.asarray(meta[name][...], np.float32) for name in meta.array_keys()}


__all__ = [
    "FORMAT",
    "FORMATS",
    "create_code_store",
    "damaged_chunk",
    "mark_done",
    "meta_state",
    "open_code_store",
    "pending_units",
    "read_codes",
    "stored_bytes",
    "write_unit",
]

"""Decode a code store: reconstruct time steps at the original or any other resolution.

An INR is continuous, so a time step can be evaluated on any grid: ``resolution=None``
uses the field store's own grid and coordinate values; a shape such as ``(64, 128)``
evaluates a regular grid spanning the same physical extent. Values are returned in
physical units (the stored normalisation is undone) with the field store's dimension
names, levels and time coordinate, as an ``xarray.Dataset``; :func:`decode_to` writes it
to Zarr (any fsspec URL) or netCDF (``.nc``). The meta-model weights come from the code
store itself, so no checkpoint is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mia_core.config import config_from_dict
from pipelines.codecs.codestore import meta_state, open_code_store, read_codes
from pipelines.codecs.meta_model import EncodeError, codes_to_params, load_meta_model, predict
from pipelines.data.stores import StoreLocation, make_location
from pipelines.data.stores.field_writer import physical_attrs
from pipelines.data.stores.reader import grid_coords
from pipelines.data.stores.writer import invert_norm, quiet_consolidation

TimeSelection = int | slice | Sequence[int] | None


class Decoder:
    """Reconstructs fields from a code store.

    Args:
        location: the code store.
        device: where the INR is evaluated.
    """

    def __init__(self, location: StoreLocation, device: str = "cpu") -> None:
        self.location = location
        self.group = open_code_store(location)
        self.attrs = dict(self.group.attrs["mia_codes"])
        self.variables: list[str] = list(self.attrs["variables"])
        self.info: dict[str, dict[str, Any]] = self.attrs["variable_info"]
        cfg = config_from_dict(self.attrs["meta_config"], f"{location.display} meta_config")
        dims = {v: (len(self.info[v]["grid_shape"]), self.info[v]["channels"]) for v in self.info}
        state = {k: torch.from_numpy(v) for k, v in meta_state(self.group).items()}
        self.model = load_meta_model(
            self.attrs["meta_reference"],
            dims,
            state={"model": state},
            cfg=cfg,
            sha256=self.attrs["meta_sha256"],
            device=device,
        )
        self.device = torch.device(device)
        self.done = np.asarray(self.group["done"][...]).astype(bool)

    @property
    def num_time(self) -> int:
        """Time steps of the encoded store."""
        return int(self.attrs["num_time"])

    def _indices(self, times: TimeSelection) -> np.ndarray:
        n = self.num_time
        if times is None:
            idx = np.flatnonzero(self.done)
        elif isinstance(times, slice):
            idx = np.arange(n)[times]
        else:
            idx = np.atleast_1d(np.asarray(times, np.int64))
        if idx.size == 0:
            raise EncodeError(f"{self.location}: no time steps selected (or none encoded yet)")
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise EncodeError(f"{self.location}: time indices {bad.tolist()} outside 0:{n}")
        pending = idx[~self.done[idx]]
        if pending.size:
            raise EncodeError(
                f"{self.location}: time steps {pending[:10].tolist()} are not encoded yet "
                "(their done flag is unset; rerun the encoder)"
            )
        return idx

    def _grid(self, v: str, resolution: Sequence[int] | None) -> tuple[tuple[int, ...], list]:
        info = self.info[v]
        if resolution is None:
            return tuple(info["grid_shape"]), [np.asarray(c) for c in info["coords"]]
        shape = tuple(int(r) for r in resolution)
        if len(shape) != len(info["grid_shape"]) or min(shape) < 1:
            raise EncodeError(
                f"resolution {shape} does not fit variable {v!r} with dims {info['dims']}"
            )
        coords = [np.linspace(lo, hi, n) for (lo, hi), n in zip(info["extent"], shape, strict=True)]
        return shape, coords

    def _time_values(self, idx: np.ndarray) -> np.ndarray:
        t = self.group["time"]
        vals = np.asarray(t[...])[idx]
        if "nanoseconds since 1970-01-01" in str(t.attrs.get("units", "")):
            return vals.astype("datetime64[ns]")
        return vals

    @torch.no_grad()
    def decode(
        self,
        times: TimeSelection = None,
        resolution: Sequence[int] | None = None,
        variables: Sequence[str] | None = None,
        batch: int = 16,
    ):
        """Reconstruct the selected time steps as an ``xarray.Dataset``.

        Args:
            times: an index, a slice, a list of indices, or ``None`` for every encoded step.
                In an ensemble store the indices count signals, time major and member
                minor (as the field store and the code store do); the dataset has the
                store's time and member dimensions, NaN for pairs not selected.
            resolution: spatial grid shape (same for every variable), or ``None`` for the
                original grid and coordinates.
            variables: subset of the encoded variables.
            batch: time steps evaluated together.

        Raises:
            EncodeError: unknown variables, steps not encoded yet, a resolution of the
                wrong rank.
        """
        import xarray as xr

        variables = list(variables or self.variables)
        unknown = [v for v in variables if v not in self.variables]
        if unknown:
            raise EncodeError(
                f"{self.location}: unknown variable(s) {unknown}; encoded: {self.variables}"
            )
        idx = self._indices(times)
        learner = self.model.learner
        tdim = self.attrs.get("time_dim", "time")
        mdim = self.attrs.get("member_dim")
        # An ensemble's signals are (time, member) pairs: stacked along a private
        # dimension here, unstacked into the store's two dimensions at the end.
        sdim = "_signal" if mdim else tdim
        data_vars, coords = {}, {tdim: (sdim, self._time_values(idx))}
        if mdim:
            members = np.asarray(self.attrs["members"])
            coords[mdim] = (sdim, members[idx % members.size])
        grids = {v: self._grid(v, resolution) for v in variables}
        outs: dict[str, list[np.ndarray]] = {v: [] for v in variables}
        for a in range(0, idx.size, batch):
            sel = idx[a : a + batch]
            codes = torch.from_numpy(read_codes(self.group, sel))
            params = codes_to_params(learner, codes.to(self.device))
            for v in variables:
                shape, _ = grids[v]
                x = torch.from_numpy(grid_coords(shape)).to(self.device)
                outs[v].append(predict(learner, v, x, params).cpu().numpy())
        for v in variables:
            info, (shape, axes) = self.info[v], grids[v]
            vals = invert_norm(np.concatenate(outs[v]).astype(np.float64), info["norm"])
            vals = vals.reshape(idx.size, *shape, info["channels"]).astype(np.float32)
            dims = [sdim, *info["dims"]]
            if info["level_dim"]:
                vals = np.moveaxis(vals, -1, 1)
                dims.insert(1, info["level_dim"])
                coords[info["level_dim"]] = np.asarray(info["levels"])
            else:
                vals = vals[..., 0]
            for d, c in zip(info["dims"], axes, strict=True):
                coords[d] = c
            data_vars[v] = xr.DataArray(
                vals, dims=dims, attrs=physical_attrs(info.get("attrs", {}))
            )
        ds = xr.Dataset(
            data_vars,
            coords=coords,
            attrs={"source": f"decoded from {self.location.display}", "time_index": idx.tolist()},
        )
        if not mdim:
            return ds
        ds = ds.set_index({sdim: [tdim, mdim]}).unstack(sdim)
        return ds.transpose(tdim, mdim, ...)


def decode_to(
    codes: str,
    out: str,
    times: TimeSelection = None,
    resolution: Sequence[int] | None = None,
    variables: Sequence[str] | None = None,
    endpoint_url: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Decode and write to ``out``: netCDF when it ends in ``.nc``, else Zarr v3.

    Returns:
        The decoded ``xarray.Dataset``.
    """
    ds = Decoder(make_location(codes, storage_options, endpoint_url)).decode(
        times, resolution, variables
    )
    if out.endswith(".nc"):
        ds.to_netcdf(out)
    else:
        dest = make_location(out, storage_options, endpoint_url)
        with quiet_consolidation():  # consolidated: xr.open_zarr opens it without a warning
            ds.to_zarr(dest.zarr_store("w"), mode="w", zarr_format=3, consolidated=True)
    return ds


def parse_times(text: str | None) -> TimeSelection:
    """``"5"`` -> 5, ``"10:20"`` -> slice, ``"1,4,9"`` -> list, empty -> every encoded step."""
    if not text:
        return None
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            return slice(int(a) if a else None, int(b) if b else None)
        if "," in text:
            return [int(t) for t in text.split(",")]
        return int(text)
    except ValueError as err:
        raise EncodeError(f"time must look like 5, 10:20 or 1,4,9, got {text!r}") from err


def parse_resolution(text: str | None) -> tuple[int, ...] | None:
    """``"64x64x64"`` -> ``(64, 64, 64)``; empty -> original grid."""
    if not text:
        return None
    try:
        return tuple(int(r) for r in text.lower().split("x"))
    except ValueError as err:
        raise EncodeError(f"resolution must look like 46x90 or 64x64x64, got {text!r}") from err

"""Decode a code store: reconstruct time steps at the original or any other resolution.

An INR is continuous, so a time step can be evaluated on any grid: ``resolution=None``
uses the field store's own grid and coordinate values; a shape such as ``(64, 128)``
evaluates a regular grid spanning the same physical extent. Values are returned in
physical units (the stored normalisation is undone) with the field store's dimension
names, levels and time coordinate, as an ``xarray.Dataset``; :func:`decode_to` writes it
to Zarr (any fsspec URL) or netCDF (``.nc``). The meta-model weights come from the code
store itself, so no checkpoint is needed.

A code store whose encoding has not finished decodes its done steps with a warning
naming the missing ones (``complete=True`` refuses instead); asking for a step that is
not encoded is an error naming it. Outputs go through
:func:`~pipelines.data.stores.output.replacing`: an existing path that is not a decoded
output is refused unless ``overwrite``, and a local output is swapped in only once
complete.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from xarray.coding.times import decode_cf_datetime

from mia_core.config import config_from_dict
from mia_core.meta.codes import codes_to_params
from pipelines.codecs.codestore import meta_state, open_code_store, read_codes
from pipelines.codecs.decode_args import (
    TimeSelection,
    compact_ranges,
)
from pipelines.codecs.decoded_cf import with_source_cf
from pipelines.codecs.meta_model import EncodeError, load_meta_model, predict
from pipelines.codecs.missing_mask import read_mask, regrid_mask
from pipelines.codecs.patch_codes import PatchGrid, decode_patches, positions_for, shared_frames
from pipelines.data.stores import StoreError, StoreLocation, make_location
from pipelines.data.stores.field_writer import physical_attrs
from pipelines.data.stores.location import redact_url
from pipelines.data.stores.output import replacing
from pipelines.data.stores.reader import grid_coords
from pipelines.data.stores.writer import invert_norm, quiet_consolidation

ZARR_SUFFIXES, NETCDF_SUFFIXES = ("", ".zarr"), (".nc",)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


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
        patch = self.attrs.get("patch")
        self.patches = PatchGrid.from_json(patch) if patch else None

    @property
    def num_time(self) -> int:
        """Time steps of the encoded store."""
        return int(self.attrs["num_time"])

    @property
    def missing(self) -> np.ndarray:
        """Indices of the steps whose codes are not written yet (an unfinished encode)."""
        return np.flatnonzero(~self.done)

    def _indices(self, times: TimeSelection) -> np.ndarray:
        n = self.num_time
        if isinstance(times, str):
            return self._dates(times)
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
                f"{self.location}: time steps {compact_ranges(pending)} are not encoded yet "
                "(their done flag is unset; rerun the encoder)"
            )
        return idx

    def _dates(self, text: str) -> np.ndarray:
        """The steps whose time, written as ISO text, starts with ``text``.

        Raises:
            EncodeError: no step has that date (the message gives the time range).
        """
        values = self._time_values(np.arange(self.num_time))
        iso = [v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values]
        idx = np.flatnonzero([t.startswith(text) for t in iso])
        if idx.size == 0:
            raise EncodeError(
                f"{self.location}: no time step at {text}; the codes cover {iso[0][:19]} .. "
                f"{iso[-1][:19]} ({self.num_time} steps)"
            )
        return self._indices(idx)

    def check_complete(self, complete: bool, log: Callable[[str], None] = _stderr) -> None:
        """Say which steps an unfinished encode has not written; refuse with ``complete``.

        Raises:
            EncodeError: ``complete`` and some steps are missing.
        """
        missing = self.missing
        if not missing.size:
            return
        what = (
            f"{self.location}: {missing.size} of {self.num_time} time steps are not encoded "
            f"yet ({compact_ranges(missing)})"
        )
        if complete:
            raise EncodeError(f"{what}; rerun encode to finish them, or drop --complete")
        log(f"warning: {what}; decoding the {self.num_time - missing.size} done steps only")

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

    def _decode_patches(
        self, idx: np.ndarray, resolution: Sequence[int] | None, variables: list[str]
    ) -> dict[str, list[np.ndarray]]:
        """Per variable, ``(1, points, C)`` fields of each step, stitched from its patches."""
        grid = self.patches
        sizes = [None] * len(grid.grid) if resolution is None else list(resolution)
        coords, target, shape = grid.placement(
            [positions_for(g, s) for g, s in zip(grid.grid, sizes, strict=True)]
        )
        learner, n_out, frames = self.model.learner, int(np.prod(shape)), shared_frames(coords)
        outs: dict[str, list[np.ndarray]] = {v: [] for v in variables}
        for t in idx:
            codes = torch.from_numpy(read_codes(self.group, np.asarray([t]))[0])
            params = codes_to_params(learner, codes.to(self.device))
            for v in variables:
                field = decode_patches(
                    lambda x, p, v=v: learner.predict(v, x, p),
                    params,
                    frames,
                    target,
                    n_out,
                    int(self.info[v]["channels"]),
                    self.device,
                )
                outs[v].append(field[None])
        return outs

    def _time_values(self, idx: np.ndarray) -> np.ndarray:
        t = self.group["time"]
        vals = np.asarray(t[...])[idx]
        units = str(t.attrs.get("units", ""))
        if "nanoseconds since 1970-01-01" in units:
            return vals.astype("datetime64[ns]")
        if " since " in units:  # other calendars (cftime): the dates they encode
            return decode_cf_datetime(vals, units, t.attrs.get("calendar"), use_cftime=True)
        return vals

    @torch.no_grad()
    def predict_steps(
        self, idx: np.ndarray, shapes: dict[str, tuple[int, ...]], batch: int = 16
    ) -> dict[str, list[np.ndarray]]:
        """Normalised predictions of whole-field codes of steps ``idx`` on grids of ``shapes``.

        Returns variable -> list of ``(b, P, C)`` blocks (``batch`` steps each, in order).
        """
        outs: dict[str, list[np.ndarray]] = {v: [] for v in shapes}
        learner = self.model.learner
        for a in range(0, idx.size, batch):
            codes = torch.from_numpy(read_codes(self.group, idx[a : a + batch]))
            params = codes_to_params(learner, codes.to(self.device))
            for v, shape in shapes.items():
                x = torch.from_numpy(grid_coords(shape)).to(self.device)
                outs[v].append(predict(learner, v, x, params).cpu().numpy())
        return outs

    @torch.no_grad()
    def decode(
        self,
        times: TimeSelection = None,
        resolution: Sequence[int] | None = None,
        variables: Sequence[str] | None = None,
        batch: int = 16,
        fill: bool = False,
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
            fill: keep the network's values where the source had none (else NaN there,
                the source's mask regridded by nearest neighbour at other resolutions).

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
        if self.patches is not None:
            outs = self._decode_patches(idx, resolution, variables)
        else:
            outs = self.predict_steps(idx, {v: grids[v][0] for v in variables}, batch)
        for v in variables:
            info, (shape, axes) = self.info[v], grids[v]
            vals = invert_norm(np.concatenate(outs[v]).astype(np.float64), info["norm"])
            vals = vals.reshape(idx.size, *shape, info["channels"]).astype(np.float32)
            if not fill:
                vals = self._masked(v, idx, vals, axes)
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
        ds = xr.Dataset(data_vars, coords=coords)
        if mdim:
            ds = ds.set_index({sdim: [tdim, mdim]}).unstack(sdim).transpose(tdim, mdim, ...)
        command = f"mia-inr decode {self.location.display}" + (
            "" if resolution is None else f" --resolution {'x'.join(map(str, resolution))}"
        )
        ds = with_source_cf(ds, self.attrs, command, fill)
        ds.attrs["mia_time_index"] = idx.tolist()
        return ds

    def _masked(self, v: str, idx: np.ndarray, vals: np.ndarray, axes: list) -> np.ndarray:
        """``vals`` with NaN where the source of ``v`` had no value (if the store kept it)."""
        info = self.info[v]
        shape = tuple(info["grid_shape"])
        mask = read_mask(self.group, v, idx, int(np.prod(shape)) * int(info["channels"]))
        if mask is None or not mask.any():
            return vals
        mask = mask.reshape(idx.size, *shape, info["channels"])
        if vals.shape != mask.shape:  # another resolution: nearest source point
            mask = regrid_mask(mask, [np.asarray(c) for c in info["coords"]], axes)
        return np.where(mask, np.float32(np.nan), vals)


def decode_to(
    codes: str,
    out: str,
    times: TimeSelection = None,
    resolution: Sequence[int] | None = None,
    variables: Sequence[str] | None = None,
    endpoint_url: str | None = None,
    storage_options: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    complete: bool = False,
    fill: bool = False,
    log: Callable[[str], None] = _stderr,
) -> Any:
    """Decode and write to ``out``: netCDF for ``.nc``, Zarr v3 for ``.zarr`` or no suffix.

    Args:
        codes: the code store URL.
        out: output path (netCDF: local only) or URL.
        times: the steps to decode (see :meth:`Decoder.decode`); ``None``: every done one.
        resolution: grid shape, or ``None`` for the original grid.
        variables: a subset of the encoded variables (``None``: all).
        endpoint_url: S3-compatible endpoint of both stores.
        storage_options: fsspec options of both stores.
        overwrite: replace whatever is at ``out`` (else only a decoded output).
        complete: refuse a code store with steps not encoded yet (else a warning).
        fill: the network's values where the source had none (else NaN there).
        log: where the warning goes (stderr).

    Returns:
        The decoded ``xarray.Dataset``.

    Raises:
        StoreError: an unknown suffix, a remote netCDF path, an output of another kind.
        EncodeError: missing steps with ``complete``; see :meth:`Decoder.decode`.
        DiskFull: the disk filled up (the partial output is removed).
    """
    netcdf = output_is_netcdf(out)
    dest = make_location(out, storage_options, endpoint_url)
    if netcdf and dest.is_remote:
        raise StoreError(f"{dest}: netCDF output must be a local path; use .zarr for a URL")
    decoder = Decoder(make_location(codes, storage_options, endpoint_url))
    if times is None:
        decoder.check_complete(complete, log)
    kind = "netcdf" if netcdf else "decoded"
    with replacing(dest, (kind,), overwrite, f"decoded {'netCDF' if netcdf else 'Zarr'}") as tmp:
        ds = decoder.decode(times, resolution, variables, fill=fill)
        ds.attrs["mia_decoded"] = 1
        if netcdf:  # CF: coordinates have no missing values, so no _FillValue
            keep = ("units", "calendar")  # the input's time encoding (decoded_cf)
            enc = {
                c: {k: ds[c].encoding[k] for k in keep if k in ds[c].encoding} for c in ds.coords
            }
            ds.to_netcdf(tmp.url, encoding={c: {**e, "_FillValue": None} for c, e in enc.items()})
        else:
            with quiet_consolidation():  # consolidated: xr.open_zarr opens it without a warning
                ds.to_zarr(tmp.zarr_store("w"), mode="w", zarr_format=3, consolidated=True)
    return ds


def output_is_netcdf(out: str) -> bool:
    """True for ``*.nc``, False for ``*.zarr`` or no suffix.

    Raises:
        StoreError: any other suffix (``x.txt`` would otherwise become a Zarr folder).
    """
    suffix = PurePosixPath(out.split("?", 1)[0].rstrip("/")).suffix.lower()
    if suffix in NETCDF_SUFFIXES + ZARR_SUFFIXES:
        return suffix in NETCDF_SUFFIXES
    raise StoreError(
        f"{redact_url(out)}: unknown output suffix {suffix!r}; use .nc (netCDF), "
        ".zarr or no suffix (Zarr)"
    )

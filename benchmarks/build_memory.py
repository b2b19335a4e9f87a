"""Peak memory of building a field store from an ERA5-layout Zarr larger than the budget.

Writes a synthetic ERA5-layout input (hourly, global 1-degree ``t2m``: a latitude profile,
a travelling daily cycle and noise; float32, one Zarr chunk per day) chunk by chunk, then
runs ``mia-inr build era5`` on it in a child process at the same 181 x 360 grid and reads
the child's peak resident set size. The builder streams time blocks
(``pipelines/data/builders/era5_grid.py``, ``pipelines/data/stores/field_stream.py``), so
the peak should not grow with the number of days.

    python benchmarks/build_memory.py                       # 2 years hourly (17,520 steps)
    python benchmarks/build_memory.py --days 30 --json out.json
    python benchmarks/build_memory.py --json benchmarks/results/build_memory.json --readme

``--readme`` only renders the block ``build_memory`` of ``docs/stores.md`` from the ``--json``
file.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pipelines.reports.readme_blocks import write_block

LAT = np.linspace(90, -90, 181)
LON = np.arange(360.0)
TARGET_MB = 2048.0
PAGE = "docs/stores.md"  # the page with the generated block (--readme)


def write_input(path: Path, days: int, seed: int = 0) -> int:
    """Write ``days`` of hourly global 1-degree ``t2m`` as an ERA5-layout Zarr; bytes of data."""
    rng = np.random.default_rng(seed)
    profile = 250.0 + 30.0 * np.cos(np.deg2rad(LAT))[:, None]
    times = pd.date_range("2000-01-01", periods=24 * days, freq="h")
    for d in range(days):
        hours = np.arange(24 * d, 24 * (d + 1))
        phase = 2 * np.pi * (hours[:, None, None] / 24.0 + LON[None, None, :] / 360.0)
        t2m = profile + 5.0 * np.sin(phase) + rng.normal(0.0, 1.0, (24, LAT.size, LON.size))
        block = xr.Dataset(
            {"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K"})},
            coords={"time": times[hours], "latitude": LAT, "longitude": LON},
        )
        if d == 0:
            enc = {"t2m": {"chunks": (24, LAT.size, LON.size)}}
            block.to_zarr(path, mode="w", zarr_format=3, encoding=enc, consolidated=False)
        else:
            block.to_zarr(path, append_dim="time", zarr_format=3, consolidated=False)
    return 24 * days * LAT.size * LON.size * 4


def readme_block(result: dict, source: str) -> str:
    """The generated table (``docs/stores.md``) of a results JSON written by this script."""
    verdict = "PASS" if result["pass"] else "MISS"
    return (
        "| time steps | grid | input (GiB, float32) | build (s) | peak RSS (MB) | target |\n"
        "|---|---|---|---|---|---|\n"
        f"| {result['time_steps']:,} | {result['grid'][0]} x {result['grid'][1]} | "
        f"{result['input_gib']} | {result['build_seconds']} | {result['peak_rss_mb']} | "
        f"< {result['target_mb']:.0f} MB: {verdict} |\n\n"
        f"Generated from `{source}` by `python benchmarks/build_memory.py --readme`."
    )


def main(argv: list[str] | None = None) -> int:
    """Build the input, run the builder in a child process, print (and save) the peak."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=730, help="days of hourly data (730: 2 years)")
    p.add_argument("--workdir", default=None, help="where to put input and output (tmp)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--readme", action="store_true", help=f"render {PAGE}'s block from --json")
    args = p.parse_args(argv)
    if args.readme and not args.json:
        p.error("--readme needs --json (the results file the block is rendered from)")
    if args.readme:  # render only: the numbers come from an earlier run's JSON
        block = readme_block(json.loads(Path(args.json).read_text()), args.json)
        print(f"updated {write_block(PAGE, 'build_memory', block)} from {args.json}")
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="build_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    src, out = work / "era5_input.zarr", work / "store.zarr"
    t0 = time.perf_counter()
    data_bytes = write_input(src, args.days)
    written = time.perf_counter() - t0
    print(f"input: {args.days} days hourly, 181 x 360, {data_bytes / 2**30:.2f} GiB float32 "
          f"({written:.0f} s)", flush=True)  # fmt: skip
    cmd = [sys.executable, "-m", "pipelines.data.builders", "era5", "--input", str(src)]
    cmd += ["--variables", "t2m", "--resolution", "181x360", "--chunk", "24", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    result = {
        "time_steps": 24 * args.days,
        "grid": [181, 360],
        "input_gib": round(data_bytes / 2**30, 3),
        "build_seconds": round(seconds, 1),
        "peak_rss_mb": round(peak, 1),
        "target_mb": TARGET_MB,
        "pass": peak < TARGET_MB,
    }
    verdict = "PASS" if result["pass"] else "MISS"
    print(f"build: {seconds:.0f} s, peak RSS {peak:.0f} MB (target < {TARGET_MB:.0f} MB): "
          f"{verdict}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

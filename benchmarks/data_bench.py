"""Data-pipeline throughput against the engine's meta-training rate (a script, not a test).

Run ``python benchmarks/data_bench.py`` (a few minutes on 2 cores) or add ``--quick`` for a
smoke run. See ``benchmarks/README.md``.

In one run it measures, in signals/s and episodes/s (``B`` signals per episode):

* the engine: ``MetaLearner`` forward + backward (Composers 5x128 rank 8, CAVIA, K=3,
  B=32, M=4, 200 points, episodes from the synthetic store), built from
  ``configs/experiments/synthetic_cavia.yaml``;
* the data path, for a synthetic signal store (1000 signals x 4 modalities x 200 points)
  and a field store (2000 time steps, 3 variables on a 46 x 90 grid), each local and on a
  moto S3 server started here: Ray Data (``read_store`` + ``dataset_episodes``) and one
  process reading the store directly with Zarr (``store_episodes``).

The data rate should be at least ``--target`` (default 5) times the engine rate. The
stores are in :mod:`benchmarks._data_stores`, the rates in :mod:`benchmarks._data_rates`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import ray
import ray.data
import torch

from benchmarks._data_rates import data_rate, engine_rate
from benchmarks._data_stores import store_locations, write_stores
from benchmarks._timing import load_note
from mia_core.config import load_config
from pipelines.cluster.local_run import moto_s3
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.stores import open_store

CONFIG = str(ROOT / "configs/experiments/synthetic_cavia.yaml")
BUCKET = "mia-bench"
CREDENTIALS = ("bench-key-id", "bench-secret-value")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small stores, one epoch")
    p.add_argument("--batch", type=int, default=32, help="signals per episode")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per data path")
    p.add_argument("--iters", type=int, default=5, help="timed engine iterations (median)")
    p.add_argument("--target", type=float, default=5.0, help="data rate / engine rate")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--no-s3", action="store_true", help="skip the moto S3 server")
    p.add_argument("--blocks", type=int, default=8, help="override_num_blocks of the ray-<n> rows")
    p.add_argument(
        "--wait-idle", type=float, default=60.0, help="max s to wait for a quiet machine"
    )
    return p.parse_args(argv)


def start_ray(work: Path) -> None:
    """A local Ray instance on 2 CPUs, quiet, with its files under ``work``."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=512 * 1024**2,
        _temp_dir=str(work / "ray"),
        log_to_driver=False,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def measure(args: argparse.Namespace, work: Path, s3: dict[str, str] | None) -> dict:
    """Write the stores under ``work`` (and on S3), then time the engine and every path."""
    n_sig, n_time = (200, 256) if args.quick else (1000, 2000)
    epochs = 1 if args.quick else args.epochs
    results: dict = {"batch": args.batch, "target": args.target, "rows": []}
    t0 = time.perf_counter()
    locations = store_locations(work, s3, BUCKET)
    write_stores(locations, CONFIG, n_sig, n_time)
    print(f"wrote stores in {time.perf_counter() - t0:.1f} s", flush=True)

    synthetic = open_store(locations["local"]["synthetic"])
    eng = results["engine"] = engine_rate(
        synthetic, CONFIG, args.batch, args.iters, 2, args.wait_idle
    )
    print(
        f"engine: {eng['ms_per_iter']:.0f} ms/iter, {eng['signals_per_s']:.1f} signals/s "
        f"({eng['note']})",
        flush=True,
    )
    start_ray(work)
    lo, hi = load_config(CONFIG).data.support_ratio
    for where, locs in locations.items():
        for name, loc in locs.items():
            spec = EpisodeSpec({m: (lo, hi) for m in open_store(loc).modalities}, seed=0)
            for path in ("ray", f"ray-{args.blocks}", "direct"):
                r = data_rate(loc, spec, args.batch, epochs, path, args.wait_idle)
                r.update(store=name, where=where, path=path)
                r["ratio"] = r["signals_per_s"] / eng["signals_per_s"]
                results["rows"].append(r)
                print(
                    f"  {name:9s} {where:5s} {path:6s} {r['episodes_per_s']:8.1f} ep/s "
                    f"({r['note']})",
                    flush=True,
                )
    return results


def report(results: dict) -> bool:
    """Print the engine line and the table; whether every row reaches the target."""
    eng, batch, target = results["engine"], results["batch"], results["target"]
    print()
    print(
        f"engine (MetaLearner fwd+bwd, composers 5x128 r8, cavia K=3, B={batch}, M=4, "
        f"200 pts): {eng['signals_per_s']:.1f} signals/s = "
        f"{eng['signals_per_s'] / batch:.2f} episodes/s, {eng['ms_per_iter']:.0f} ms/iter "
        f"median of {eng['ms_samples']} ({eng['threads']} threads; {eng['note']})"
    )
    head = (
        f"{'store':10s} {'where':6s} {'path':7s} {'episodes/s':>11s} {'signals/s':>10s} "
        f"{'x engine':>9s}  target >= {target:g}x  (cores used by other processes)"
    )
    print(head)
    print("-" * len(head))
    ok = True
    for r in results["rows"]:
        hit = r["ratio"] >= target
        ok &= hit
        print(
            f"{r['store']:10s} {r['where']:6s} {r['path']:7s} {r['episodes_per_s']:11.1f} "
            f"{r['signals_per_s']:10.0f} {r['ratio']:9.1f}  {'PASS' if hit else 'MISS'}"
            f"  ({r['note']})"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Build the stores, measure, print the table; exit 1 if a data rate misses the target."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="mia-data-bench-"))
    try:
        print(f"stores in {work}; {load_note()}", flush=True)
        with contextlib.ExitStack() as stack:
            s3 = (
                None
                if args.no_s3
                else stack.enter_context(moto_s3(BUCKET, credentials=CREDENTIALS))
            )
            results = measure(args, work, s3)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    ok = report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak memory of one engine meta-iteration: second order, first order, context pruning.

Each variant runs in a fresh process (``python benchmarks/engine_memory.py --variant V``
prints one ``MEM {json}`` line), so one variant's allocations cannot lower another's
peak. The kernel's RSS high-water mark is reset right before the iteration, after a tiny
warm-up run (thread pool, kernels). ``benchmarks/engine_bench.py`` runs every variant via
:func:`run_variants`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._memory import maybe_reexec_with_tcmalloc  # noqa: E402

if __name__ == "__main__":
    maybe_reexec_with_tcmalloc(quiet=True)

# ruff: noqa: E402
import argparse
import json
import os
import subprocess
import time

import torch

from benchmarks._engine_workload import engine_iteration, make_episode, make_learner
from benchmarks._memory import current_rss_mb, peak_rss_mb, reset_peak_rss
from mia_core.runtime import set_matmul_precision

VARIANTS = {
    "second_order": {"first_order": False, "keep_ratio": None},
    "first_order": {"first_order": True, "keep_ratio": None},
    "pruning": {"first_order": False, "keep_ratio": 0.25},
}
# Options shared by the variant processes and engine_bench.py (name, type, default).
OPTIONS = (
    ("precision", str, "medium"),
    ("threads", int, 2),
    ("steps", int, 3),
    ("mem_batch", int, 16),
    ("mem_modalities", int, 4),
    ("mem_points", int, 4096),
)


def measure(args: argparse.Namespace) -> dict:
    """In this (fresh) process: peak RSS increase of one meta-iteration of ``args.variant``."""
    torch.set_num_threads(args.threads)
    set_matmul_precision(args.precision)
    spec = VARIANTS[args.variant]
    tiny = make_learner(args.mem_modalities, steps=args.steps, **spec)
    engine_iteration(tiny, make_episode(2, args.mem_modalities, 64))
    learner = make_learner(args.mem_modalities, steps=args.steps, **spec)
    ep = make_episode(args.mem_batch, args.mem_modalities, args.mem_points)
    del tiny
    reset = reset_peak_rss()
    base = current_rss_mb()
    t0 = time.perf_counter()
    loss = engine_iteration(learner, ep)
    dt = time.perf_counter() - t0
    peak = peak_rss_mb()
    return {
        "variant": args.variant,
        "base_mb": base,
        "peak_mb": peak,
        "delta_mb": peak - base,
        "seconds": dt,
        "loss": loss.item(),
        "hwm_reset": reset,
    }


def run_variants(args: argparse.Namespace) -> dict[str, dict]:
    """Run every variant in its own subprocess with the ``OPTIONS`` of ``args``.

    Raises:
        RuntimeError: a variant failed or printed no ``MEM`` line (its output attached).
    """
    flags = [x for name, _, _ in OPTIONS for x in (_flag(name), str(getattr(args, name)))]
    res = {}
    for v in VARIANTS:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", v, *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEM ")]
        if proc.returncode or not line:
            raise RuntimeError(f"memory variant {v} failed:\n{proc.stdout}\n{proc.stderr}")
        res[v] = json.loads(line[-1][4:])
    return res


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(ap: argparse.ArgumentParser) -> None:
    """Add the ``OPTIONS`` (``--precision``, ``--threads``, ``--steps``, ``--mem-*``)."""
    for name, tp, default in OPTIONS:
        ap.add_argument(_flag(name), type=tp, default=default)


def main(argv: list[str] | None = None) -> dict:
    """Measure one variant and print it as ``MEM {json}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=tuple(VARIANTS), required=True)
    add_options(ap)
    rep = measure(ap.parse_args(argv))
    print("MEM " + json.dumps(rep))
    return rep


if __name__ == "__main__":
    main()

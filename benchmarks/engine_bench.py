"""Speed, FLOP efficiency and memory of the meta-learning engine (a script, not a test).

Run ``python benchmarks/engine_bench.py`` (full size, a few minutes on 2 cores) or add
``--quick`` for a smoke run in seconds. See ``benchmarks/README.md``; the workload is in
:mod:`benchmarks._engine_workload`, the memory variants in :mod:`benchmarks.engine_memory`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._memory import maybe_reexec_with_tcmalloc, tcmalloc_loaded  # noqa: E402

if __name__ == "__main__":
    TCMALLOC_STATUS = maybe_reexec_with_tcmalloc()
else:  # imported (e.g. by a test): report only
    TCMALLOC_STATUS = "tcmalloc: " + ("preloaded" if tcmalloc_loaded() else "NOT preloaded")

# ruff: noqa: E402
import argparse
import json
import platform

import torch

from benchmarks._engine_workload import (
    check_same_math,
    count_flops,
    engine_iteration,
    loop_iteration,
    make_episode,
    make_learner,
    matmul_runs,
)
from benchmarks._timing import Timing, paired_time
from benchmarks.engine_memory import run_variants
from mia_core.data.episode import Episode
from mia_core.meta.learner import MetaLearner
from mia_core.runtime import set_matmul_precision

# metric -> (comparison, threshold, format)
TARGETS = {
    "f64_grad_max_rel_diff": ("<=", 1e-9, "{:.1e}"),
    "speedup_vs_loop": (">=", 4.0, "{:.2f}x"),
    "matmul_efficiency": (">=", 0.50, "{:.1%}"),
    "sft_overhead": ("<=", 1.4, "{:.2f}x"),
    "mem_first_order_ratio": ("<=", 0.5, "{:.2f}"),
    "mem_pruning_ratio": ("<=", 0.5, "{:.2f}"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=("highest", "high", "medium"), default="medium")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--loop-iters", type=int, default=3, help="timed iterations of engine + loop pairs"
    )
    ap.add_argument("--batch", type=int, default=64, help="signals B")
    ap.add_argument("--modalities", type=int, default=4, help="modalities M (<= 4)")
    ap.add_argument("--points", type=int, default=200, help="points per signal")
    ap.add_argument("--steps", type=int, default=3, help="inner steps K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mem-batch", type=int, default=16)
    ap.add_argument("--mem-modalities", type=int, default=4)
    ap.add_argument("--mem-points", type=int, default=4096)
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="before each timed section, wait up to this many seconds for the "
        "machine to be idle (0: don't wait)",
    )
    ap.add_argument(
        "--retries", type=int, default=2, help="re-time a contended section up to this often"
    )
    ap.add_argument("--check-batch", type=int, default=4, help="signals in the float64 check")
    ap.add_argument("--skip-loop", action="store_true", help="skip the per-signal reference")
    ap.add_argument("--skip-mem", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.points, args.iters, args.warmup, args.loop_iters = 4, 32, 2, 1, 2
        args.mem_batch, args.mem_points, args.wait_idle = 2, 256, 0.0
    return args


def verdict(name: str, value: float) -> str:
    """PASS/MISS of a value against its target."""
    op, thr, _ = TARGETS[name]
    ok = value >= thr if op == ">=" else value <= thr
    return "PASS" if ok else "MISS"


def timed(args: argparse.Namespace, fns: dict, iters: int | None = None) -> dict:
    """:func:`~benchmarks._timing.paired_time` with the command line's timing options."""
    n = args.iters if iters is None else iters
    return paired_time(fns, args.warmup, n, args.wait_idle, args.retries)


def record(rep: dict, key: str, label: str, t: Timing, batch: int) -> None:
    """Print ms/iter and signals/s of ``t`` after ``label``; keep its numbers in ``rep``.

    Stores ``<key>_s`` (median seconds), ``<key>_samples_s`` and ``<key>_foreign_cores``.
    """
    print(
        f"{label} {t.median * 1e3:8.1f} ms/iter {batch / t.median:8.1f} signals/s  ({t.describe()})"
    )
    rep.update(
        {
            f"{key}_s": t.median,
            f"{key}_samples_s": t.samples,
            f"{key}_foreign_cores": t.foreign_mean,
        }
    )


def section_check(args: argparse.Namespace, learner: MetaLearner, ep: Episode, rep: dict) -> None:
    """1. Correctness: the engine against the per-signal loop (same math)."""
    c = rep["check"] = check_same_math(learner, ep, args.check_batch)
    rep["f64_grad_max_rel_diff"] = c["f64_grad_max_rel_diff"]
    print(
        f"\n[check] float64, first {c['f64_batch']} signals: loss rel diff "
        f"{c['f64_loss_rel_diff']:.1e}, meta-gradients max rel diff "
        f"{c['f64_grad_max_rel_diff']:.1e} over {c['tensors']} tensors (same math: ~1e-12)"
    )
    print(
        f"[check] float32, full batch: outer loss engine {c['loss_engine']:.6g} vs loop "
        f"{c['loss_loop']:.6g} (rel diff {c['loss_rel_diff']:.1e}); meta-gradients max rel "
        f"diff {c['grad_max_rel_diff']:.1e}"
    )
    print(
        "        (float32 rounding can flip a ReLU whose pre-activation is ~1e-7 from 0; "
        "the inner gradient then changes by one point's share, and the second-order "
        "meta-gradients of any two float32 evaluation orders can differ by up to ~1e-3)"
    )


def section_speed(args: argparse.Namespace, learner: MetaLearner, ep: Episode, rep: dict) -> None:
    """2. Speed: the engine and the per-signal loop, interleaved."""
    b = args.batch
    fns = {"engine": lambda: engine_iteration(learner, ep)}
    if not args.skip_loop:
        fns["loop"] = lambda: loop_iteration(learner, ep)
    t = timed(args, fns, args.iters if args.skip_loop else args.loop_iters)
    t_eng = t["engine"]
    record(rep, "engine", "\n[speed] engine (CAVIA): ", t_eng, b)
    if args.skip_loop:
        return
    t_loop = t["loop"]
    speedup = t_loop.median / t_eng.median
    if t_loop.contended or t_eng.contended:
        rep["contended"].append("speedup_vs_loop")
    record(rep, "loop", "[speed] per-signal loop:", t_loop, b)
    print(
        f"[speed] engine / loop throughput ratio: {speedup:.2f}x (target >= 4); "
        f"interleaved, warmup {args.warmup}, median of {args.loop_iters}"
    )
    rep["speedup_vs_loop"] = speedup


def section_flops(args: argparse.Namespace, learner: MetaLearner, ep: Episode, rep: dict) -> None:
    """3. FLOP efficiency: the engine interleaved with the matmul workloads."""
    flops = count_flops(lambda: engine_iteration(learner, ep))
    mms = matmul_runs(args.quick)
    t = timed(
        args, {"engine": lambda: engine_iteration(learner, ep)} | {k: v[0] for k, v in mms.items()}
    )
    peaks = {
        k: {"gflops": mms[k][1] / t[k].median / 1e9, "foreign_cores": t[k].foreign_mean}
        for k in mms
    }
    best = max(v["gflops"] for v in peaks.values())
    t_eng = t["engine"]
    gflops = flops / t_eng.median / 1e9
    eff = gflops / best
    if any(x.contended for x in t.values()):
        rep["contended"].append("matmul_efficiency")
    print(
        f"\n[flops] engine meta-iteration: {flops / 1e9:.2f} GFLOP (FlopCounterMode: "
        f"matmul-like ops only); engine interleaved with the matmuls: "
        f"{t_eng.median * 1e3:.1f} ms ({t_eng.describe()}), {gflops:.1f} GFLOP/s"
    )
    for shape, v in peaks.items():
        print(
            f"[flops] matmul {shape:>24}: {v['gflops']:7.1f} GFLOP/s "
            f"(other processes: {v['foreign_cores']:.2f} cores)"
        )
    print(
        f"[flops] efficiency vs best matmul ({best:.1f} GFLOP/s): {eff * 100:.1f}% (target >= 50%)"
    )
    rep.update(
        flops=flops,
        gflops=gflops,
        flops_engine_s=t_eng.median,
        matmul=peaks,
        matmul_best_gflops=best,
        matmul_efficiency=eff,
    )
    if "loop_s" in rep:
        loop_flops = count_flops(lambda: loop_iteration(learner, ep))
        bound = rep["loop_s"] / (flops / (best * 1e9))
        print(
            f"[flops] per-signal loop: {loop_flops / 1e9:.2f} GFLOP; at 100% of the best matmul "
            f"rate the engine/loop ratio would be {bound:.2f}x"
        )
        rep.update(loop_flops=loop_flops, speedup_bound_at_peak=bound)


def section_sft(args: argparse.Namespace, learner: MetaLearner, ep: Episode, rep: dict) -> None:
    """4. The SFT (MIA) rule, interleaved with the CAVIA engine."""
    sft = make_learner(args.modalities, rule="sft", steps=args.steps)
    t = timed(
        args,
        {"engine": lambda: engine_iteration(learner, ep), "sft": lambda: engine_iteration(sft, ep)},
    )
    t_sft, t_eng = t["sft"], t["engine"]
    if t_sft.contended or t_eng.contended:
        rep["contended"].append("sft_overhead")
    flops_sft = count_flops(lambda: engine_iteration(sft, ep))
    overhead = t_sft.median / t_eng.median
    record(rep, "sft", "\n[sft] engine (MIA SFT): ", t_sft, args.batch)
    print(
        f"[sft] CAVIA engine, interleaved: {t_eng.median * 1e3:8.1f} ms/iter ({t_eng.describe()})"
    )
    print(
        f"[sft] {flops_sft / 1e9:.2f} GFLOP ({flops_sft / rep['flops']:.2f}x CAVIA's); "
        f"overhead vs CAVIA engine: {overhead:.2f}x (target <= 1.4)"
    )
    rep.update(sft_engine_s=t_eng.median, sft_flops=flops_sft, sft_overhead=overhead)


def section_memory(args: argparse.Namespace, rep: dict) -> None:
    """5. Peak RSS increase of one meta-iteration per variant, each in a fresh process."""
    print(
        f"\n[mem] peak RSS increase of one meta-iteration, fresh subprocess each: "
        f"B={args.mem_batch}, M={args.mem_modalities}, support = query = "
        f"{args.mem_points} points, K={args.steps}"
    )
    mem = run_variants(args)
    for v, r in mem.items():
        print(
            f"[mem] {v:>13}: {r['delta_mb']:9.1f} MB  (base {r['base_mb']:.0f} MB, "
            f"peak {r['peak_mb']:.0f} MB, {r['seconds']:.2f} s)"
        )
    so = mem["second_order"]["delta_mb"]
    r_fo, r_pr = mem["first_order"]["delta_mb"] / so, mem["pruning"]["delta_mb"] / so
    print(f"[mem] first-order / second-order: {r_fo:.2f} (target <= 0.5)")
    print(f"[mem] pruning 25% / second-order: {r_pr:.2f} (target <= 0.5)")
    rep.update(mem=mem, mem_first_order_ratio=r_fo, mem_pruning_ratio=r_pr)


def summary(rep: dict) -> None:
    """Print the table of targets and store the verdicts in ``rep``."""
    print("\n| metric | value | target | verdict |\n|---|---|---|---|")
    rep["verdicts"] = {}
    for name, (op, thr, fmt) in TARGETS.items():
        if name not in rep:
            continue
        rep["verdicts"][name] = verdict(name, rep[name])
        if name in rep["contended"]:
            rep["verdicts"][name] += " (contended: unreliable)"
        value, target = fmt.format(rep[name]), f"{op} {fmt.format(thr)}"
        print(f"| {name} | {value} | {target} | {rep['verdicts'][name]} |")
    if rep["contended"]:
        print(
            f"\nWARNING: other processes used the CPU while {', '.join(rep['contended'])} "
            "was timed; those numbers are unreliable. Re-run on an idle machine."
        )


def main(argv: list[str] | None = None) -> dict:
    """Run every measurement, print the report, return the numbers."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_matmul_precision(args.precision)
    b, m, p, k = args.batch, args.modalities, args.points, args.steps
    print(TCMALLOC_STATUS)
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"threads {torch.get_num_threads()}, matmul precision {args.precision}"
    )
    print(
        f"workload: B={b} signals x M={m} modalities x P={p} points (support = query = all), "
        f"K={k} inner steps, second order, ComposersINR(1, 1, 128, 5, rank=8), "
        f"CAVIA inner lr 1.0, context init N(0,1)"
    )
    print("  support_x (B, P, 1) per signal; query_x (1, P, 1) shared")
    print(f"timing: warmup {args.warmup}, median of {args.iters}")
    rep: dict = {
        "config": {k_: (str(v) if isinstance(v, Path) else v) for k_, v in vars(args).items()},
        "tcmalloc": TCMALLOC_STATUS,
        "torch": torch.__version__,
        "contended": [],
    }
    ep = make_episode(b, m, p)
    learner = make_learner(m, steps=k)
    if not args.skip_loop:
        section_check(args, learner, ep, rep)
    section_speed(args, learner, ep, rep)
    section_flops(args, learner, ep, rep)
    section_sft(args, learner, ep, rep)
    if not args.skip_mem:
        section_memory(args, rep)
    rep["contended"] = sorted(rep["contended"])
    summary(rep)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rep, indent=2))
        print(f"\nwrote {args.json}")
    return rep


if __name__ == "__main__":
    main()

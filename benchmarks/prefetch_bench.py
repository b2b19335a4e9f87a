"""Training throughput with episodes built ahead (``data.prefetch``) against built in the step.

The workload is the training loop's critical path on the default experiment: draw the next
episode batch from the task, outer loss, meta-gradient, optimizer step, for ``--steps``
steps of one epoch, with ``data.prefetch=0`` (the episode is built and copied in the
step, the old behaviour) and ``data.prefetch=2`` (built on a thread two batches ahead),
interleaved (A B A B ...) and repeated; the medians and their ratio are printed. On one
CPU the thread can only overlap NumPy with torch kernels; the target here is that the
throughput does not drop (ratio >= 0.95). On a GPU the copies are pinned and
asynchronous and the step no longer waits for the CPU.

    .venv/bin/python benchmarks/prefetch_bench.py [--steps 20] [--iters 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._timing import load_note, paired_time  # noqa: E402
from mia_core.config import load_config  # noqa: E402
from pipelines.engine.task import WorkerContext  # noqa: E402
from pipelines.tasks.meta import MetaLearningTask  # noqa: E402


def _runner(out: Path, prefetch: int, steps: int, batch: int):
    cfg = load_config(
        ROOT / "configs/experiments/default.yaml",
        [f"run.out_dir={out}", f"data.prefetch={prefetch}", f"run.batch_size={batch}",
         "run.matmul_precision=highest"],
    )
    MetaLearningTask.prepare(cfg)
    torch.manual_seed(0)
    task = MetaLearningTask(cfg, WorkerContext(torch.device("cpu")))
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-4)

    def run() -> None:
        for i, batch_ in enumerate(task.batches(0, 0)):
            if i == steps:
                break
            opt.zero_grad()
            loss, _ = task.loss(batch_, i)
            loss.backward()
            opt.step()

    return run


def main(argv: list[str] | None = None) -> int:
    """Print the two medians and their ratio; exit 1 when the ratio is below 0.95."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="mia-prefetch-"))
    fns = {
        "in the step (prefetch 0)": _runner(out, 0, args.steps, args.batch),
        "built ahead (prefetch 2)": _runner(out, 2, args.steps, args.batch),
    }
    t = paired_time(fns, warmup=1, iters=args.iters, max_wait=30.0)
    base, ahead = (t[k].median for k in fns)
    ratio = base / ahead
    print(f"{load_note()}; {args.steps} steps of batch {args.batch}, default experiment")
    for k in fns:
        print(f"{k:28s} {args.steps / t[k].median:7.2f} steps/s  ({t[k].describe()})")
    verdict = "PASS" if ratio >= 0.95 else "MISS"
    print(f"throughput ratio (ahead / in the step): {ratio:.3f}  target >= 0.95: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "steps": args.steps, "batch": args.batch, "threads": args.threads,
            "steps_per_s": {k: args.steps / t[k].median for k in fns},
            "samples_s": {k: t[k].samples for k in fns},
            "ratio": ratio, "target": 0.95, "verdict": verdict,
            "contended": any(t[k].contended for k in fns),
        }, indent=1) + "\n")
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())

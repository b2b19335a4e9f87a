"""Meta-continual learning job (MCL-NF and baselines): parse a config and train it.

Usage::

    python ray_jobs/continual.py --config configs/experiments/mcl_nf_ncep.yaml run.steps=100
    python ray_jobs/continual.py --config configs/experiments/er_ncep.yaml --local
    python ray_jobs/continual.py --compare runs/mcl_nf_ncep runs/maml_cl_ncep --out runs/cmp

The run goes through :func:`pipelines.jobs.train`: on Ray (``--address`` or
``RAY_ADDRESS``, else a local instance) by default, in this process with ``--local``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mia_core.config import load_config
from pipelines import jobs
from pipelines.reports.continual import compare_runs
from ray_jobs.common import parse_job_args, run_main


def main(argv: list[str]) -> int:
    """Parse arguments and run; user errors propagate to ``run_main``."""
    parser = argparse.ArgumentParser(
        prog="mia-inr continual",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="experiment YAML (configs/experiments/mcl_*.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)"
    )
    parser.add_argument("--compare", nargs="+", type=Path, help="run directories to compare")
    parser.add_argument("--out", type=Path, default=Path("runs/continual_comparison"))
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parse_job_args(parser, argv)
    if args.compare:
        print(compare_runs(args.compare, args.out))
        print(f"written to {args.out}/comparison.{{md,csv,png}}")
        return 0
    if not args.config:
        parser.error("--config is required (or --compare RUN_DIR ...)")
    cfg = load_config(args.config, args.overrides)
    jobs.train(cfg, local=args.local, address=args.address, resume=not args.no_resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

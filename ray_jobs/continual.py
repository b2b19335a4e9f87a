"""Meta-continual learning job (MCL-NF and baselines): parse a config and run it.

Usage::

    python ray_jobs/continual.py --config configs/experiments/mcl_nf_ncep.yaml run.steps=100
    python ray_jobs/continual.py --compare runs/mcl_nf_ncep runs/maml_cl_ncep --out runs/cmp

With ``--ray`` the run is one Ray task on the current cluster (``RAY_ADDRESS`` or a
local instance); by default it runs in this process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia_core.config import ConfigError, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; a bad config exits with status 2 and a one-line reason."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="experiment YAML (configs/experiments/mcl_*.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--ray", action="store_true", help="run as one Ray task")
    parser.add_argument("--address", default=None, help="Ray address (with --ray)")
    parser.add_argument("--compare", nargs="+", type=Path, help="run directories to compare")
    parser.add_argument("--out", type=Path, default=Path("runs/continual_comparison"))
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    if args.compare:
        from pipelines.reports.continual import compare_runs

        print(compare_runs(args.compare, args.out))
        print(f"written to {args.out}/comparison.{{md,csv,png}}")
        return 0
    if not args.config:
        parser.error("--config is required (or --compare RUN_DIR ...)")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.ray:
        from pipelines.tasks.continual import run_continual_on_ray

        run_continual_on_ray(cfg, address=args.address, resume=not args.no_resume)
    else:
        from pipelines.tasks.continual import run_continual

        run_continual(cfg, resume=not args.no_resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

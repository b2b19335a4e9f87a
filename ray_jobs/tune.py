"""Hyper-parameter sweep job: every trial is a Ray Train run of the training job.

Usage (local Ray, or inside ``ray job submit``)::

    python ray_jobs/tune.py --config configs/tune/mia_random.yaml run.steps=100
    python ray_jobs/tune.py --config configs/tune/mia_tpe.yaml sweep.num_samples=20
    python ray_jobs/train.py --config runs/sweeps/mia_random/best_config.yaml

``key=value`` arguments override the base experiment; ``sweep.<field>=value`` overrides
the sweep file. A second call resumes an interrupted sweep unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia_core.config import ConfigError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the sweep; a bad sweep file exits with status 2."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/tune/)")
    parser.add_argument("--no-resume", action="store_true", help="start the sweep afresh")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)"
    )
    parser.add_argument("overrides", nargs="*", help="key=value or sweep.key=value overrides")
    args = parser.parse_args(argv)
    from pipelines.studies.sweep import SweepInterrupted, load_sweep, run_sweep

    try:
        spec, base = load_sweep(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    try:
        run_sweep(spec, base, resume=not args.no_resume, address=args.address)
    except SweepInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

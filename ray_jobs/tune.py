"""Hyper-parameter sweep job: every trial is a Ray Train run of the training job.

Usage (local Ray, or inside ``ray job submit``)::

    python ray_jobs/tune.py --config configs/tune/mia_random.yaml run.steps=100
    python ray_jobs/tune.py --config configs/tune/mia_tpe.yaml sweep.num_samples=20
    python ray_jobs/tune.py --config configs/tune/mia_grid.yaml sweep.scheduler.name=none
    python ray_jobs/train.py --config runs/sweeps/mia_random/best_config.yaml

``sweep.<field>=value`` overrides the sweep file (``sweep.params.<config key>={...}`` adds
or replaces one swept key); any other ``key=value`` overrides the base experiment. A
second call resumes an interrupted sweep unless ``--no-resume``. Ray Tune needs Ray, so
there is no ``--local``.

Trials are compared on ``sweep.metric`` (``best_val``, the validation score, or the
training ``loss``) and are not evaluated after training: a sweep never reads the test
split. Score the chosen config with ``mia-inr evaluate --split test`` (docs/splits.md).
"""

from __future__ import annotations

import argparse
import sys

from pipelines.studies.sweep import SweepInterrupted, run_sweep
from pipelines.studies.sweep_spec import load_sweep
from ray_jobs.common import parse_job_args, run_main


def main(argv: list[str]) -> int:
    """Parse arguments and run the sweep; user errors propagate to ``run_main``."""
    parser = argparse.ArgumentParser(
        prog="mia-inr tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/tune/)")
    parser.add_argument("--no-resume", action="store_true", help="start the sweep afresh")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)"
    )
    parser.add_argument("overrides", nargs="*", help="key=value or sweep.key=value overrides")
    parser.add_argument("--local", action="store_true", help=argparse.SUPPRESS)
    args = parse_job_args(parser, argv)
    if args.local:  # taken by every other config-driven job: say why not here
        parser.error(
            "--local: a sweep schedules its trials with Ray Tune, which needs Ray; drop "
            "--local (without --address a local Ray instance on this machine runs it)"
        )
    spec, base = load_sweep(args.config, args.overrides)
    try:
        run_sweep(spec, base, resume=not args.no_resume, address=args.address)
    except SweepInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

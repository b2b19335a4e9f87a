"""Evaluate a finished run's validation-selected checkpoint on the test split.

Usage::

    python ray_jobs/evaluate.py --run-dir runs/default [--repeats 10]

Writes ``results.md``, ``results.csv``, ``metrics.json`` and ``figures/`` into the run
directory and logs them to the run's MLflow run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.reports.evaluate_run import evaluate_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and evaluate; a missing run directory exits with status 2."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, help="run directory (<run.out_dir>/<run.name>)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="bootstrap factor (default: run.eval_repeats)"
    )
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        print(f"evaluate: {run_dir} has no config.yaml (not a run directory)", file=sys.stderr)
        return 2
    evaluate_run(run_dir, args.repeats, track=not args.no_track)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

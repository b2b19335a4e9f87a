"""Evaluation job: a finished run's validation-selected checkpoint on a split.

Usage::

    mia-inr evaluate --run-dir runs/default                # the validation split
    mia-inr evaluate --run-dir runs/default --split test   # the final report
    python ray_jobs/evaluate.py --run-dir runs/default --split test

``--split`` defaults to ``val``: the test split is for the final report only and is
always asked for explicitly (docs/splits.md). The run's task writes its report
(``results.md``, ``metrics.json``, figures for test; ``results_val.md``,
``metrics_val.json``, ``figures_val/`` for val) into the run directory and logs it to
the run's MLflow run (``test/...`` or ``val/...`` metrics). A run directory may have been moved:
``run.out_dir`` and ``run.name`` are taken from where it is now (a run moved without its
MLflow store logs into a new MLflow run). A checkpoint that does not fit the model of the
run's ``config.yaml`` is a one-line error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.engine.run_dir import CheckpointMissing
from pipelines.engine.task import EVAL_SPLITS
from pipelines.jobs import evaluate
from ray_jobs.common import run_main


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mia-inr evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, help="run directory (<run.out_dir>/<run.name>)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument(
        "--split",
        choices=EVAL_SPLITS,
        default="val",
        help="split to score (default val; test is the final report, ask for it explicitly)",
    )
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise CheckpointMissing(f"{run_dir} has no config.yaml (not a run directory)")
    what = "validation" if args.split == "val" else "test"
    print(f"evaluating {run_dir} on the {what} split (--split {args.split})")
    evaluate(run_dir, track=not args.no_track, figures=not args.no_figures, split=args.split)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the job; a user error prints one line and returns 2."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())

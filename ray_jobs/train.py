"""Training job: parse a config (+ ``key=value`` overrides) and train its task.

Usage (local Ray, or inside ``ray job submit``)::

    python ray_jobs/train.py --config configs/experiments/default.yaml run.steps=100
    python ray_jobs/train.py --config ... --local     # one process, no Ray
    mia-inr train --config ...                        # the same

Every ``method.name`` (meta-learning, ``meta_inr``, ``mwt``, the continual methods)
trains through the same engine; the validation-selected checkpoint is then reported on
the validation split (``results_val.md``, ``metrics_val.json``): training never scores
the test split, ``mia-inr evaluate --run-dir R --split test`` does (docs/splits.md).
Submitting the same run name again resumes it, with the same config: a
config that changes what the run learns (model, method, data, optimiser, seed...) is
refused with the differing keys (``--no-resume`` or another ``run.name`` starts afresh);
``run.steps`` may grow to train on, and where the run lives, is tracked or runs may
change (``run.out_dir`` of a moved run, tracking, workers' CPUs, ...). ``run.name`` is a
folder name, not a path. A checkpoint that cannot be written for lack of space stops the
job with one line, the last good checkpoint kept.
"""

from __future__ import annotations

import argparse

from mia_core.config import load_config
from pipelines.jobs import train
from ray_jobs.common import add_run_arguments, parse_job_args, run_main


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mia-inr train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser, "experiment YAML (see configs/experiments/)")
    args = parse_job_args(parser, argv)
    cfg = load_config(args.config, args.overrides)
    train(cfg, local=args.local, address=args.address, resume=not args.no_resume)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the job; a user error prints one line and returns 2."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Ablation study job: SFT components and states, modality replacement, trajectories.

Usage::

    python ray_jobs/ablate.py --config configs/ablation/short.yaml
    python ray_jobs/ablate.py --config configs/ablation/full.yaml ablation.seeds=[0,1,2,3,4]
    python ray_jobs/ablate.py --config configs/ablation/short.yaml run.steps=400

``ablation.<field>=value`` overrides the study file; other ``key=value`` arguments are
appended to its budget (applied to every run). Re-running continues a study: finished
variant x seed runs are skipped, interrupted ones resume from their last checkpoint.
The runs train on Ray Train (``--address`` or ``RAY_ADDRESS``, else a local instance), or
in this process with ``--local`` (the faster choice for many tiny runs on one machine);
the report is written to ``<run.out_dir>/ablation/<name>/report.md`` and logged to MLflow.
"""

from __future__ import annotations

import argparse

from pipelines.studies.ablation import run_ablation
from pipelines.studies.ablation_spec import load_ablation
from ray_jobs.common import parse_job_args, run_main


def main(argv: list[str]) -> int:
    """Parse arguments and run the study; user errors propagate to ``run_main``."""
    parser = argparse.ArgumentParser(
        prog="mia-inr ablate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="study YAML (see configs/ablation/)")
    parser.add_argument("overrides", nargs="*", help="ablation.key=value or budget key=value")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    args = parse_job_args(parser, argv)
    spec, bases = load_ablation(args.config, args.overrides)
    result = run_ablation(spec, bases, local=args.local, address=args.address)
    print(result.report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

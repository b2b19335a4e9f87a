"""Continual study job: MCL-NF and its baselines at test-time budgets, over seeds.

Usage::

    mia-inr continual-study --config configs/reproduce/mcl_nf_ncep.yaml --local --readme
    mia-inr continual-study --config configs/reproduce/mcl_nf_ncep.yaml continual_study.seeds=[0]
    mia-inr continual-study --readme    # only regenerate docs/mcl_nf.md's table from the JSON

``continual_study.<field>=value`` overrides the study file; other ``key=value`` arguments
are appended to its budget (applied to every run). Re-running continues a study:
finished runs are skipped, interrupted ones resume; a run folder made with another
budget is refused. ``--readme`` rewrites the block between the ``mcl_nf`` markers in
docs/mcl_nf.md from the study's ``results_json`` (or ``--results-json``).
"""

from __future__ import annotations

from pipelines.studies.continual_study import CONTINUAL
from ray_jobs.common import run_main
from ray_jobs.study_cli import study_main, workflow_command

COMMAND = workflow_command(CONTINUAL, "benchmarks/results/mcl_nf.json", __doc__, "continual-study")


def main(argv: list[str]) -> int:
    """Run the study and/or refresh its docs page (:func:`ray_jobs.study_cli.study_main`)."""
    return study_main(argv, COMMAND)


if __name__ == "__main__":
    raise SystemExit(run_main(main))

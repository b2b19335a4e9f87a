"""MWT study job: MWT vs WT vs a logistic regression on pixels, over seeds.

Usage::

    mia-inr mwt-study --config configs/reproduce/mwt_mnist_cpu.yaml --local --readme
    mia-inr mwt-study --config configs/reproduce/mwt_mnist_cpu.yaml mwt_study.seeds=[0]
    mia-inr mwt-study --readme      # only regenerate docs/mwt.md's table from the JSON

``mwt_study.<field>=value`` overrides the study file; other ``key=value`` arguments are
appended to its budget (applied to every run). Re-running continues a study: finished
runs are skipped, interrupted ones resume; a run folder made with another budget is
refused. ``--readme`` rewrites the block between the ``mwt`` markers in docs/mwt.md from the
study's ``results_json`` (or ``--results-json``).
"""

from __future__ import annotations

from pipelines.studies.mwt_study import MWT
from ray_jobs.common import run_main
from ray_jobs.study_cli import study_main, workflow_command

COMMAND = workflow_command(MWT, "benchmarks/results/mwt.json", __doc__, "mwt-study")


def main(argv: list[str]) -> int:
    """Run the study and/or refresh its docs page (:func:`ray_jobs.study_cli.study_main`)."""
    return study_main(argv, COMMAND)


if __name__ == "__main__":
    raise SystemExit(run_main(main))

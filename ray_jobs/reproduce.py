"""Reproduction study job: MIA Table 1 (synthetic 1D) over seeds, and the budget curve.

Usage::

    mia-inr reproduce --config configs/reproduce/synthetic.yaml --local
    mia-inr reproduce --config configs/reproduce/synthetic.yaml reproduce.seeds=[0,1,2,3,4]
    mia-inr reproduce --config configs/reproduce/synthetic.yaml \
        reproduce.curve_steps=[500,2000,8000,32000] run.steps=32000
    mia-inr reproduce --config configs/reproduce/synthetic.yaml --readme \
        reproduce.results_json=benchmarks/results/mia_table1.json
    mia-inr reproduce --readme      # only regenerate the docs pages' tables from the JSONs

``reproduce.<field>=value`` overrides the study file; other ``key=value`` arguments are
appended to its budget (applied to every run). Re-running continues a study: finished
method x seed runs are skipped, interrupted ones resume; a study folder made with another
budget is refused. The runs train on Ray Train (``--address`` or ``RAY_ADDRESS``, else a
local instance) or in this process with ``--local``. Outputs go to
``<run.out_dir>/reproduce/<name>/`` (``table1.{md,csv,json,png}``, ``curve.*``).
``--readme`` then rewrites the block between the markers named after the results JSON
(``mia_table1``, ``mia_fields``) in its docs page (:data:`PAGES`; ``--readme-file``
names another file) from ``reproduce.results_json`` (``--results-json`` without a
study; alone, every committed results JSON).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.studies.reproduce import run_reproduce
from pipelines.studies.reproduce_readme import update_readme
from pipelines.studies.reproduce_spec import load_reproduce
from ray_jobs.common import run_main
from ray_jobs.study_cli import StudyCommand, study_main

DEFAULT_JSONS = (
    "benchmarks/results/mia_table1.json",
    "benchmarks/results/mia_table1_long.json",
    "benchmarks/results/mia_fields.json",
    "benchmarks/results/mia_fields_hadcm3.json",
)
# Results JSON -> the docs page holding its generated block (markers named after its stem).
PAGES = {
    "benchmarks/results/mia_table1.json": "docs/reproduction.md",
    "benchmarks/results/mia_table1_long.json": "docs/reproduction.md",
    "benchmarks/results/mia_fields.json": "docs/reproduction.md",
    "benchmarks/results/mia_fields_hadcm3.json": "docs/results/fields_hadcm3.md",
    "benchmarks/results/mia_fields_ncep_wind10m.json": "docs/results/fields_ncep_wind10m.md",
    "benchmarks/results/mia_fields_hadcm3_sparse.json": "docs/results/fields_hadcm3_sparse.md",
}
DEFAULT_PAGE = "docs/reproduction.md"  # the page of a results JSON that PAGES does not name


def run(config: str, overrides: list[str], local: bool, address: str | None) -> str:
    """Run the study file ``config``, print its tables; returns its results JSON."""
    spec, bases = load_reproduce(config, overrides)
    result = run_reproduce(spec, bases, local=local, address=address)
    print((result.out_dir / "table1.md").read_text())
    if result.curve is not None:
        print((result.out_dir / "curve.md").read_text())
    return spec.results_json


def docs(results_json: str, readme_file: str | None) -> Path:
    """Rewrite the block of ``results_json`` in its page (:data:`PAGES`) or ``readme_file``."""
    page = readme_file or PAGES.get(Path(results_json).as_posix(), DEFAULT_PAGE)
    return update_readme(page, results_json)


COMMAND = StudyCommand("reproduce", __doc__, "reproduce", run, docs, DEFAULT_JSONS, DEFAULT_PAGE)


def main(argv: list[str]) -> int:
    """Run the study and/or refresh the docs tables (:func:`ray_jobs.study_cli.study_main`)."""
    return study_main(argv, COMMAND)


if __name__ == "__main__":
    raise SystemExit(run_main(main))

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

import argparse
from pathlib import Path

from pipelines.studies.reproduce import run_reproduce
from pipelines.studies.reproduce_readme import update_readme
from pipelines.studies.reproduce_spec import load_reproduce
from ray_jobs.common import parse_job_args, run_main

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
}
DEFAULT_PAGE = "docs/reproduction.md"  # the page of a results JSON that PAGES does not name


def main(argv: list[str]) -> int:
    """Parse arguments, run the study and/or refresh the docs tables; user errors propagate."""
    parser = argparse.ArgumentParser(
        prog="mia-inr reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="study YAML (see configs/reproduce/)")
    parser.add_argument("overrides", nargs="*", help="reproduce.key=value or budget key=value")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    parser.add_argument(
        "--readme", action="store_true", help="regenerate the tables in their docs pages"
    )
    parser.add_argument(
        "--results-json", default=None, help=f"default: those of {list(DEFAULT_JSONS)} present"
    )
    parser.add_argument(
        "--readme-file",
        default=None,
        help=f"file with the markers (default: the JSON's page under docs/, e.g. {DEFAULT_PAGE})",
    )
    args = parse_job_args(parser, argv)
    if args.config is None and not args.readme:
        parser.error("--config is required (or --readme alone to refresh the docs tables)")
    results_json = args.results_json
    if args.config is not None:
        spec, bases = load_reproduce(args.config, args.overrides)
        result = run_reproduce(spec, bases, local=args.local, address=args.address)
        print((result.out_dir / "table1.md").read_text())
        if result.curve is not None:
            print((result.out_dir / "curve.md").read_text())
        results_json = results_json or spec.results_json or None
    if args.readme:
        sources = [results_json] if results_json else [p for p in DEFAULT_JSONS if Path(p).exists()]
        if not sources:
            raise FileNotFoundError(f"none of {list(DEFAULT_JSONS)} exists (run a study first)")
        for source in sources:
            page = args.readme_file or PAGES.get(Path(source).as_posix(), DEFAULT_PAGE)
            readme = update_readme(page, source)
            print(f"updated {readme} from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

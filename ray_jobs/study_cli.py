"""The command line shared by the comparison studies (``mwt-study``, ``continual-study``).

``<section>.<field>=value`` overrides the study file; other ``key=value`` arguments are
appended to its budget (applied to every run). Re-running continues a study: finished
runs are skipped, interrupted ones resume; a run folder made with another budget is
refused. ``--readme`` rewrites the generated block of the study's workflow in its docs page
(``Workflow.page``; ``--readme-file`` names another file) from the study's
``results_json`` (or ``--results-json``); alone, it only does that.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.studies.comparison import (
    Workflow,
    load_comparison,
    run_comparison,
    write_comparison_readme,
)
from ray_jobs.common import parse_job_args


def study_main(argv: list[str], workflow: Workflow, default_json: str, doc: str, prog: str) -> int:
    """Parse arguments, run the study and/or refresh its docs table; user errors propagate.

    Args:
        argv: the command's arguments.
        workflow: the study's workflow (its YAML section, runs, block and page).
        default_json: results JSON of ``--readme`` without a study or ``--results-json``.
        doc: the command's ``--help`` description.
        prog: the command's name after ``mia-inr`` (``mwt-study``, ``continual-study``).
    """
    parser = argparse.ArgumentParser(
        prog=f"mia-inr {prog}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="study YAML (configs/reproduce/)")
    parser.add_argument(
        "overrides", nargs="*", help=f"{workflow.section}.key=value or budget key=value"
    )
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    parser.add_argument(
        "--readme", action="store_true", help=f"regenerate the table in {workflow.page}"
    )
    parser.add_argument("--results-json", default=None, help=f"default: {default_json}")
    parser.add_argument(
        "--readme-file", default=None, help=f"file with the markers (default: {workflow.page})"
    )
    args = parse_job_args(parser, argv)
    if args.config is None and not args.readme:
        parser.error(f"--config is required (or --readme alone to refresh {workflow.page})")
    results_json = args.results_json
    if args.config is not None:
        spec = load_comparison(workflow, args.config, args.overrides)
        run_comparison(workflow, spec, local=args.local, address=args.address)
        results_json = results_json or spec.results_json or None
    if args.readme:
        source = Path(results_json or default_json)
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist (run the study first)")
        written = write_comparison_readme(workflow, source, args.readme_file)
        print(f"updated {written} from {source}")
    return 0

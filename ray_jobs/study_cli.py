"""The command line of the studies that fill docs pages: reproduce, mwt-study, continual-study.

``<section>.<field>=value`` overrides the study file; other ``key=value`` arguments are
appended to its budget (applied to every run). Re-running continues a study: finished
runs are skipped, interrupted ones resume; a run folder made with another budget is
refused. ``--readme`` rewrites the generated block of the study's results JSON in its docs
page (``--readme-file`` names another file) from the study's ``results_json`` (or
``--results-json``); alone, it only does that, for every default results JSON present.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.studies.comparison import Workflow
from ray_jobs.common import parse_job_args


@dataclass(frozen=True)
class StudyCommand:
    """One study command.

    Attributes:
        prog: the command's name after ``mia-inr``.
        doc: its ``--help`` description.
        section: the study file's override prefix.
        run: ``(config, overrides, local, address)`` -> the study's results JSON (``""``:
            none); runs the study and prints its tables.
        docs: ``(results_json, readme_file or None)`` -> the docs page written.
        default_jsons: the results JSONs ``--readme`` alone refreshes (those present).
        page: the docs page named in the help texts.
    """

    prog: str
    doc: str
    section: str
    run: Callable[[str, list[str], bool, str | None], str]
    docs: Callable[[str, str | None], Path]
    default_jsons: tuple[str, ...]
    page: str


def workflow_command(workflow: Workflow, default_json: str, doc: str, prog: str) -> StudyCommand:
    """The command of a comparison study (:class:`~pipelines.studies.comparison.Workflow`)."""

    def run(config: str, overrides: list[str], local: bool, address: str | None) -> str:
        spec = workflow.load(config, overrides)
        workflow.run(spec, local=local, address=address)
        return spec.results_json

    return StudyCommand(
        prog, doc, workflow.section, run, workflow.write_readme, (default_json,), workflow.page
    )


def study_main(argv: list[str], cmd: StudyCommand) -> int:
    """Parse arguments, run the study and/or refresh its docs tables; user errors propagate."""
    parser = argparse.ArgumentParser(
        prog=f"mia-inr {cmd.prog}",
        description=cmd.doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="study YAML (see configs/reproduce/)")
    parser.add_argument("overrides", nargs="*", help=f"{cmd.section}.key=value or budget key=value")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    parser.add_argument(
        "--readme", action="store_true", help="regenerate the tables in their docs pages"
    )
    parser.add_argument(
        "--results-json", default=None, help=f"default: those of {list(cmd.default_jsons)} present"
    )
    parser.add_argument(
        "--readme-file", default=None, help=f"file with the markers (default: e.g. {cmd.page})"
    )
    args = parse_job_args(parser, argv)
    if args.config is None and not args.readme:
        parser.error("--config is required (or --readme alone to refresh the docs tables)")
    results_json = args.results_json
    if args.config is not None:
        ran = cmd.run(args.config, args.overrides, args.local, args.address)
        results_json = results_json or ran or None
    if args.readme:
        sources = (
            [results_json] if results_json else [p for p in cmd.default_jsons if Path(p).exists()]
        )
        if not sources:
            raise FileNotFoundError(f"none of {list(cmd.default_jsons)} exists (run a study first)")
        for source in sources:
            print(f"updated {cmd.docs(source, args.readme_file)} from {source}")
    return 0

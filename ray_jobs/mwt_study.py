"""MWT study job: MWT vs WT vs a logistic regression on pixels, over seeds.

Usage::

    mia-inr mwt-study --config configs/reproduce/mwt_mnist_cpu.yaml --local --readme
    mia-inr mwt-study --config configs/reproduce/mwt_mnist_cpu.yaml mwt_study.seeds=[0]
    mia-inr mwt-study --readme      # only regenerate README.md's table from the JSON

``mwt_study.<field>=value`` overrides the study file; other ``key=value`` arguments are
appended to its budget (applied to every run). Re-running continues a study: finished
runs are skipped, interrupted ones resume; a run folder made with another budget is
refused. ``--readme`` rewrites the README block between the ``mwt`` markers from the
study's ``results_json`` (or ``--results-json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.studies.mwt_study import load_mwt_study, run_mwt_study, write_readme
from ray_jobs.common import parse_job_args, run_main

DEFAULT_JSON = "benchmarks/results/mwt.json"


def main(argv: list[str]) -> int:
    """Parse arguments, run the study and/or refresh the README; user errors propagate."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="study YAML (configs/reproduce/mwt_*)")
    parser.add_argument("overrides", nargs="*", help="mwt_study.key=value or budget key=value")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    parser.add_argument("--readme", action="store_true", help="regenerate the README table")
    parser.add_argument("--results-json", default=None, help=f"default: {DEFAULT_JSON}")
    parser.add_argument("--readme-file", default="README.md", help="file with the markers")
    args = parse_job_args(parser, argv)
    if args.config is None and not args.readme:
        parser.error("--config is required (or --readme alone to refresh the README table)")
    results_json = args.results_json
    if args.config is not None:
        spec = load_mwt_study(args.config, args.overrides)
        run_mwt_study(spec, local=args.local, address=args.address)
        results_json = results_json or spec.results_json or None
    if args.readme:
        source = Path(results_json or DEFAULT_JSON)
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist (run the study first)")
        print(f"updated {write_readme(source, args.readme_file)} from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

"""``mia-inr``: one command for every job; ``mia-inr --help`` lists them (:data:`GROUPS`).

The command list and its one-line summaries are data here, so ``--help`` and ``--version``
import no job module (torch, Ray, MLflow); a command's module loads only when it runs.
``mia-inr decode`` is ``ray_jobs/encode.py decode`` (``mia-inr encode decode`` is a hidden
alias of it). ``python ray_jobs/<command>.py ...`` runs the same code (for
``ray job submit -- python ray_jobs/train.py ...``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

from pipelines.cluster.allocator import reexec_with_tcmalloc

DISTRIBUTION = "mia-inr"  # [project] name in pyproject.toml

# command -> (module with main(argv), arguments put in front of the user's)
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "build": ("pipelines.data.builders.__main__", []),
    "train": ("ray_jobs.train", []),
    "evaluate": ("ray_jobs.evaluate", []),
    "tune": ("ray_jobs.tune", []),
    "ablate": ("ray_jobs.ablate", []),
    "reproduce": ("ray_jobs.reproduce", []),
    "mwt-study": ("ray_jobs.mwt_study", []),
    "continual-study": ("ray_jobs.continual_study", []),
    "encode": ("ray_jobs.encode", []),  # encode [report] ...
    "decode": ("ray_jobs.encode", ["decode"]),
    "continual": ("ray_jobs.continual", []),
    "encode-continual": ("ray_jobs.encode_continual", []),
}

# group -> command -> its one-line summary in `mia-inr --help` (every command once)
GROUPS: dict[str, dict[str, str]] = {
    "data": {
        "build": "write a signal or field store (synthetic1d, mnist, cifar10, era5, ...)",
    },
    "training": {
        "train": "train an experiment config (resumes a run of the same name)",
        "evaluate": "score a finished run's checkpoint on the val (or test) split",
        "tune": "hyper-parameter sweep on Ray Tune (resumes an interrupted sweep)",
        "continual": "train a meta-continual method (MCL-NF, baselines); --compare compares runs",
    },
    "studies": {
        "reproduce": "MIA Table 1 (and budget curve) over seeds; --readme refreshes tables",
        "ablate": "ablation study: SFT components and states, modality replacement",
        "mwt-study": "MWT vs WT vs logistic regression on pixels, over seeds",
        "continual-study": "MCL-NF and its baselines at test-time budgets, over seeds",
    },
    "codec": {
        "encode": "encode a field store with a meta-trained INR; `encode report` benchmarks",
        "decode": "reconstruct time steps from a code store (netCDF or Zarr)",
        "encode-continual": "encode a store's new time steps with MCL-NF modules",
    },
}

EPILOG = """\
examples:
  mia-inr build synthetic1d --out runs/data/synthetic1d.zarr
  mia-inr train --config configs/experiments/default.yaml run.steps=100 --local
  mia-inr evaluate --run-dir runs/default --split test

Run `mia-inr <command> --help` for a command's options. Config-driven commands take
--config FILE and section.key=value overrides, --local (one process, no Ray; not tune,
which needs Ray) and --address (a Ray cluster; default RAY_ADDRESS, else a local
instance). Commands that resume earlier work (train, continual, tune, encode) take
--no-resume to start afresh. User errors print one line and exit with status 2
(--traceback shows the traceback)."""


def package_version() -> str:
    """The installed ``mia-inr`` distribution's version (``unknown`` when not installed)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def command_listing() -> str:
    """Every command of :data:`GROUPS` with its summary, one line each, grouped."""
    width = max(len(name) for group in GROUPS.values() for name in group)
    blocks = []
    for group, commands in GROUPS.items():
        lines = [f"  {name:<{width}}  {summary}" for name, summary in commands.items()]
        blocks.append("\n".join([f"{group}:", *lines]))
    return "\n\n".join(blocks)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--help``, ``--version``, ``<command> [<args>...]``."""
    parser = argparse.ArgumentParser(
        prog="mia-inr",
        usage="mia-inr [-h] [--version] <command> [<args>...]",
        description="Distributed meta-learning of implicit neural representations: one "
        "command for every job.\n\ncommands:\n\n" + command_listing(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    # described by the usage line and the listing above, not as two more entries
    parser.add_argument("command", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its job; the jobs' modules load only when chosen.

    Run as the ``mia-inr`` command (``argv`` is ``None``) it first re-executes itself
    with tcmalloc preloaded when installed (:mod:`pipelines.cluster.allocator`).
    """
    if argv is None:
        reexec_with_tcmalloc()
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args:
        parser.print_help()
        return 2
    try:
        if args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
            parser.error(
                f"unrecognized option {args[0]}: a command's options follow it "
                f"(mia-inr <command> {args[0]} ...)"
            )
        parsed = parser.parse_args(args)
    except SystemExit as stop:  # --help, --version, a bad top-level flag
        return stop.code if isinstance(stop.code, int) else 2
    name, rest = parsed.command, parsed.args
    if name not in COMMANDS:
        print(
            f"error: unknown command {name!r}; one of {', '.join(COMMANDS)} (see mia-inr --help)",
            file=sys.stderr,
        )
        return 2
    module, prefix = COMMANDS[name]
    sys.argv[0] = f"mia-inr {name}"
    # importlib: each job imports torch, Ray and MLflow; `mia-inr --help` should not (nor
    # should the process that is about to re-execute itself with tcmalloc).
    job = importlib.import_module(module).main
    run_main = importlib.import_module("ray_jobs.common").run_main
    return run_main(lambda args: int(job([*prefix, *args]) or 0), rest)


if __name__ == "__main__":
    raise SystemExit(main())

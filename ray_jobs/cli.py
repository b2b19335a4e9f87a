"""``mia-inr``: one command for every job.

Usage::

    mia-inr build synthetic1d --out runs/data/synthetic1d.zarr
    mia-inr train --config configs/experiments/default.yaml run.steps=100 [--local]
    mia-inr evaluate --run-dir runs/default [--split test]
    mia-inr tune --config configs/tune/mia_random.yaml
    mia-inr ablate --config configs/ablation/short.yaml
    mia-inr mwt-study --config configs/reproduce/mwt_mnist_cpu.yaml --local --readme
    mia-inr continual-study --config configs/reproduce/mcl_nf_ncep.yaml --local --readme
    mia-inr encode --config configs/encode/default.yaml encode.store=... encode.out=...
    mia-inr decode runs/codes/x.zarr --out decoded.nc
    mia-inr encode report --codes runs/codes/x.zarr --results benchmarks/results/encode.json
    mia-inr continual --config configs/experiments/mcl_nf_ncep.yaml
    mia-inr encode-continual --run-dir runs/mcl_nf_ncep --store ... --out ...

``mia-inr <command> --help`` shows a command's options. Every config-driven command takes
``--config FILE key=value ...``, ``--local`` (one process, no Ray), ``--address`` and
``--no-resume``. User errors print one line and exit with status 2 (``--traceback`` shows
the traceback). ``python ray_jobs/<command>.py ...`` runs the same code (for
``ray job submit -- python ray_jobs/train.py ...``).
"""

from __future__ import annotations

import importlib
import sys

from pipelines.cluster.allocator import reexec_with_tcmalloc

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


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its job; the jobs' modules load only when chosen.

    Run as the ``mia-inr`` command (``argv`` is ``None``) it first re-executes itself
    with tcmalloc preloaded when installed (:mod:`pipelines.cluster.allocator`).
    """
    if argv is None:
        reexec_with_tcmalloc()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
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

"""Command line of the store builders (see ``pipelines.data.builders``)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from pipelines.data.builders import BUILDERS
from pipelines.data.stores import DiskFull, StoreError, is_disk_full, make_location
from pipelines.data.stores.output import replacing

# A builder's user errors (bad flags, inputs, destinations): one line, status 2.
BUILD_ERRORS = (StoreError, FileNotFoundError, ValueError, DiskFull)


def main(argv: list[str] | None = None) -> int:
    """Parse ``<name> --out URL ...`` and run the builder; errors exit with status 2.

    The store is written aside and swapped in when complete (:mod:`~pipelines.data.stores.output`):
    an existing path that is not a store is refused unless ``--overwrite``, and a failed
    build leaves the previous store as it was.
    """
    # `mia-inr build` is the documented command; `python -m pipelines.data.builders` is the same
    parser = argparse.ArgumentParser(prog="mia-inr build", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    modules = {}
    for name in BUILDERS:
        mod = importlib.import_module(f"pipelines.data.builders.{name}")
        modules[name.replace("_", "-")] = mod
        p = sub.add_parser(name.replace("_", "-"), help=(mod.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--out", required=True, help="destination: local path or s3://bucket/key")
        p.add_argument(
            "--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)"
        )
        p.add_argument("--chunk", type=int, default=64, help="signals (timesteps) per chunk")
        p.add_argument("--overwrite", action="store_true", help="replace whatever is at --out")
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    location = make_location(args.out, endpoint_url=args.endpoint_url)
    try:
        if args.chunk < 1:
            raise ValueError(f"--chunk must be at least 1 (signals per chunk), got {args.chunk}")
        with replacing(location, ("signals", "fields"), args.overwrite, "store") as dest:
            summary = modules[args.name].build(args, dest)
    except (*BUILD_ERRORS, OSError) as err:
        if isinstance(err, OSError) and not isinstance(err, BUILD_ERRORS):
            if not is_disk_full(err):
                raise
            err = DiskFull(location.display)
        print(f"error: build {args.name}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    for line in summary.get("changes", []):  # what was changed in the user's data
        print(f"build {args.name}: changed {line}", file=sys.stderr)
    print(json.dumps({"store": location.display, **summary}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

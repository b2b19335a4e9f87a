"""Command line of the store builders (see ``pipelines.data.builders``)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from pipelines.data.builders import BUILDERS
from pipelines.data.stores import StoreError, make_location


def main(argv: list[str] | None = None) -> int:
    """Parse ``<name> --out URL ...`` and run the builder; errors exit with status 2."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.builders", description=__doc__)
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
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    location = make_location(args.out, endpoint_url=args.endpoint_url)
    try:
        summary = modules[args.name].build(args, location)
    except (StoreError, FileNotFoundError, ValueError) as err:
        print(f"build {args.name} failed: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"store": location.display, **summary}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

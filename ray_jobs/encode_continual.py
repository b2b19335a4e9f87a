"""Continual encoding job: encode the new time steps of a field store with MCL-NF modules.

Usage::

    python ray_jobs/encode_continual.py --run-dir runs/mcl_nf_ncep \
        --store runs/data/ncep_air.zarr --out runs/encodings/ncep_air
    # later, after new time steps were appended to the store: the same command encodes
    # only the new ones (already encoded time steps are skipped)

Extra ``key=value`` arguments override the run's config (``method.mcl.encode_steps=64``).
The encoding runs as one Ray task (``--address`` or ``RAY_ADDRESS``, else a local
instance) by default, in this process with ``--local``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.codecs.continual import encode_continual, encode_continual_on_ray
from ray_jobs.common import parse_job_args, run_main


def main(argv: list[str]) -> int:
    """Parse arguments and encode; user errors propagate to ``run_main``."""
    parser = argparse.ArgumentParser(
        prog="mia-inr encode-continual",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, type=Path, help="meta-trained mcl_nf run")
    parser.add_argument("--store", required=True, help="field store URL (local or s3://)")
    parser.add_argument("--out", required=True, type=Path, help="encoding directory")
    parser.add_argument("--modality", default=None, help="variable (default: the run's)")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")
    parser.add_argument("--limit", type=int, default=0, help="encode at most N new steps")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = parse_job_args(parser, argv)
    kwargs = dict(
        modality=args.modality,
        endpoint_url=args.endpoint_url,
        overrides=args.overrides,
        limit=args.limit,
    )
    if args.local:
        encode_continual(args.run_dir, args.store, args.out, **kwargs)
    else:
        encode_continual_on_ray(args.run_dir, args.store, args.out, args.address, **kwargs)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

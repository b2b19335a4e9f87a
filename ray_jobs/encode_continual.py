"""Continual encoding job: encode the new time steps of a field store with MCL-NF modules.

Usage::

    python ray_jobs/encode_continual.py --run-dir runs/mcl_nf_ncep \
        --store runs/data/ncep_air.zarr --out runs/encodings/ncep_air
    # later, after new time steps were appended to the store: the same command encodes
    # only the new ones (already encoded time steps are skipped)

Extra ``key=value`` arguments override the run's config (``method.mcl.encode_steps=64``).
With ``--ray`` the encoding runs as one Ray task on the current cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and encode; bad input exits with status 2 and a one-line reason."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, type=Path, help="meta-trained mcl_nf run")
    parser.add_argument("--store", required=True, help="field store URL (local or s3://)")
    parser.add_argument("--out", required=True, type=Path, help="encoding directory")
    parser.add_argument("--modality", default=None, help="variable (default: the run's)")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")
    parser.add_argument("--limit", type=int, default=0, help="encode at most N new steps")
    parser.add_argument("--ray", action="store_true", help="run as one Ray task")
    parser.add_argument("--address", default=None, help="Ray address (with --ray)")
    parser.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = parser.parse_args(argv)
    from mia_core.config import ConfigError
    from pipelines.codecs.continual import encode_continual, encode_continual_on_ray
    from pipelines.data.stores import StoreError

    kwargs = dict(
        modality=args.modality,
        endpoint_url=args.endpoint_url,
        overrides=args.overrides,
        limit=args.limit,
    )
    try:
        if args.ray:
            encode_continual_on_ray(args.run_dir, args.store, args.out, args.address, **kwargs)
        else:
            encode_continual(args.run_dir, args.store, args.out, **kwargs)
    except (ConfigError, StoreError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

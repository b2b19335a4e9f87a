r"""Batch-encode a field store's time steps with a meta-trained INR, or decode the codes.

Usage (local Ray, or inside ``ray job submit``)::

    python ray_jobs/encode.py encode --store runs/data/gray_scott.zarr \\
        --checkpoint runs/meta_inr_gray_scott --out runs/codes/gray_scott.zarr
    python ray_jobs/encode.py decode runs/codes/gray_scott.zarr --out decoded.nc \\
        --time 10:20 --resolution 64x64x64

A rerun of ``encode`` with the same output resumes: steps already done are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="field store URL (local path or s3://)")
    p.add_argument("--checkpoint", required=True, help="meta-model run directory or .pt file")
    p.add_argument("--out", required=True, help="code store URL (local path or s3://)")
    p.add_argument("--config", default=None, help="the run's config (default: beside the run)")
    p.add_argument("--steps", type=int, default=16, help="adaptation steps K per time step")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of adam/sgd")
    p.add_argument(
        "--optimizer",
        default="rule",
        choices=("rule", "adam", "sgd"),
        help="rule: the meta-trained inner-loop update (default)",
    )
    p.add_argument("--points-per-step", type=int, default=0, help="sampled points (0: all)")
    p.add_argument("--batch-size", type=int, default=0, help="time steps adapted together")
    p.add_argument("--chunk", type=int, default=0, help="code chunk (0: the store's time chunk)")
    p.add_argument("--time", default="", help="START:STOP time indices (default: all)")
    p.add_argument("--code-dtype", default="float32", choices=("float32", "float16"))
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")
    p.add_argument("--local", action="store_true", help="one process, no Ray")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS/local)")
    p.add_argument("--concurrency", type=int, default=2, help="encoder actors")
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="discard an existing code store")
    p.add_argument("--tracking-uri", default="", help="MLflow URI (default: the run's)")
    p.add_argument("--no-progress", action="store_true")


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("codes", help="code store URL")
    p.add_argument("--out", required=True, help="output: *.nc (netCDF) or a Zarr URL")
    p.add_argument("--time", default="", help="index, START:STOP or i,j,k (default: all)")
    p.add_argument("--resolution", default="", help="grid such as 46x90 (default: original)")
    p.add_argument("--variables", default="", help="comma separated (default: all)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; bad input exits with status 2 and a one-line reason."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _encode_args(sub.add_parser("encode", help="encode a field store"))
    _decode_args(sub.add_parser("decode", help="reconstruct time steps from codes"))
    args = parser.parse_args(argv)

    from pipelines.codecs.decode import decode_to, parse_resolution, parse_times
    from pipelines.codecs.encode import EncodeOptions, run_encode
    from pipelines.codecs.meta_model import EncodeError
    from pipelines.data.stores import StoreError

    try:
        if args.command == "decode":
            ds = decode_to(
                args.codes,
                args.out,
                parse_times(args.time),
                parse_resolution(args.resolution),
                [v for v in args.variables.split(",") if v] or None,
                args.endpoint_url,
            )
            print(f"wrote {args.out}: {dict(ds.sizes)}")
            return 0
        time_range = None
        if args.time:
            a, b = args.time.split(":")
            time_range = (int(a), int(b))
        run_encode(
            EncodeOptions(
                store=args.store,
                checkpoint=args.checkpoint,
                out=args.out,
                config=args.config,
                steps=args.steps,
                lr=args.lr,
                optimizer=args.optimizer,
                points_per_step=args.points_per_step,
                batch_size=args.batch_size,
                chunk=args.chunk,
                time_range=time_range,
                code_dtype=args.code_dtype,
                endpoint_url=args.endpoint_url,
                use_ray=not args.local,
                address=args.address,
                concurrency=args.concurrency,
                cpus_per_actor=args.cpus_per_actor,
                device=args.device,
                seed=args.seed,
                overwrite=args.overwrite,
                tracking_uri=args.tracking_uri,
                progress=not args.no_progress,
            )
        )
    except (EncodeError, StoreError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

r"""Batch-encode a field store's time steps with a meta-trained INR, or decode the codes.

Usage (local Ray, or inside ``ray job submit`` as ``python ray_jobs/encode.py ...``)::

    mia-inr encode --config configs/encode/default.yaml \
        --store runs/data/gray_scott.zarr --checkpoint runs/meta_inr_gray_scott \
        --out runs/codes/gray_scott.zarr encode.steps=32 encode.time_range=[0,16]
    mia-inr encode --config configs/encode/gray_scott.yaml --local
    mia-inr decode runs/codes/gray_scott.zarr --out decoded.nc \
        --time 10:20 --resolution 64x64x64
    mia-inr encode report --codes runs/codes/gray_scott.zarr \
        --results benchmarks/results/encode.json --name gray_scott --readme

``encode`` takes an ``encode:`` spec file (default: the spec's defaults, as in
``configs/encode/default.yaml``) and ``encode.<key>=value`` overrides; ``--store``,
``--checkpoint`` and ``--out`` are short for ``encode.store=...`` etc. It runs an actor
pool on Ray (``--address`` or ``RAY_ADDRESS``, else a local instance) unless ``--local``.
A rerun with the same output resumes: steps already done are skipped (``--overwrite``, or
its alias ``--no-resume``, starts afresh; an output that is not a code store is refused
without it). ``mia-inr decode`` keeps its few flags (no spec file): the codes, ``--out``
(``.nc``: netCDF; ``.zarr`` or no suffix: Zarr), ``--overwrite``, ``--complete`` and what
to reconstruct. ``mia-inr encode report`` measures a code store against fitting from
scratch and against ZFP / SZ3 (:mod:`pipelines.codecs.report`); with ``--codes``
repeated (code stores of one field store at several code sizes and bit depths) it runs
the rate-distortion study instead (:mod:`pipelines.codecs.rd_run`; ``--docs`` regenerates
its page). ``--readme`` regenerates the results JSON's table in ``docs/encoding.md``.
``python ray_jobs/encode.py`` takes ``report`` or ``decode`` as its first argument for
those (``encode``, the default, may be given too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.codecs.decode import decode_to
from pipelines.codecs.decode_args import parse_resolution, parse_times
from pipelines.codecs.encode import run_encode
from pipelines.codecs.encode_spec import load_encode_spec
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rd_run import RDSpec, run_rd_report, write_page
from pipelines.codecs.report import ReportSpec, readme_block, run_report
from pipelines.reports.readme_blocks import write_block
from ray_jobs.common import parse_job_args, run_main

ALIASES = ("store", "checkpoint", "out", "model")  # --store X == encode.store=X
SUBCOMMANDS = ("encode", "decode", "report")
RESULTS = "benchmarks/results/encode.json"
RD_RESULTS = "benchmarks/results/rate_distortion.json"
RD_DOCS = "docs/results/rate_distortion.md"
PAGE = "docs/encoding.md"  # the page with the results JSON's table (--readme)


def _encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="encode spec YAML (see configs/encode/)")
    p.add_argument("--store", help="field store URL (= encode.store)")
    p.add_argument("--checkpoint", help="meta-model run directory or .pt (= encode.checkpoint)")
    p.add_argument("--out", help="code store URL (= encode.out)")
    p.add_argument("--model", help="MLflow model URI, e.g. models:/NAME/1 (= encode.model)")
    p.add_argument("--local", action="store_true", help="one process, no Ray")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS/local)")
    p.add_argument(
        "--overwrite",
        "--no-resume",
        action="store_true",
        help="start afresh, replacing whatever is at --out (default: resume its encoding)",
    )
    p.add_argument("overrides", nargs="*", help="encode.key=value overrides")


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("codes", help="code store URL")
    p.add_argument("--out", required=True, help="output: *.nc (netCDF), *.zarr or no suffix")
    p.add_argument("--overwrite", action="store_true", help="replace whatever is at --out")
    p.add_argument("--complete", action="store_true", help="refuse codes not fully encoded")
    p.add_argument(
        "--time", default="", help="index, START:STOP, i,j,k or a date 2006-04-16 (default: all)"
    )
    p.add_argument(
        "--fill",
        action="store_true",
        help="the network's values where the source had none (default: NaN there, as input)",
    )
    p.add_argument("--resolution", default="", help="grid such as 46x90 (default: original)")
    p.add_argument("--variables", default="", help="comma separated (default: all)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--codes",
        action="append",
        default=[],
        help="code store URL; repeat it (code sizes, bit depths of one field store) for the "
        "rate-distortion study (omit with --readme only)",
    )
    p.add_argument("--simulated", action="store_true", help="rate-distortion: simulated data")
    p.add_argument(
        "--docs", default="", help=f"rate-distortion: regenerate this page (e.g. {RD_DOCS})"
    )
    p.add_argument("--store", default="", help="field store (default: the one encoded)")
    p.add_argument("--out-dir", default="", help="default runs/encode_report/<codes name>")
    p.add_argument("--frames", type=int, default=8, help="held-out time steps compared")
    p.add_argument("--lrs", type=_floats, default=(3e-4, 1e-3, 3e-3), help="baseline Adam lrs")
    p.add_argument("--targets", type=_floats, default=(30.0, 35.0, 40.0), help="PSNRs (dB)")
    p.add_argument("--headline", type=float, default=35.0, help="target for --results")
    p.add_argument("--max-steps", type=int, default=2000, help="baseline step budget")
    p.add_argument(
        "--eval-every", type=int, default=1, help="PSNR check period of both sides (1: every step)"
    )
    p.add_argument("--compressors", default="zfp,sz3", help="comma separated: zfp, sz3")
    p.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--endpoint-url", default="", help="S3-compatible endpoint")
    p.add_argument("--results", default="", help=f"results JSON to add to (e.g. {RESULTS})")
    p.add_argument("--name", default="", help="dataset name in --results")
    p.add_argument("--readme", action="store_true", help=f"regenerate the table in {PAGE}")


def _rate_distortion(args: argparse.Namespace) -> int:
    spec = RDSpec(
        args.codes, args.name or Path(args.codes[0].rstrip("/")).stem, not args.simulated,
        args.store, args.out_dir, args.frames, args.lrs, args.max_steps, threads=args.threads,
        results_json=args.results,
    )  # fmt: skip
    run_rd_report(spec)
    if args.docs:
        print(f"wrote {write_page(args.results or RD_RESULTS, args.docs)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    if len(args.codes) > 1:
        return _rate_distortion(args)
    if args.codes:
        spec = ReportSpec(
            args.codes[0], args.store, args.out_dir, args.frames, args.lrs, args.targets,
            args.headline, args.max_steps, args.eval_every,
            tuple(c for c in args.compressors.split(",") if c), args.threads, args.seed,
            args.endpoint_url, args.results, args.name,
        )  # fmt: skip
        run_report(spec)
    elif not args.readme:
        raise EncodeError("report needs --codes (or --readme to regenerate the table)")
    if args.readme:
        results = Path(args.results or RESULTS)
        if not results.exists():
            raise FileNotFoundError(f"{results}: no results JSON (run a report with --results)")
        block = readme_block(json.loads(results.read_text()), str(results))
        print(f"updated {write_block(PAGE, results.stem, block)}")
    return 0


def _parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``mia-inr encode``, ``mia-inr decode`` or ``mia-inr encode report``."""
    if command == "decode":
        p = argparse.ArgumentParser(
            prog="mia-inr decode", description="Reconstruct time steps from a code store."
        )
        _decode_args(p)
    elif command == "report":
        p = argparse.ArgumentParser(
            prog="mia-inr encode report",
            description="Measure a code store against fitting from scratch and ZFP / SZ3, or "
            "(--codes repeated) run the rate-distortion study.",
        )
        _report_args(p)
    else:
        p = argparse.ArgumentParser(
            prog="mia-inr encode",
            description=__doc__,
            epilog="see also: mia-inr encode report --help (a code store against baselines)\n"
            "          mia-inr decode --help (time steps from codes)",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _encode_args(p)
    p.set_defaults(command=command)
    return p


def main(argv: list[str]) -> int:
    """Parse arguments and run; user errors propagate to :func:`ray_jobs.common.run_main`.

    ``argv[0]`` picks the sub-command (``encode``, ``decode``, ``report``; else
    ``encode``). ``decode`` here is the hidden alias of ``mia-inr decode``
    (``mia-inr encode decode ...`` and ``python ray_jobs/encode.py decode ...`` run it).
    """
    argv = list(argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "encode"
    args = parse_job_args(_parser(command), argv)
    if args.command == "report":
        return _report(args)
    if args.command == "decode":
        ds = decode_to(
            args.codes,
            args.out,
            parse_times(args.time),
            parse_resolution(args.resolution),
            [v for v in args.variables.split(",") if v] or None,
            args.endpoint_url,
            overwrite=args.overwrite,
            complete=args.complete,
            fill=args.fill,
        )
        print(f"wrote {args.out}: {dict(ds.sizes)}")
        return 0
    # JSON strings are YAML strings: a URL or path reaches the spec exactly as typed.
    aliases = [f"encode.{k}={json.dumps(getattr(args, k))}" for k in ALIASES if getattr(args, k)]
    aliases += ["encode.overwrite=true"] if args.overwrite else []
    spec = load_encode_spec(args.config, [*aliases, *args.overrides])
    run_encode(spec, local=args.local, address=args.address)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

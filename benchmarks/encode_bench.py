"""Meta-INR batch encoding vs fitting from scratch (a script, not a test).

Run ``python benchmarks/encode_bench.py`` (minutes on 2 cores). In one run it

1. simulates a volume store with the ``volumes`` builder unless it exists: Gray-Scott
   (``--size``^3 grid, ``--frames`` time steps, variables ``u, v``) or, with
   ``--simulate abc-flow``, the smooth time-modulated ABC flow (``u, v, w``);
2. meta-pretrains Meta-INR on it through the training job (single process,
   ``configs/experiments/meta_inr_gray_scott.yaml``: strides 4 and 2), unless
   ``--checkpoint`` is given;
3. encodes every time step with the Ray Data encoding job (``--local``: one process) and
   reports time steps/s, PSNR and the compression ratio;
4. runs ``mia-inr encode report`` on the codes (:mod:`pipelines.codecs.report`): the same
   SIREN fitted from scratch with each of ``--baseline-lrs`` on ``--baseline-timesteps``
   held-out time steps, time- and step-speedups to 30 / 35 / 40 dB, ZFP and SZ3 at the
   codes' PSNR, ``report.md``/``report.json`` and plots under ``--out-dir``/report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mia_core.config import load_config  # noqa: E402
from pipelines.codecs.encode import run_encode  # noqa: E402
from pipelines.codecs.encode_spec import EncodeSpec  # noqa: E402
from pipelines.codecs.report import ReportSpec, run_report  # noqa: E402
from pipelines.codecs.speed_rows import speed_at  # noqa: E402
from pipelines.data.stores import make_location, open_store  # noqa: E402
from pipelines.jobs import train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "encode_bench")
    p.add_argument("--simulate", default="gray-scott", choices=("gray-scott", "abc-flow"))
    p.add_argument(
        "--size", type=int, default=32, help="Gray-Scott grid side (>= 32 keeps patterns)"
    )
    p.add_argument("--frames", type=int, default=32, help="time steps")
    p.add_argument("--chunk", type=int, default=8, help="time steps per code chunk / work unit")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=3, help="sine layers (+ linear head)")
    p.add_argument(
        "--omega0",
        type=float,
        default=10.0,
        help="SIREN omega0; 30 aliases between the points of a stride-4 subsample of 32^3",
    )
    p.add_argument("--spatial-stride", type=int, default=4, help="lambda_s of meta-pretraining")
    p.add_argument("--meta-steps", type=int, default=100, help="meta-pretraining steps")
    p.add_argument("--outer-lr", type=float, default=1e-3, help="meta-pretraining outer lr")
    p.add_argument("--checkpoint", default=None, help="skip meta-pretraining: use this run")
    p.add_argument("--steps", type=int, default=16, help="encoder steps K")
    p.add_argument("--optimizer", default="rule", choices=("rule", "adam", "sgd"))
    p.add_argument("--lr", type=float, default=1e-3, help="encoder lr (adam/sgd)")
    p.add_argument(
        "--baseline-lrs",
        type=float,
        nargs="+",
        default=[3e-4, 1e-3, 3e-3],
        help="from-scratch Adam lrs (the fastest per target is used)",
    )
    p.add_argument("--points-per-step", type=int, default=4096)
    p.add_argument("--baseline-timesteps", type=int, default=8)
    p.add_argument("--max-baseline-steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=1, help="PSNR check period (1: every step)")
    p.add_argument("--local", action="store_true", help="encode in one process, no Ray")
    p.add_argument("--threads", type=int, default=1, help="torch threads (single process)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out_dir.resolve()
    name = args.simulate.replace("-", "_")
    store = out / "data" / f"{name}_{args.size}x{args.frames}.zarr"
    if not store.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.data.builders",
                "volumes",
                "--simulate",
                args.simulate,
            ]
            + ["--size", str(args.size), "--steps", str(args.frames), "--out", str(store)],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    checkpoint = args.checkpoint
    meta_s = float("nan")
    if checkpoint is None:
        cfg = load_config(
            ROOT / "configs/experiments/meta_inr_gray_scott.yaml",
            [
                f"data.store={store}",
                f"data.name={name}",
                f"data.modalities={json.dumps(open_store(make_location(str(store))).modalities)}",
                f"model.width={args.width}",
                f"model.depth={args.depth}",
                f"model.omega0={args.omega0}",
                f"data.spatial_stride={args.spatial_stride}",
                f"run.steps={args.meta_steps}",
                f"run.outer_lr={args.outer_lr}",
                f"run.out_dir={out}",
                f"run.name=meta_inr_{name}_{args.size}_w{args.width}d{args.depth}o{args.omega0:g}",
                f"run.eval_every={args.meta_steps}",
                f"run.checkpoint_every={args.meta_steps}",
            ],
        )
        t0 = time.perf_counter()
        res = train(cfg, local=True, log=lambda s: print(f"  [meta] {s}"))
        meta_s = time.perf_counter() - t0
        checkpoint = str(res.run_dir)
    codes = out / "codes" / f"{name}_{args.size}.zarr"
    summary = run_encode(
        EncodeSpec(
            store=str(store),
            checkpoint=checkpoint,
            out=str(codes),
            steps=args.steps,
            lr=args.lr,
            optimizer=args.optimizer,
            points_per_step=args.points_per_step,
            chunk=args.chunk,
            overwrite=True,
            progress=False,
        ),
        local=args.local,
    )
    report = run_report(
        ReportSpec(
            str(codes),
            out_dir=str(out / "report"),
            frames=args.baseline_timesteps,
            lrs=tuple(args.baseline_lrs),
            max_steps=args.max_baseline_steps,
            eval_every=args.eval_every,
            threads=args.threads,
        )
    )
    rows = {
        f"{t['target_db']:g} dB": speed_at(report["comparison"], t["target_db"])
        for t in report["comparison"]["targets"]
    }
    print(
        json.dumps(
            {
                "timesteps_per_s": round(summary.timesteps_per_s, 3),
                "psnr_mean": round(summary.psnr["mean"], 2),
                "compression_codes": round(summary.compression_codes, 2),
                "meta_pretraining_s": round(meta_s, 1),
                "zfp_sz3_at_codes_psnr": {
                    r["name"]: round(r["at_psnr"][report["codes_psnr_db"]], 2)
                    for r in report["rate_distortion"]
                },
                "targets": rows,
                "report": str(out / "report" / "report.md"),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

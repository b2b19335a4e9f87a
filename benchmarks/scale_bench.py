"""Scale benchmark (issue 32): build, meta-train, encode and decode ERA5-like fields and volumes.

Sizes: 4 variables on 46x90, 181x360 and 721x1440 lat/lon grids (``era5``) and one
variable on 64^3, 128^3 and 256^3 volumes (``volume``). Inputs have a realistic energy
spectrum (k^-3 then k^-5/3, ``benchmarks/_spectral_fields.py``) and evolve in time; they
are written step by step (``benchmarks/_scale_inputs.py``) and reused by later runs of the
same size and steps. Per size, each stage is a fresh ``mia-inr`` process
(``benchmarks/_scale_stages.py``): build (s/step, peak RSS), train the family's patch
config (``configs/experiments/meta_inr_patch_{era5,volume}.yaml``; patches/s, peak RSS),
encode held-out steps (steps/s per core, peak RSS), decode them (s/step) and the PSNR
against the input (``benchmarks/_scale_psnr.py``: area-weighted on lat/lon, overall, at
patch seams and inside). A failed stage is ``null`` with a ``note``; the run goes on.

    python benchmarks/scale_bench.py --sizes all --family both          # the full run
    python benchmarks/scale_bench.py --family era5 --sizes 721x1440     # one size
    python benchmarks/scale_bench.py --sizes small --train-steps 8      # smoke run
    python benchmarks/scale_bench.py --render-only                      # page from the JSON

Rows are merged into ``--json`` by (family, grid) and ``--markdown`` is regenerated from
the whole JSON (``benchmarks/_scale_report.py``). Exit status 1 when a stage failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _scale_report as report  # noqa: E402
from benchmarks import _scale_stages as stages  # noqa: E402
from benchmarks._scale_inputs import write_era5, write_volume  # noqa: E402
from benchmarks._scale_psnr import compare  # noqa: E402
from benchmarks._scale_run import render_only, run_stage  # noqa: E402
from mia_core.runtime import cpu_name  # noqa: E402

SIZES = {
    "era5": [(46, 90), (181, 360), (721, 1440)],
    "volume": [(64, 64, 64), (128, 128, 128), (256, 256, 256)],
}
# Time steps per size: as many as a 2-core, ~16 GB machine builds and stores in minutes
# (721x1440 x 4 variables x 48 steps is 800 MB of float32; 256^3 x 20 is 1.3 GB).
STEPS = {
    (46, 90): 96,
    (181, 360): 96,
    (721, 1440): 48,
    (64, 64, 64): 40,
    (128, 128, 128): 24,
    (256, 256, 256): 20,
}
KEYS = report.RATIO_KEYS  # the row's numbers, each also shown as a ratio to the smallest size

STAGE_KEYS = {
    "build": KEYS[:2],
    "train": KEYS[2:4],
    "encode": KEYS[4:6],
    "decode": KEYS[7:],
    "psnr": KEYS[6:7],
}


def parse_sizes(text: str, family: str) -> list[tuple[str, tuple[int, ...]]]:
    """``small``, ``all`` or a list such as ``46x90,721x1440,64,256x256x256``."""
    fams = ("era5", "volume") if family == "both" else (family,)
    if text in ("small", "all"):
        return [(f, g) for f in fams for g in (SIZES[f][:1] if text == "small" else SIZES[f])]
    out = []
    for tok in text.replace("^3", "").split(","):
        try:
            dims = tuple(int(v) for v in tok.strip().split("x"))
        except ValueError:
            dims = ()
        fam = "era5" if len(dims) == 2 else "volume"
        dims = dims * 3 if len(dims) == 1 else dims
        if len(dims) not in (2, 3) or min(dims) < 2:
            print(f"error: --sizes: {tok!r} is not NLATxNLON or N (a volume N^3)", file=sys.stderr)
            raise SystemExit(2)
        if fam in fams:
            out.append((fam, dims))
    return out


def prepare_input(case: stages.Case, seed: int) -> float:
    """Write the case's netCDF unless the same one is there; seconds spent."""
    marker = case.path("input.json")
    want = {"grid": list(case.grid), "steps": case.steps, "seed": seed}
    if (
        case.path("input.nc").exists()
        and marker.exists()
        and json.loads(marker.read_text()) == want
    ):
        return 0.0
    t0 = time.perf_counter()
    if case.family == "era5":
        write_era5(case.path("input.nc"), *case.grid, case.steps, seed)
    else:
        write_volume(case.path("input.nc"), case.grid[0], case.steps, seed)
    marker.write_text(json.dumps(want))
    return time.perf_counter() - t0


def run_case(case: stages.Case, s: stages.Settings) -> dict:
    """Every stage of one size; the row of the results JSON."""
    row = {
        "family": case.family,
        "grid": list(case.grid),
        "variables": len(case.variables),
        "points": math.prod(case.grid),
        "time_steps": case.steps,
        "patch": list(case.patch),
        "patch_points": math.prod(case.patch),
        **dict.fromkeys(KEYS),
    }
    notes: list[str] = []

    def stage(name: str, fn) -> bool:
        return run_stage(name, fn, row, notes, KEYS, on_error=STAGE_KEYS[name])

    chain = (
        ("build", lambda: stages.build(case, s)),
        ("train", lambda: stages.train(case, s)),
        ("encode", lambda: stages.encode(case, s)),
        ("decode", lambda: stages.decode(case, s, row["time_range"])),
        ("psnr", lambda: _psnr(case, row["time_range"][0])),
    )
    for i, (name, fn) in enumerate(chain):
        if not stage(name, fn):
            if i + 1 < len(chain):
                notes.append(f"not run: {', '.join(n for n, _ in chain[i + 1 :])}")
            break
    row["note"] = "; ".join(notes)
    return row


def _psnr(case: stages.Case, first: int) -> dict:
    try:
        return {
            **compare(
                case.path("decoded.nc"), case.path("input.nc"), case.family, first, case.patch
            ),
            "notes": [],
        }
    except (OSError, ValueError, KeyError) as err:
        return {"psnr_db": None, "notes": [f"psnr: {type(err).__name__}: {err}"[:240]]}


def machine(s: stages.Settings) -> str:
    """CPU, cores given to the encoder, device (the GPU's name on CUDA)."""
    text = f"{cpu_name()}, {os.cpu_count()} CPUs ({s.cores} threads for encode), device {s.device}"
    if s.device.startswith("cuda"):
        import torch

        text += f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else " (none)"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sizes, merge their rows into the JSON, regenerate the page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small", help="small, all, or e.g. 46x90,721x1440,256")
    ap.add_argument("--family", choices=("era5", "volume", "both"), default="both")
    ap.add_argument("--steps-build", type=int, default=None, help="time steps of every input")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--encode-steps", type=int, default=4, help="held-out steps encoded")
    ap.add_argument("--work", default="runs/scale_bench", help="inputs, stores, runs, codes")
    ap.add_argument("--json", default="benchmarks/results/scale.json")
    ap.add_argument("--markdown", default="docs/results/scale.md")
    ap.add_argument("--device", default="cpu", help="run.device / encode.device (cuda)")
    ap.add_argument(
        "--cores",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads of the encoder (OMP_NUM_THREADS); steps/s are per these",
    )
    ap.add_argument("--config", default=None, help="training config instead of the family's")
    ap.add_argument("--train-set", action="append", default=[], help="train override key=value")
    ap.add_argument("--encode-set", action="append", default=[], help="encode.key=value")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean", action="store_true", help="delete each size's files when done")
    ap.add_argument("--render-only", action="store_true", help="only regenerate --markdown")
    args = ap.parse_args(argv)
    out_json, out_md = Path(args.json), Path(args.markdown)
    if args.render_only:
        return render_only(report.render, args.json, args.markdown)
    s = stages.Settings(
        Path(args.config) if args.config else None,
        args.train_steps,
        args.encode_steps,
        args.cores,
        args.device,
        args.train_set,
        args.encode_set,
        args.timeout,
    )
    work = Path(args.work).resolve()
    rows, failed = [], False
    for fam, grid in parse_sizes(args.sizes, args.family):
        steps = args.steps_build or STEPS.get(grid, 24)
        case = stages.Case(fam, grid, steps, work, stages.PATCH[fam])
        print(f"{case.tag}: {steps} time steps", flush=True)
        written = prepare_input(case, args.seed)
        print(f"  input   {written:7.1f} s  {case.path('input.nc')}", flush=True)
        row = {**run_case(case, s), "machine": machine(s)}
        failed |= any(row[k] is None for k in KEYS)
        rows.append(row)
        result = report.merge(out_json, machine(s), [row])
        report.save(out_json, result)
        out_md.parent.mkdir(parents=True, exist_ok=True)
        out_md.write_text(report.render(result, args.json))
        if args.clean:
            shutil.rmtree(work / case.tag, ignore_errors=True)
    print(f"wrote {out_json} and {out_md} ({len(rows)} rows)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

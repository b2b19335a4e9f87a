"""Patch recipe choice (issue 32): local vs global coordinates, heads vs Reptile, on validation.

Issue 32 asks that a patch's position reach the model ("global coordinates as input, or
per-patch codes on a shared network; choose by measurement") and settings are chosen on
the VALIDATION split. On one ERA5-like case (default 181x360, 4 variables; input netCDF
and patch store made as ``benchmarks/scale_bench.py`` makes them, reused from its
``--work`` folder when there) three variants are meta-trained ``--train-steps`` steps:

* ``heads_local``: ``configs/experiments/meta_inr_patch_era5.yaml`` (closed-form ridge
  heads, per-patch codes on a shared network, local patch frame);
* ``heads_global``: the same with ``data.patch_coords=global`` (global coordinates as
  input; the encoder refuses such models, so it is scored by validation only);
* ``reptile_local``: ``configs/experiments/meta_inr_patch_era5_reptile.yaml`` (K = 16 SGD
  steps of all weights).

Every variant is scored by its training run's final validation metric (MLflow
``val_nmse``, also as a PSNR); the local ones also encode the first ``--encode-steps``
validation steps (``configs/encode/patch_era5.yaml``; Reptile with ``encode.steps=16
encode.batch_size=64``), which are decoded and compared area-weighted with the input.
Stages are the scale benchmark's (``benchmarks/_scale_stages.py``); a failed stage is
``null`` with a note and the run goes on.

    python benchmarks/patch_choice_bench.py --size 181x360 --train-steps 150 --encode-steps 4
    python benchmarks/patch_choice_bench.py --work runs/scale_bench   # scale_bench's files
    python benchmarks/patch_choice_bench.py --render-only       # the page from the JSON

Writes ``--json`` and the page ``--markdown`` (``benchmarks/_patch_choice_report.py``).
Exit status 1 when a stage failed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _patch_choice_report as page  # noqa: E402
from benchmarks import _scale_stages as stages  # noqa: E402
from benchmarks._scale_psnr import compare  # noqa: E402
from benchmarks._scale_report import save  # noqa: E402
from benchmarks._scale_run import render_only, run_stage  # noqa: E402
from benchmarks.scale_bench import STEPS, machine, prepare_input  # noqa: E402

HEADS = ROOT / "configs/experiments/meta_inr_patch_era5.yaml"
REPTILE = ROOT / "configs/experiments/meta_inr_patch_era5_reptile.yaml"
SHARED = ("input.nc", "input.json", "store.zarr", "logs/build.err", "logs/build_1step.err")
VALIDATION = re.compile(r"^step\s+(\d+) validation .*\bnmse ([0-9.eE+-]+|nan|inf)")
KEYS = (
    "val_metric",
    "val_psnr_db",
    "decoded_psnr_db",
    "encode_steps_per_s_per_core",
    "compression_codes",
    "code_bytes_per_step",
    "train_patches_per_s",
)


@dataclass(frozen=True)
class Variant:
    """One recipe: its training config and overrides, and how it encodes (if it can)."""

    name: str
    config: Path
    train_set: tuple[str, ...] = ()
    encode_set: tuple[str, ...] | None = ()  # None: the encoder refuses this model


VARIANTS = (
    Variant("heads_local", HEADS),
    Variant("heads_global", HEADS, ("data.patch_coords=global",), None),
    Variant("reptile_local", REPTILE, (), ("encode.steps=16", "encode.batch_size=64")),
)


@dataclass
class VariantCase(stages.Case):
    """The scale benchmark's case with one variant's runs, codes and logs apart.

    The input, the store and the build logs are the case's own (shared with
    ``scale_bench.py``); everything else lives under ``<case>/patch_choice/<variant>/``.
    """

    variant: str = ""
    started: float = 0.0  # Unix time its training run started (MLflow values from then on)

    def path(self, name: str) -> Path:
        """A file of the case (shared) or of this variant."""
        if name in SHARED or not self.variant:
            return super().path(name)
        return self.work / self.tag / "patch_choice" / self.variant / name


def parse_size(text: str) -> tuple[int, int]:
    """``NLATxNLON`` (a lat/lon grid); exit status 2 on anything else."""
    try:
        nlat, nlon = (int(v) for v in text.lower().split("x"))
    except ValueError:
        nlat = nlon = 0
    if min(nlat, nlon) < 2:
        print(f"error: --size: {text!r} is not NLATxNLON (e.g. 181x360)", file=sys.stderr)
        raise SystemExit(2)
    return nlat, nlon


def store_ready(case: stages.Case) -> bool:
    """Whether the case's store is a finished build of all its time steps."""
    try:
        group = zarr.open_group(str(case.path("store.zarr")), mode="r")
        return int(group["split"].shape[0]) == case.steps
    except Exception:  # noqa: BLE001 - missing, partial or foreign: build it again
        return False


def prepare_store(case: stages.Case, s: stages.Settings, seed: int) -> list[str]:
    """Write the input and build the store unless both are there; notes (empty: built)."""
    written = prepare_input(case, seed)
    if written == 0.0 and store_ready(case):
        return [f"input and store reused from {case.path('store.zarr').parent}"]
    got = stages.build(case, s)
    if got.get("build_s_per_step") is None:
        raise RuntimeError("; ".join(got.get("notes", [])) or "build failed")
    return []


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def validation(case: VariantCase) -> dict[str, Any]:
    """The run's final validation nmse (MLflow, else its printed lines) and as PSNR.

    Field stores have a per-signal scale of 1, so ``val_nmse`` is the MSE of the store's
    min-max normalised values: PSNR = -10 log10(nmse) at a range of 1, for every variant.
    """
    runs = case.path("runs")
    points = stages.mlflow_metric(runs / case.tag, runs / "mlflow.db", "val_nmse", case.started)
    if not points:
        out = case.path("logs/train.out")
        text = out.read_text(errors="replace") if out.exists() else ""
        points = [(int(m[1]), float(m[2])) for m in map(VALIDATION.match, text.splitlines()) if m]
    if not points:
        raise ValueError("no validation metric logged by the training run")
    nmse = _finite(points[-1][1])
    psnr = -10.0 * math.log10(nmse) if nmse and nmse > 0 else None
    return {"val_metric": nmse, "val_psnr_db": psnr, "val_step": points[-1][0]}


def code_size(case: VariantCase) -> dict[str, Any]:
    """Compression (raw float32 / code bytes) and code bytes per step from the code store."""
    attrs = dict(zarr.open_group(str(case.path("codes.zarr")), mode="r").attrs["mia_codes"])
    ratio = float(attrs["summary"]["compression_codes"])
    return {
        "compression_codes": _finite(ratio),
        "code_bytes_per_step": float(attrs["raw_bytes_per_step"]) / ratio if ratio else None,
    }


def run_variant(base: stages.Case, v: Variant, args: argparse.Namespace) -> dict[str, Any]:
    """Train, validate and (local variants) encode, decode and compare one variant."""
    case = VariantCase(base.family, base.grid, base.steps, base.work, base.patch, variant=v.name)
    s = stages.Settings(
        v.config,
        args.train_steps,
        args.encode_steps,
        args.cores,
        args.device,
        list(v.train_set),
        list(v.encode_set or ()),
        args.timeout,
    )
    row: dict[str, Any] = {"variant": v.name, **dict.fromkeys(KEYS)}
    notes: list[str] = []

    def stage(name: str, fn) -> bool:
        return run_stage(name, fn, row, notes, KEYS, label=v.name)

    chain = [
        ("train", lambda: _train(case, s)),
        ("validate", lambda: validation(case)),
    ]
    if v.encode_set is None:
        notes.append(
            "encode: not applicable (the encoder refuses global-coordinate models: codes "
            "could not be decoded at another grid)"
        )
    else:
        chain += [
            ("encode", lambda: _encode(case, s)),
            ("size", lambda: code_size(case)),
            ("decode", lambda: _decode(case, s, row["encode_range"])),
        ]
    for i, (name, fn) in enumerate(chain):
        # Without a trained run nothing else can run; without codes, nothing to measure.
        if not stage(name, fn) and name in ("train", "encode"):
            if i + 1 < len(chain):
                notes.append(f"not run: {', '.join(n for n, _ in chain[i + 1 :])}")
            break
    row["note"] = "; ".join(notes)
    return row


def _train(case: VariantCase, s: stages.Settings) -> dict[str, Any]:
    case.started = time.time()
    got = stages.train(case, s)
    return {k: got[k] for k in ("train_patches_per_s", "train_peak_mb", "notes") if k in got}


def _encode(case: VariantCase, s: stages.Settings) -> dict[str, Any]:
    got = stages.encode(case, s, split="val")
    if got.get("encode_steps_per_s_per_core") is None:
        return {"notes": got.get("notes", [])}
    return {
        "encode_steps_per_s_per_core": got["encode_steps_per_s_per_core"],
        "encode_range": got["time_range"],
        "notes": got.get("notes", []),
    }


def _decode(case: VariantCase, s: stages.Settings, time_range: list[int]) -> dict[str, Any]:
    got = stages.decode(case, s, time_range)
    if got.get("decode_s_per_step") is None:
        return {"decoded_psnr_db": None, "notes": got.get("notes", [])}
    psnr = compare(case.path("decoded.nc"), case.path("input.nc"), case.family, time_range[0],
                   case.patch)  # fmt: skip
    return {"decoded_psnr_db": psnr["psnr_db"], "notes": []}


def applicable(v: Variant) -> tuple[str, ...]:
    """The row keys a variant is expected to measure (a global model is not encoded)."""
    return KEYS if v.encode_set is not None else (*KEYS[:2], "train_patches_per_s")


def main(argv: list[str] | None = None) -> int:
    """Run the variants on one case, write the JSON and regenerate the page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="181x360", help="NLATxNLON of the ERA5-like case")
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--encode-steps", type=int, default=4, help="validation steps encoded")
    ap.add_argument("--work", default="runs/scale_bench", help="scale_bench's --work (reused)")
    ap.add_argument("--json", default="benchmarks/results/patch_choice.json")
    ap.add_argument("--markdown", default="docs/results/patch_choice.md")
    ap.add_argument("--device", default="cpu", help="run.device / encode.device (cuda)")
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--timeout", type=float, default=None, help="seconds per stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    ap.add_argument("--render-only", action="store_true", help="only regenerate --markdown")
    args = ap.parse_args(argv)
    out_json, out_md = Path(args.json), Path(args.markdown)
    if args.render_only:
        return render_only(page.render, args.json, args.markdown)
    chosen = [v for v in VARIANTS if v.name in args.variants.split(",")]
    if not chosen:
        names = ", ".join(v.name for v in VARIANTS)
        print(f"error: --variants: none of {args.variants!r}; known: {names}", file=sys.stderr)
        return 2
    grid = parse_size(args.size)
    steps = STEPS.get(grid, 24)
    base = stages.Case("era5", grid, steps, Path(args.work).resolve(), stages.PATCH["era5"])
    s = stages.Settings(cores=args.cores, device=args.device, timeout=args.timeout)
    print(f"{base.tag}: {steps} time steps, {args.train_steps} training steps", flush=True)
    t0 = time.perf_counter()
    try:
        case_notes = prepare_store(base, s, args.seed)
    except Exception as err:  # noqa: BLE001 - reported in one line, nothing else can run
        print(f"error: input/store of {base.tag}: {err}"[:240], file=sys.stderr)
        return 1
    print(f"  store {time.perf_counter() - t0:7.1f} s  {base.path('store.zarr')}", flush=True)
    rows = [run_variant(base, v, args) for v in chosen]
    ranges = [r["encode_range"] for r in rows if r.get("encode_range")]
    result = {
        "machine": machine(s),
        "command": " ".join(["python benchmarks/patch_choice_bench.py", *(argv or sys.argv[1:])]),
        "case": {
            "family": "era5",
            "grid": list(grid),
            "variables": len(base.variables),
            "time_steps": steps,
            "patch": list(base.patch),
            "train_steps": args.train_steps,
            "encode_steps": args.encode_steps,
            "encode_split": "val",
            "encode_range": ranges[0] if ranges else None,
            "notes": case_notes,
        },
        "rows": rows,
    }
    save(out_json, result)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(page.render(result, args.json))
    for line in page.findings(rows):
        print(line)
    print(f"wrote {out_json} and {out_md}")
    failed = any(r.get(k) is None for v, r in zip(chosen, rows, strict=True) for k in applicable(v))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

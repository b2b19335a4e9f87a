"""Rate-distortion of latent codes against SZ3, ZFP and lossless on the offline field stores.

For each dataset (``--datasets``, default every real field store the project builds
offline: HadCM3 A1B, the ERA5 GRIB sample, NCEP air; and a simulated Gray-Scott volume,
32^3 x 64 steps) the script

1. builds the field store with ``mia-inr build`` unless it exists (the commands of
   ``configs/reproduce/fields_hadcm3_a1b.yaml``, ``scripts/era5_grib_sample.sh``,
   ``configs/experiments/meta_inr_ncep.yaml``);
2. meta-trains a latent-code model per size of ``--models`` (``WIDTHxLATENT``: the shared
   network's width and the code's latent size) with ``mia-inr train`` from
   ``configs/experiments/latent_<dataset>.yaml`` (checkpoint chosen on validation);
3. encodes every time step with each model at each bit depth of ``--bits`` (entropy-coded
   codes, float16 meta-model, the trained K and rule) with ``mia-inr encode``;
4. runs ``mia-inr encode report`` on all of the dataset's code stores: the
   rate-distortion study on the test split and the four-row speed comparison
   (:mod:`pipelines.codecs.rd_run`), adding the dataset to ``--json``.

Then it regenerates ``--docs`` (``docs/results/rate_distortion.md`` and one figure per
dataset). Every step is skipped when its output exists, so a rerun resumes.

```bash
.venv/bin/python benchmarks/rate_distortion_bench.py     # ~40 min on 2 cores
```
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.codecs.rd_run import RDSpec, run_rd_report, write_page  # noqa: E402

CLI = [sys.executable, "-m", "ray_jobs.cli"]
BUILDS = {
    "hadcm3_a1b": [
        *CLI, "build", "era5", "--input", "iris:A1B_north_america", "--variables", "t2m",
        "--domain", "input", "--resolution", "37x49", "--val-fraction", "0.15",
        "--test-fraction", "0.15", "--out", "runs/data/hadcm3_a1b.zarr",
    ],
    "era5_grib": ["bash", "scripts/era5_grib_sample.sh", "runs/data/era5_grib.zarr"],
    "ncep_air": [
        *CLI, "build", "era5", "--input", "hvsampledata:air_temperature", "--out",
        "runs/data/ncep_air.zarr", "--domain", "input", "--resolution", "25x53",
        "--normalisation", "minmax01", "--val-fraction", "0.15", "--test-fraction", "0.25",
        "--chunk", "4",
    ],
    "gray_scott32": [
        *CLI, "build", "volumes", "--simulate", "gray-scott", "--size", "32", "--steps", "64",
        "--normalisation", "minmax01", "--val-fraction", "0.15", "--test-fraction", "0.15",
        "--out", "runs/data/gray_scott32.zarr",
    ],
}  # fmt: skip
SIMULATED = {"gray_scott32"}
CONFIGS = {
    "hadcm3_a1b": "configs/experiments/latent_hadcm3.yaml",
    "era5_grib": "configs/experiments/latent_era5_grib.yaml",
    "ncep_air": "configs/experiments/latent_ncep_air.yaml",
    "gray_scott32": "configs/experiments/latent_gray_scott.yaml",
}


def _run(cmd: list[str], log: Path) -> None:
    """Run a command from the project root, its output to ``log``; stop on failure."""
    print("$", " ".join(cmd), flush=True)
    with log.open("a") as f:
        res = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}; see {log}")


def dataset(name: str, args: argparse.Namespace) -> None:
    """Build, train, encode and report one dataset (see the module docstring)."""
    out = Path(args.out_dir)
    log = out / f"{name}.log"
    out.mkdir(parents=True, exist_ok=True)
    store = ROOT / "runs" / "data" / f"{name}.zarr"
    if not store.exists():
        _run(BUILDS[name], log)
    codes = []
    for model in args.models:
        width, latent = (int(v) for v in model.split("x"))
        run = f"latent_{name}_w{width}_d{latent}"
        if not (out / "runs" / run / "checkpoints" / "best.pt").exists():
            _run(
                [
                    *CLI, "train", "--config", CONFIGS[name], "--local",
                    f"model.width={width}", f"model.context_dim={latent}",
                    f"run.steps={args.train_steps}", f"run.name={run}",
                    f"run.out_dir={out / 'runs'}", "run.registered_model=",
                ],
                log,
            )  # fmt: skip
        for bits in args.bits:
            dst = out / "codes" / f"{run}_b{bits}.zarr"
            if not (dst / "zarr.json").exists() or "summary" not in (dst / "zarr.json").read_text():
                _run(
                    [
                        *CLI, "encode", "--local", f"encode.store={store}",
                        f"encode.checkpoint={out / 'runs' / run}", f"encode.out={dst}",
                        "encode.optimizer=rule", f"encode.steps={args.steps}",
                        f"encode.code_bits={bits}", "encode.meta_dtype=float16",
                        "encode.overwrite=true", "encode.progress=false",
                        "encode.larger_codes=warn",
                    ],
                    log,
                )  # fmt: skip
            codes.append(str(dst))
    run_rd_report(
        RDSpec(
            codes=codes,
            name=name,
            real=name not in SIMULATED,
            out_dir=str(out / "report" / name),
            speed_frames=args.speed_frames,
            max_steps=args.max_steps,
            results_json=args.json,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the study; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(BUILDS), choices=list(BUILDS))
    p.add_argument("--models", nargs="+", default=["24x8", "32x16", "64x32"])
    p.add_argument("--bits", nargs="+", type=int, default=[3, 4, 6])
    p.add_argument("--steps", type=int, default=3, help="encoder K (the trained inner steps)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--speed-frames", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=2000, help="baseline step budget")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "rate_distortion"))
    p.add_argument("--json", default="benchmarks/results/rate_distortion.json")
    p.add_argument("--docs", default="docs/results/rate_distortion.md")
    args = p.parse_args(argv)
    for name in args.datasets:
        dataset(name, args)
    print(f"wrote {write_page(args.json, args.docs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

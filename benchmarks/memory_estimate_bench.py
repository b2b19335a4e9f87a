"""Calibrate the pre-flight memory estimate: estimate vs measured peak RSS of tiny runs.

Each case trains a few local steps in a fresh process (tcmalloc preloaded, one thread)
on a small synthetic field store (SIREN Meta-INR, Reptile and second-order MAML) or the
synthetic 1-D store (the default Composers/MIA), or encodes 4 time steps of a field store
(``run_encode``, local), and prints the estimate of
:mod:`pipelines.engine.memory_estimate` next to the process's peak RSS (``VmHWM``).
The constants of that module were fitted to this table (the estimate must stay above
the measurement and within ~2x of it). One command::

    .venv/bin/python benchmarks/memory_estimate_bench.py [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._memory import maybe_reexec_with_tcmalloc, peak_rss_mb  # noqa: E402

SIREN = [
    "model.omega0=10.0",
    "method.inner_steps=4",
    "run.steps=2",
    "run.eval_every=2",
    "run.eval_batch_size=4",
    "run.log_model=false",
    "run.system_metrics=false",
]
SECOND = ["method.first_order=false"]
MIA = ["run.steps=2", "run.eval_every=2", "run.log_model=false", "run.system_metrics=false"]
# name -> (config, grid or None for the synthetic store, overrides)
CASES: dict[str, tuple[str, int | None, list[str]]] = {
    "siren_reptile_64_b2": ("meta_inr_ncep.yaml", 64, [*SIREN, "run.batch_size=2"]),
    "siren_reptile_128_b4": ("meta_inr_ncep.yaml", 128, [*SIREN, "run.batch_size=4"]),
    "siren_reptile_256_b4": ("meta_inr_ncep.yaml", 256, [*SIREN, "run.batch_size=4"]),
    "siren_reptile_256_b8": ("meta_inr_ncep.yaml", 256, [*SIREN, "run.batch_size=8"]),
    "siren_maml2nd_128_b4": ("meta_inr_ncep_maml.yaml", 128, [*SIREN, *SECOND, "run.batch_size=4"]),
    "mia_default_b16": ("default.yaml", None, MIA),
    "mia_default_b16_p800": ("default.yaml", None, [*MIA, "data.num_points=800"]),
    "mia_default_b64_p800": (
        "default.yaml",
        None,
        [*MIA, "data.num_points=800", "run.batch_size=64"],
    ),
}


def _field_store(path: Path, grid: int) -> None:
    import numpy as np
    import xarray as xr

    from pipelines.data.stores import make_location
    from pipelines.data.stores.field_writer import split_by_time, write_field_store

    t = 16
    rng = np.random.default_rng(0)
    lat, lon = np.linspace(60.0, -60.0, grid), np.linspace(0.0, 359.0, grid)
    values = rng.standard_normal((t, grid, grid)).cumsum(1).cumsum(2).astype(np.float32)
    ds = xr.Dataset(
        {"air": (("time", "latitude", "longitude"), values)},
        coords={"time": np.arange(t), "latitude": lat, "longitude": lon},
    )
    write_field_store(ds, make_location(str(path)), 4, split_by_time(t, 0.25, 0.25))


ENCODE: dict[str, tuple[int, dict]] = {
    "encode_siren_256_unit": (256, {}),
    "encode_siren_256_b1": (256, {"batch_size": 1}),
    "encode_siren_512_b2": (512, {"batch_size": 2}),
}


def encode_child(name: str, tmp: str) -> dict:
    """Encode one case's store with an (untrained) Meta-INR SIREN; estimate and peak RSS."""
    from mia_core.builders import build_learner
    from mia_core.config import load_config, save_config
    from pipelines.codecs.encode import run_encode
    from pipelines.codecs.encode_spec import EncodeSpec
    from pipelines.data.stores import make_location, open_store
    from pipelines.engine.checkpoint import save_checkpoint
    from pipelines.engine.memory_estimate import SAFETY, encode_estimate

    grid, kw = ENCODE[name]
    store = Path(tmp) / f"f{grid}.zarr"
    _field_store(store, grid)
    cfg = load_config(
        "configs/experiments/meta_inr_ncep.yaml", [f"data.store={store}", "data.modalities=[air]"]
    )
    save_config(cfg, Path(tmp) / "config.yaml")
    learner = build_learner(cfg.model, cfg.method, {"air": (2, 1)})
    ckpt = save_checkpoint({"model": learner.state_dict()}, Path(tmp) / "meta.pt")
    spec = EncodeSpec(
        store=str(store),
        checkpoint=str(ckpt),
        run_config=str(Path(tmp) / "config.yaml"),
        out=str(Path(tmp) / "codes.zarr"),
        steps=4,
        progress=False,
        larger_codes="warn",
        time_range=[0, 4],
        **kw,
    )
    n = sum(p.numel() for p in learner.parameters())
    est = encode_estimate(spec, cfg, open_store(make_location(str(store)), ["air"]), n)
    run_encode(spec, log=lambda _s: None, local=True)
    terms = {k: round(SAFETY * v / 2**20) for k, v in est.terms.items()}
    return {"estimate_mb": est.total / 2**20, "measured_mb": peak_rss_mb(), "terms": terms}


def child(name: str, tmp: str) -> dict:
    """Run one case in this process; return its estimate and peak RSS (MB)."""
    import torch

    torch.set_num_threads(1)
    if name in ENCODE:
        return encode_child(name, tmp)
    from mia_core.config import load_config
    from pipelines.data.resolve import open_training_store
    from pipelines.engine.memory_estimate import SAFETY, training_estimate
    from pipelines.jobs import train

    config, grid, extra = CASES[name]
    over = [f"run.out_dir={tmp}/runs", f"run.name={name}", *extra]
    if grid is not None:
        store = Path(tmp) / f"f{grid}.zarr"
        _field_store(store, grid)
        over += [f"data.store={store}", "data.modalities=[air]"]
    cfg = load_config(f"configs/experiments/{config}", over)
    est = training_estimate(cfg, open_training_store(cfg))
    train(cfg, local=True, evaluate_after=False, log=lambda _s: None)
    terms = {k: round(SAFETY * v / 2**20) for k, v in est.terms.items()}
    return {"estimate_mb": est.total / 2**20, "measured_mb": peak_rss_mb(), "terms": terms}


def main() -> None:
    """Run every case (or ``--only``) in a subprocess and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["MIA_MEMORY_LIMIT_GB"] = "0"  # measure, do not refuse
    if args.child:
        maybe_reexec_with_tcmalloc(quiet=True)
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(child(args.child, tmp)), flush=True)
        return
    print(maybe_reexec_with_tcmalloc())
    print(f"{'case':24} {'estimate MB':>11} {'measured MB':>11} {'ratio':>6}  terms (MB)")
    for name in [args.only] if args.only else [*CASES, *ENCODE]:
        cmd = [sys.executable, __file__, "--child", name]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name:24} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(line[7:])
        ratio = r["estimate_mb"] / r["measured_mb"]
        print(
            f"{name:24} {r['estimate_mb']:11.0f} {r['measured_mb']:11.0f} {ratio:6.2f}  "
            f"{r['terms']}",
            flush=True,
        )


if __name__ == "__main__":
    main()

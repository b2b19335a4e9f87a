"""One GPU check: every step of the GPU path, one table (``scripts/gpu_check.sh``).

Steps, in order (each a row; a failing step is a FAIL row with its one-line reason and the
script goes on):

1. ``device``: the card, torch / CUDA versions, bf16 support, TF32 flags.
2. ``parity <method> <precision>``: CAVIA and MIA meta-gradients (second order) on the
   device at ``highest``, TF32 (``high``) and under bf16 autocast, against the same
   learner in float64 on the CPU: relative L2 error of the flattened meta-gradient.
3. ``local train`` 20 steps, then ``local resume`` of the same run name (a resume loads the
   GPU-saved state: RNG states, optimizer counters).
4. ``ray train``: Ray Train with one GPU worker, 10 steps.
5. ``encode local`` and ``encode ray``: a tiny field store encoded on the device in this
   process and on Ray encoder actors that ask for a GPU.
6. ``speed <device>``: MIA meta-iterations per second and peak device memory, the device
   against the CPU (same workload, same process).
7. ``cpu evaluate``: the GPU-trained run evaluated by a process that sees no GPU.
8. ``scale era5 721x1440``: the 0.25-degree row of ``benchmarks/scale_bench.py`` with
   ``run.device=cuda`` / ``encode.device=cuda`` (16 time steps, 60 training steps, 2
   encoded steps, 150 s per stage: the whole check stays within its 600 s); skipped in a
   dry run.

``--dry-run`` runs the same steps on the CPU at tiny sizes (CI runs it, so the script keeps
working where no GPU is). ``--json PATH`` also writes the rows; ``--markdown PATH`` the
table as Markdown (for ``docs/results/gpu_check.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mia_core.builders import build_learner  # noqa: E402
from mia_core.config import load_config  # noqa: E402
from mia_core.data import generate_synthetic1d, make_episode  # noqa: E402
from mia_core.runtime import synchronize  # noqa: E402

Row = dict[str, Any]
PARITY_MODEL = [
    "model.width=32",
    "model.context_dim=32",
    "model.context_tokens=4",
    "model.depth=4",
    "method.inner_steps=3",
    "method.sft.dim=32",
    "method.sft.mlp_dim=32",
    "method.sft.heads=2",
]
TRAIN_TINY = [
    "data.num_functions=24",
    "data.num_train=16",
    "data.num_points=64",
    "data.modalities=[sine,tanh]",
    "model.width=16",
    "model.context_dim=16",
    "model.context_tokens=2",
    "model.depth=3",
    "method.inner_steps=2",
    "method.sft.dim=16",
    "method.sft.mlp_dim=16",
    "method.sft.heads=2",
    "run.batch_size=4",
    "run.eval_batch_size=8",
    "run.eval_repeats=1",
    "run.log_every=5",
    "run.eval_every=10",
    "run.checkpoint_every=5",
]


def _table(rows: list[Row]) -> str:
    """The rows as a Markdown table (step, result, value, detail)."""
    cols = ("step", "result", "value", "detail")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def _precision(name: str) -> Iterator[None]:
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(name)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _meta_grad(learner: torch.nn.Module, episode: dict, autocast: bool, device: torch.device):
    for p in learner.parameters():
        p.grad = None
    ctx = (
        torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    )
    with ctx:
        out = learner(episode)
    grads = torch.autograd.grad(out.loss, list(learner.parameters()), allow_unused=True)
    flat = [
        (g if g is not None else torch.zeros_like(p)).detach().double().flatten().cpu()
        for g, p in zip(grads, learner.parameters(), strict=True)
    ]
    return torch.cat(flat)


def parity_rows(device: torch.device, batch: int, points: int) -> list[Row]:
    """Meta-gradient error on ``device`` at three precisions against float64 on the CPU."""
    rows = []
    mods = ("sine", "tanh")
    signals = generate_synthetic1d(batch, points, modalities=mods, seed=0)
    gen = torch.Generator().manual_seed(0)
    ep = make_episode(signals, torch.arange(batch), {m: (0.2, 0.6) for m in mods}, gen)
    ep64 = {m: mb.to("cpu", torch.float64) for m, mb in ep.items()}
    ep_dev = {m: mb.to(device, torch.float32) for m, mb in ep.items()}
    for method in ("cavia", "mia"):
        cfg = load_config(None, [*PARITY_MODEL, f"method.name={method}"])
        torch.manual_seed(0)
        ref = build_learner(cfg.model, cfg.method, {m: (1, 1) for m in mods})
        ref64 = copy.deepcopy(ref).double()
        g64 = _meta_grad(ref64, ep64, False, torch.device("cpu"))
        dev = copy.deepcopy(ref).float().to(device)
        for label, prec, autocast, tol in (
            ("highest", "highest", False, 1e-4),
            ("tf32", "high", False, 1e-2),
            ("bf16 autocast", "highest", True, None),  # measured, not judged: see the docs
        ):
            with _precision(prec):
                g = _meta_grad(dev, ep_dev, autocast, device)
            rel = ((g - g64).norm() / g64.norm()).item()
            rows.append(
                {
                    "step": f"parity {method} {label}",
                    "result": "FAIL" if rel != rel or (tol and rel > tol) else "ok",
                    "value": f"{rel:.2e}",
                    "detail": "relative L2 error of the meta-gradient vs CPU float64"
                    + (f" (tolerance {tol:g})" if tol else " (information)"),
                }
            )
    return rows


def speed_rows(device: torch.device, batch: int, points: int, iters: int) -> list[Row]:
    """MIA meta-iterations per second on ``device`` and on the CPU, and peak device memory."""
    mods = ("sine", "tanh", "gaussian", "relu")
    cfg = load_config(
        None, [*PARITY_MODEL, "method.name=mia", "model.width=64", "model.context_dim=64"]
    )
    signals = generate_synthetic1d(batch, points, modalities=mods, seed=0)
    gen = torch.Generator().manual_seed(0)
    ep = make_episode(signals, torch.arange(batch), {m: (0.2, 0.6) for m in mods}, gen)
    rows = []
    targets = [device] if device.type == "cpu" else [device, torch.device("cpu")]
    for dev in targets:
        torch.manual_seed(0)
        learner = build_learner(cfg.model, cfg.method, {m: (1, 1) for m in mods}).to(dev)
        e = {m: mb.to(dev) for m, mb in ep.items()}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(iters + 2):  # two warm-up iterations
            if i == 2:
                synchronize(dev)
                t0 = time.perf_counter()
            learner(e).loss.backward()
        synchronize(dev)
        rate = iters / (time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        rows.append(
            {
                "step": f"speed mia {dev.type}",
                "result": "ok",
                "value": f"{rate:.2f} it/s",
                "detail": f"batch {batch} x 4 modalities x {points} points"
                + (f", peak {peak:.0f} MiB" if peak is not None else ""),
            }
        )
    return rows


def _step(rows: list[Row], name: str, fn: Callable[[], str | list[Row]]) -> None:
    """Run one step: its value (one row) or its own rows; a failure is a FAIL row."""
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001 - every failure is a row, the script goes on
        text = " ".join(f"{type(err).__name__}: {err}".split())
        value = [{"step": name, "result": "FAIL", "value": "", "detail": text[:180]}]
    if isinstance(value, str):
        value = [
            {
                "step": name,
                "result": "ok",
                "value": value,
                "detail": f"{time.perf_counter() - t0:.1f} s",
            }
        ]
    rows.extend(value)
    for row in value:
        print(_table([row]).splitlines()[-1], flush=True)


def _train_cfg(out: Path, name: str, use_gpu: bool, steps: int, device: str) -> Any:
    """The tiny MIA run; on a GPU with ``run.use_gpu`` and ``run.amp`` as the docs suggest."""
    return load_config(
        ROOT / "configs/experiments/synthetic_mia.yaml",
        [
            *TRAIN_TINY,
            f"run.steps={steps}",
            f"run.out_dir={out}",
            f"run.name={name}",
            f"run.device={device}",
            f"run.use_gpu={str(use_gpu).lower()}",
            "run.num_workers=1",
            f"run.amp={str(use_gpu).lower()}",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit 0 when every step is ok, 1 otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the same steps on CPU, tiny sizes")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--markdown", default=None, help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device visible; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    dname = "cuda" if device.type == "cuda" else "cpu"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows: list[Row] = []
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run)"
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else True
    rows.append(
        {
            "step": "device",
            "result": "ok",
            "value": name,
            "detail": f"torch {torch.__version__}, cuda {torch.version.cuda}, bf16 {bf16}, "
            f"tf32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"cudnn tf32 {torch.backends.cudnn.allow_tf32}",
        }
    )
    print(_table(rows), flush=True)
    small = args.dry_run
    _step(rows, "parity", lambda: parity_rows(device, 4 if small else 16, 40 if small else 200))
    work = Path(args.out or tempfile.mkdtemp(prefix="mia-gpu-check-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    from pipelines.jobs import train

    quiet = lambda _s: None  # noqa: E731

    def trained(name: str, steps: int, local: bool, note: str = "") -> str:
        cfg = _train_cfg(work, name, not small, steps, dname)
        return f"step {train(cfg, local=local, log=quiet, figures=False).step}{note}"

    # The same run name twice: the second call resumes the GPU-saved state.
    _step(rows, "local train", lambda: trained("gpu_local", 20, True))
    _step(rows, "local resume", lambda: trained("gpu_local", 20, True, " (resumed)"))
    _step(rows, "ray train (1 worker)", lambda: trained("gpu_ray", 10, False))
    for where, local in (("local", True), ("ray", False)):
        _step(rows, f"encode {where}", lambda local=local: _encode(work, dname, local))
    _step(
        rows,
        "speed",
        lambda: speed_rows(device, 8 if small else 64, 50 if small else 200, 3 if small else 20),
    )
    _step(rows, "cpu evaluate", lambda: _cpu_evaluate(work / "gpu_local"))
    _step(rows, "scale era5 721x1440", lambda: _scale_row(work, small))
    table = _table(rows)
    print("\n" + table)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "rows": rows}, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0 if all(r["result"] == "ok" for r in rows) else 1


def _encode(work: Path, device: str, local: bool) -> str:
    """Meta-train a tiny Meta-INR once, then encode a tiny field store on ``device``."""
    from benchmarks._gpu_encode import encode_tiny

    summary = encode_tiny(work, device, local)
    return f"{summary.done} steps, {summary.psnr['mean']:.1f} dB"


def _scale_row(work: Path, dry_run: bool) -> list[Row]:
    """The 0.25-degree row of ``benchmarks/scale_bench.py`` on the GPU (skipped in a dry run).

    Fewer steps than the benchmark's own run, to fit the check's time; its JSON and page go
    to the working folder, not to ``benchmarks/results``.
    """
    name = "scale era5 721x1440"
    if dry_run:
        why = "GPU only; on CPU: python benchmarks/scale_bench.py --sizes small"
        return [{"step": name, "result": "ok", "value": "skipped (dry run)", "detail": why}]
    out = work / "scale"
    cmd = [sys.executable, "benchmarks/scale_bench.py", "--family", "era5", "--sizes"]
    cmd += ["721x1440", "--device", "cuda", "--steps-build", "16", "--train-steps", "60"]
    cmd += ["--encode-steps", "2", "--timeout", "150", "--work", str(out)]
    cmd += ["--json", str(out / "scale.json"), "--markdown", str(out / "scale.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    if not (out / "scale.json").exists():
        raise RuntimeError(((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1])
    row = json.loads((out / "scale.json").read_text())["rows"][0]
    keys = ("psnr_db", "encode_steps_per_s_per_core", "train_patches_per_s", "build_peak_mb")
    value = ", ".join(f"{k} {row[k]:.3g}" if row[k] is not None else f"{k} null" for k in keys)
    ok = all(row[k] is not None for k in keys)
    detail = (row.get("note") or f"seam {row.get('seam_psnr_db')} dB")[:180]
    return [{"step": name, "result": "ok" if ok else "FAIL", "value": value, "detail": detail}]


def _cpu_evaluate(run_dir: Path) -> str:
    """Evaluate the run in a fresh process that sees no GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "ray_jobs.cli", "evaluate", "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip().splitlines()[-1])
    return "exit 0"


if __name__ == "__main__":
    raise SystemExit(main())

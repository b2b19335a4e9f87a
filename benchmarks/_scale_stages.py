"""The stages of one size of the scale benchmark, each a fresh ``mia-inr`` process.

build -> train -> encode -> decode (+ PSNR). Each stage returns the row keys it measured;
a stage that fails returns ``None`` for them and a note naming the stage and the child's
last error line, and the stages after it that need its output are skipped with a note.
How each number is taken (start-up excluded where the job allows it):

* build: era5: the wall time of the build minus that of the same build of one time step
  (``--time-stride N``: start-up and opening), per remaining step; volumes: the builder's
  own ``seconds`` per step. ``--patch`` is passed when the builder has it.
* train: patches/s between the first and the last logged step (the warm-up of the first
  steps excluded), from the run's MLflow metric ``signals_per_s`` (a signal is a patch,
  ``run.batch_size`` counts patches), else from the printed progress lines. Validation
  and checkpoints only come after the last logged step.
* encode: the code store's summary (``mia_codes.summary``): encoded steps / encoding
  seconds (model loading excluded) / cores (the ``OMP_NUM_THREADS`` the child got).
  ``encode.larger_codes=warn``: the benchmark measures speed and PSNR, not compression,
  and a patch's code can exceed a small patch's values.
* decode: wall time of decoding all encoded steps minus that of decoding the first one,
  per remaining step.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from benchmarks._scale_run import ROOT, ChildRun, mia_command, run_child

CONFIGS = {
    "era5": ROOT / "configs/experiments/meta_inr_patch_era5.yaml",
    "volume": ROOT / "configs/experiments/meta_inr_patch_volume.yaml",
}
ENCODE_CONFIGS = {
    "era5": ROOT / "configs/encode/patch_era5.yaml",
    "volume": ROOT / "configs/encode/patch_volume.yaml",
}
VARIABLES = {"era5": ["t2m", "sp", "tcwv", "z500"], "volume": ["density"]}
PATCH = {"era5": (32, 32), "volume": (16, 16, 16)}
PROGRESS = re.compile(r"^step\s+(\d+)/\d+ .* ([0-9.]+) signals/s")


@dataclass
class Case:
    """One size of one family and where its files go."""

    family: str
    grid: tuple[int, ...]
    steps: int
    work: Path
    patch: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        """``era5_46x90``, ``volume_64x64x64``."""
        return f"{self.family}_{'x'.join(map(str, self.grid))}"

    def path(self, name: str) -> Path:
        """A file of this case under the work folder."""
        return self.work / self.tag / name

    @property
    def variables(self) -> list[str]:
        """The store's variables (the config's modalities)."""
        return VARIABLES[self.family]


@dataclass
class Settings:
    """What every stage needs besides the case."""

    config: Path | None = None
    train_steps: int = 200
    encode_steps: int = 4
    cores: int = 2
    device: str = "cpu"
    train_set: list[str] = field(default_factory=list)
    encode_set: list[str] = field(default_factory=list)
    timeout: float | None = None


def builder_has_patch(name: str) -> bool:
    """Whether ``mia-inr build <name>`` takes ``--patch`` (patch-aligned chunks)."""
    parser = argparse.ArgumentParser()
    importlib.import_module(f"pipelines.data.builders.{name}").add_arguments(parser)
    return any("--patch" in a.option_strings for a in parser._actions)


def _fail(stage: str, keys: tuple[str, ...], why: str) -> dict[str, Any]:
    return {**dict.fromkeys(keys), "notes": [f"{stage}: {why}"]}


def _summary_json(stdout: str) -> dict[str, Any]:
    """The JSON object a builder prints last."""
    start = stdout.find("{")
    return json.loads(stdout[start:]) if start >= 0 else {}


def build(case: Case, s: Settings) -> dict[str, Any]:
    """``mia-inr build era5|volumes`` of the case's netCDF at its own grid."""
    keys = ("build_s_per_step", "build_peak_mb")
    name = "era5" if case.family == "era5" else "volumes"
    cmd = [*mia_command(), "build", name, "--input", str(case.path("input.nc")), "--overwrite"]
    cmd += ["--variables", ",".join(case.variables)]
    if case.family == "era5":
        cmd += ["--domain", "input", "--resolution", "x".join(map(str, case.grid))]
    notes = []
    if builder_has_patch(name):
        cmd += ["--patch", "x".join(map(str, case.patch))]
    else:
        notes.append(f"build: no --patch in `build {name}` yet: store chunks not patch-aligned")
    run = run_child(
        [*cmd, "--out", str(case.path("store.zarr"))],
        case.path("logs/build.err"),
        timeout=s.timeout,
    )
    if run.rc:
        return _fail("build", keys, run.reason())
    if case.family == "volume":
        seconds = float(_summary_json(run.stdout).get("seconds", run.seconds))
        per_step = seconds / case.steps
    else:  # the builder reports no time: subtract a one-step build (start-up, opening)
        one = case.path("store_1step.zarr")
        base = run_child(
            [*cmd, "--out", str(one), "--time-stride", str(case.steps)],
            case.path("logs/build_1step.err"),
            timeout=s.timeout,
        )
        shutil.rmtree(one, ignore_errors=True)
        if base.rc == 0 and case.steps > 1 and run.seconds > base.seconds:
            per_step = (run.seconds - base.seconds) / (case.steps - 1)
        else:
            per_step = run.seconds / case.steps
            notes.append("build: start-up included (not separable from a one-step build)")
    return {"build_s_per_step": per_step, "build_peak_mb": run.peak_mb, "notes": notes}


def mlflow_metric(run_dir: Path, db: Path, key: str, since: float = 0.0) -> list[tuple[int, float]]:
    """``(step, value)`` of metric ``key`` in the run's MLflow sqlite store, by step.

    Only values logged from ``since`` (Unix seconds) on: a ``--no-resume`` rerun in the
    same run folder keeps its MLflow run id, so an earlier run's values are still there.
    """
    rid_file = run_dir / "mlflow_run_id"
    if not db.exists() or not rid_file.exists():
        return []
    rid = rid_file.read_text().strip()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = ? AND key = ? AND timestamp >= ? "
            "ORDER BY step, timestamp",
            (rid, key, int(since * 1000)),
        ).fetchall()
    return [(int(a), float(b)) for a, b in rows]


def _mlflow_rates(run_dir: Path, db: Path, since: float = 0.0) -> list[tuple[int, float]]:
    """``(step, signals_per_s)`` logged to the run's MLflow sqlite store, oldest first."""
    return mlflow_metric(run_dir, db, "signals_per_s", since)


def patches_per_s(points: list[tuple[int, float]]) -> float:
    """Rate between the first and last logged step from cumulative rates ``(step, rate)``.

    The loop logs ``patches seen / seconds since the first step``; at step ``s`` with rate
    ``r`` the elapsed time is ``s B / r``, so the rate between two log points is
    ``(s2 - s1) / (s2 / r2 - s1 / r1)`` (the batch size cancels). One point: its rate.
    """
    if not points:
        raise ValueError("no logged training rate")
    (s1, r1), (s2, r2) = points[0], points[-1]
    if s2 <= s1 or r1 <= 0 or r2 <= 0 or s2 / r2 <= s1 / r1:
        return r2
    return (s2 - s1) / (s2 / r2 - s1 / r1)


def train(case: Case, s: Settings) -> dict[str, Any]:
    """``mia-inr train --local`` of the family's patch config on the case's store."""
    keys = ("train_patches_per_s", "train_peak_mb")
    n = s.train_steps
    runs = case.path("runs")
    cmd = [
        *mia_command(),
        "train",
        "--config",
        str(s.config or CONFIGS[case.family]),
        "--local",
        "--no-resume",
        f"run.steps={n}",
        f"data.store={case.path('store.zarr')}",
        f"run.out_dir={runs}",
        f"run.name={case.tag}",
        f"run.log_every={max(1, n // 5)}",
        f"run.eval_every={n}",
        f"run.checkpoint_every={n}",
    ]
    if s.device != "cpu":
        cmd.append(f"run.device={s.device}")
    started = time.time()
    run = run_child([*cmd, *s.train_set], case.path("logs/train.err"), timeout=s.timeout)
    if run.rc:
        return _fail("train", keys, run.reason())
    points = _mlflow_rates(runs / case.tag, runs / "mlflow.db", started)
    if len(points) < 2:
        points = [
            (int(m[1]), float(m[2])) for m in map(PROGRESS.match, run.stdout.splitlines()) if m
        ]
    try:
        rate = patches_per_s(points)
    except ValueError as err:
        return _fail("train", keys, str(err))
    return {
        "train_patches_per_s": rate,
        "train_peak_mb": run.peak_mb,
        "train_steps": n,
        "notes": [],
    }


SPLITS = {"train": 0, "val": 1, "test": 2}


def encode_range(case: Case, count: int, split: str = "test") -> tuple[int, int]:
    """The first ``count`` steps of the store's ``split`` (test: else its last steps).

    Raises:
        ValueError: the store has no ``val`` or ``train`` step.
    """
    codes = np.asarray(zarr.open_group(str(case.path("store.zarr")), mode="r")["split"][...])
    held = np.flatnonzero(codes == SPLITS[split])
    if held.size == 0:
        if split != "test":
            raise ValueError(f"{case.path('store.zarr')}: no {split} step to encode")
        return max(0, codes.size - count), codes.size
    return int(held[0]), int(min(held[0] + count, held[-1] + 1))


def encode(case: Case, s: Settings, split: str = "test") -> dict[str, Any]:
    """``mia-inr encode --local`` of held-out steps (of ``split``) with the trained run."""
    keys = ("encode_steps_per_s_per_core", "encode_peak_mb")
    a, b = encode_range(case, s.encode_steps, split)
    codes = case.path("codes.zarr")
    cmd = [
        *mia_command(),
        "encode",
        "--local",
        "--overwrite",
        "--config",
        str(ENCODE_CONFIGS[case.family]),
        "--store",
        str(case.path("store.zarr")),
        "--checkpoint",
        str(case.path("runs") / case.tag),
        "--out",
        str(codes),
        f"encode.time_range=[{a},{b}]",
        "encode.progress=false",
        f"encode.device={s.device}",
        "encode.larger_codes=warn",
        *s.encode_set,
    ]
    threads = {k: str(s.cores) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    run = run_child(cmd, case.path("logs/encode.err"), env=threads, timeout=s.timeout)
    if run.rc:
        return _fail("encode", keys, run.reason())
    summary = dict(zarr.open_group(str(codes), mode="r").attrs["mia_codes"])["summary"]
    per_core = summary.get("timesteps_per_s_per_core")
    if per_core is None:
        per_core = float(summary["timesteps_per_s"]) / s.cores
    return {
        "encode_steps_per_s_per_core": float(per_core),
        "encode_peak_mb": run.peak_mb,
        "encoded_steps": int(summary["encoded"]),
        "cores": s.cores,
        "encode_psnr_store_db": summary["psnr"]["mean"],
        "time_range": [a, b],
        "notes": [],
    }


def decode(case: Case, s: Settings, time_range: list[int]) -> dict[str, Any]:
    """``mia-inr decode`` of the encoded steps to netCDF (and of the first one alone)."""
    a, b = time_range
    codes = str(case.path("codes.zarr"))

    def run(sel: str, out: str) -> ChildRun:
        cmd = [*mia_command(), "decode", codes, "--out", str(case.path(out)), "--overwrite"]
        return run_child([*cmd, "--time", sel], case.path(f"logs/{out}.err"), timeout=s.timeout)

    full = run(f"{a}:{b}", "decoded.nc")
    if full.rc:
        return _fail("decode", ("decode_s_per_step",), full.reason())
    notes = []
    per_step = full.seconds / (b - a)
    if b - a > 1:
        one = run(str(a), "decoded_1step.nc")
        if one.rc == 0 and full.seconds > one.seconds:
            per_step = (full.seconds - one.seconds) / (b - a - 1)
        else:
            notes.append("decode: start-up included (not separable from a one-step decode)")
    else:
        notes.append("decode: one step encoded, start-up included")
    return {"decode_s_per_step": per_step, "notes": notes}

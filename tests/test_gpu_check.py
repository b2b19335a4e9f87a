"""``scripts/gpu_check.sh --dry-run``: every step of the GPU path, on the CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    "device",
    "parity cavia highest",
    "parity cavia tf32",
    "parity cavia bf16 autocast",
    "parity mia highest",
    "parity mia tf32",
    "parity mia bf16 autocast",
    "local train",
    "local resume",
    "ray train (1 worker)",
    "encode local",
    "encode ray",
    "speed mia cpu",
    "cpu evaluate",
    "scale era5 721x1440",
]


@pytest.mark.timeout(300)
def test_dry_run_passes_every_step(tmp_path, mlflow_schema):
    out = tmp_path / "rows.json"
    for store in ("w", "w/runs"):  # the MLflow stores of its runs, migrated in advance
        (tmp_path / store).mkdir()
        shutil.copyfile(mlflow_schema, tmp_path / store / "mlflow.db")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [
            "bash",
            "scripts/gpu_check.sh",
            "--dry-run",
            "--out",
            str(tmp_path / "w"),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == STEPS, proc.stdout[-2000:]
    failed = [r for r in rows if r["result"] != "ok"]
    assert not failed and proc.returncode == 0, failed or proc.stderr[-2000:]
    parity = {r["step"]: float(r["value"]) for r in rows if r["step"].startswith("parity")}
    assert parity["parity mia highest"] < 1e-4


def test_without_a_gpu_the_real_run_says_so_in_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--dry-run" in proc.stderr

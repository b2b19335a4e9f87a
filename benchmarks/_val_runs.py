"""Train one setting with ``mia-inr train --local`` and read its validation report.

Shared by the scripts that choose settings on the validation split
(``hadcm3_settings_choice.py``, ``sparse_variants.py``): ``mia-inr train`` ends with the
validation report (``metrics_val.json``) and never reads the test split, so a choice made
from these reports is made on validation only. A finished run is read, not retrained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_val(config: str, overrides: list[str], run: str, out_dir: Path, threads: int = 0) -> dict:
    """The validation report of run ``run`` (trained now unless it already finished).

    Args:
        config: experiment YAML (relative to the repository).
        overrides: ``key=value`` overrides (steps, seed and the setting measured).
        run: the run's name (folder under ``out_dir``; its log is ``<run>.log``).
        out_dir: where runs go.
        threads: torch threads of the run (``OMP_NUM_THREADS``; 0 leaves the default).

    Raises:
        RuntimeError: the run failed (names its log) or its report is not a validation one.
    """
    metrics = out_dir / run / "metrics_val.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "ray_jobs.cli", "train", "--config", config, "--local"]
        cmd += [*overrides, f"run.name={run}", f"run.out_dir={out_dir}"]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        with open(out_dir / f"{run}.log", "w") as log:
            done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"run {run} failed (status {done.returncode}): {log.name}")
    report = json.loads(metrics.read_text())
    if report.get("split") != "val":
        raise RuntimeError(f"{metrics} is not a validation report")
    return report


def per_bin(report: dict, key: str = "nmse_all") -> tuple[list[list[float]], dict]:
    """Bins and modality -> per-bin ``key`` x 1e2 of a validation report."""
    rows = report["val"]
    bins: list[list[float]] = []
    for r in rows:
        if [r["r_min"], r["r_max"]] not in bins:
            bins.append([r["r_min"], r["r_max"]])
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["modality"], []).append(100 * r[key])
    return bins, out

"""What a finished sweep reports: one row per trial, the best one, tables, plot, best config.

Files written into the sweep folder: ``summary.csv`` and ``summary.md`` (one row per
trial, sorted by the metric), ``metric_vs_params.png`` (metric against every swept key),
``best_config.yaml`` (a complete config for ``ray_jobs/train.py --config``) and
``best_params.json``. Collecting the rows also closes every trial's MLflow child run,
including trials that died before their first report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from mia_core.config import Config
from mia_core.config.loader import save_config
from pipelines.reports.plots import save_figure
from pipelines.studies.driver import markdown, write_csv
from pipelines.studies.sweep_search import decode
from pipelines.studies.sweep_spec import SweepSpec, apply_params
from pipelines.tracking import run_groups


def trial_rows(
    spec: SweepSpec, grid: Any, sweep_dir: Path, trial_base: Config
) -> list[dict[str, Any]]:
    """One row per trial of Tune's ``ResultGrid``; closes each trial's MLflow child run.

    Raises:
        RuntimeError: Tune returned no trial.
    """
    rows = []
    for res in grid:
        params = decode(res.config)
        metrics = res.metrics or {}
        trial_id = metrics.get("trial_id") or Path(res.path).name
        value = metrics.get(spec.metric, math.nan)
        value = math.nan if value is None else float(value)
        step = int(metrics.get("step", 0) or 0)
        status = "error" if res.error else ("done" if step >= trial_base.run.steps else "stopped")
        id_file = sweep_dir / "trials" / str(trial_id) / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if run_id:
            run_groups.log_metrics(trial_base, run_id, {f"final_{spec.metric}": value}, step)
            run_groups.client_for(trial_base).set_tag(run_id, "sweep.status", status)
            run_groups.close_run(trial_base, run_id, "FAILED" if res.error else "FINISHED")
        rows.append(
            {
                "trial_id": trial_id,
                "params": params,
                spec.metric: value,
                "step": step,
                "status": status,
                "mlflow_run_id": run_id,
            }
        )
    if not rows:
        raise RuntimeError(f"sweep {spec.name}: Tune returned no trial")
    # A trial that died before its first report has no id in its results: close its
    # child run from the id file so no MLflow run stays RUNNING.
    seen = {r["mlflow_run_id"] for r in rows}
    for id_file in (sweep_dir / "trials").glob("*/mlflow_run_id"):
        run_id = id_file.read_text().strip()
        if run_id not in seen:
            run_groups.close_run(trial_base, run_id, "FAILED")
    return rows


def best_row(spec: SweepSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best metric (NaN rows never win)."""
    ok = [r for r in rows if r[spec.metric] == r[spec.metric]]
    if not ok:
        raise RuntimeError(f"sweep {spec.name}: no trial reported '{spec.metric}'")
    sign = 1.0 if spec.mode == "min" else -1.0
    return min(ok, key=lambda r: sign * r[spec.metric])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def summary_table(spec: SweepSpec, rows: list[dict]) -> str:
    """``summary.md``: a title line and one row per trial, sorted by the metric."""
    head, table = _summary_rows(spec, rows)
    title = (
        f"# Sweep {spec.name}: {spec.search} search, {len(rows)} trials, "
        f"{spec.metric} ({spec.mode}), scheduler {spec.scheduler.name}"
    )
    return f"{title}\n\n" + markdown([head, *([_fmt(v) for v in t] for t in table)])


def _summary_rows(spec: SweepSpec, rows: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """Header and one row per trial (params, metric, step, status, run id), best first."""
    keys = list(spec.params)
    head = ["trial_id", *keys, spec.metric, "step", "status", "mlflow_run_id"]
    table = [
        [r["trial_id"], *(r["params"][k] for k in keys)]
        + [r[spec.metric], r["step"], r["status"], r["mlflow_run_id"]]
        for r in rows
    ]
    sign, col = (1.0 if spec.mode == "min" else -1.0), len(keys) + 1
    table.sort(key=lambda t: sign * t[col] if t[col] == t[col] else math.inf)
    return head, table


def write_outputs(
    spec: SweepSpec, base: Config, rows: list[dict], best: dict, sweep_dir: Path
) -> list[Path]:
    """Write the summary table, plot, best config and best params; returns the files."""
    head, table = _summary_rows(spec, rows)
    csv_rows = [[_fmt(v) if isinstance(v, list | dict) else v for v in t] for t in table]
    write_csv([head, *csv_rows], sweep_dir / "summary.csv")
    (sweep_dir / "summary.md").write_text(summary_table(spec, rows))
    best_cfg = apply_params(base, best["params"])
    best_cfg = dataclasses.replace(
        best_cfg, run=dataclasses.replace(best_cfg.run, name=f"{spec.name}-best")
    )
    save_config(best_cfg, sweep_dir / "best_config.yaml")
    (sweep_dir / "best_params.json").write_text(
        json.dumps(
            {
                "trial_id": best["trial_id"],
                spec.metric: best[spec.metric],
                "params": best["params"],
            },
            indent=1,
        )
    )
    plot = _plot(spec, rows, sweep_dir / "metric_vs_params.png")
    return [
        sweep_dir / n for n in ("summary.csv", "summary.md", "best_config.yaml", "best_params.json")
    ] + [plot]


def _plot(spec: SweepSpec, rows: list[dict], path: Path) -> Path:
    """One panel per swept key: metric against the value (categories on an index axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.params)
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    ys = [r[spec.metric] for r in rows]
    for ax, key in zip(axes.flat, keys, strict=False):
        vals = [r["params"][key] for r in rows]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
        if numeric:
            ax.scatter(vals, ys)
            if spec.params[key].kind == "loguniform":
                ax.set_xscale("log")
        else:
            cats = sorted({_fmt(v) for v in vals})
            ax.scatter([cats.index(_fmt(v)) for v in vals], ys)
            ax.set_xticks(range(len(cats)), cats, rotation=20, fontsize=7)
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel(spec.metric)
    fig.suptitle(f"sweep {spec.name}: {spec.metric} per trial")
    return save_figure(fig, path)


__all__ = ["best_row", "summary_table", "trial_rows", "write_outputs"]

"""Tables and plots of continual evaluation: one run, or several methods side by side.

A run's evaluation is, per step budget ``b``, a ``(T, T, B)`` PSNR array ``M_b`` with
``M_b[j, i]`` the PSNR of task ``i`` after learning task ``j`` (NaN for ``i > j``).
Derived numbers (means over the ``B`` test sequences):

* ``final``: mean PSNR of all tasks under the final model (last row);
* ``final_signal``: mean over signals of each whole signal's PSNR under the final model
  (its tasks' MSEs weighted by their points; the MCL-NF paper's reconstruction PSNR);
* ``forgetting``: mean over tasks ``i < T-1`` of ``M[i, i] - M[T-1, i]``, the PSNR a
  task lost between being learned and the end (0 = no forgetting);
* ``max_drop``: the largest ``M[i, i] - M[j, i]`` over ``j > i``.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mia_core.config import Config  # noqa: E402
from pipelines.engine.task import split_file  # noqa: E402
from pipelines.reports.plots import save_figure  # noqa: E402


def summarise(mat: np.ndarray, signal: np.ndarray | None = None) -> dict[str, Any]:
    """Derived numbers of one ``(T, T, B)`` matrix and ``(B,)`` whole-signal PSNRs."""
    with warnings.catch_warnings():  # the upper triangle (unseen tasks) is all-NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(mat, axis=2)  # (T, T)
    t = mean.shape[0]
    diag = np.diag(mean)
    forget = [float(diag[i] - mean[-1, i]) for i in range(t - 1)]
    drops = [float(diag[i] - mean[j, i]) for i in range(t) for j in range(i + 1, t)]
    return {
        "final": float(np.nanmean(mean[-1])),
        "final_signal": None if signal is None else float(np.nanmean(signal)),
        "final_per_task": mean[-1].tolist(),
        "just_learned": diag.tolist(),
        "forgetting": float(np.mean(forget)) if forget else 0.0,
        "max_drop": float(max(drops)) if drops else 0.0,
        "matrix": mean.tolist(),
    }


def write_report(
    run_dir: Path,
    cfg: Config,
    mats: dict[int, np.ndarray],
    n_params: int,
    state: dict[str, Any],
    log: Callable[[str], None] = print,
    signals: dict[int, np.ndarray] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Write ``results.md``, ``results.csv``, ``metrics.json`` and ``figures/`` of a run.

    ``signals`` (budget -> ``(B,)`` whole-signal PSNRs of the final model) adds
    ``final_signal`` to each budget's summary. ``split`` is the split the matrices
    scored: ``val`` writes ``results_val.md``, ``results_val.csv``, ``metrics_val.json``
    and ``figures_val/``, with ``val_``-prefixed flat metrics.

    Returns:
        The ``metrics.json`` content; ``flat`` holds scalar metrics for MLflow.
    """
    budgets = sorted(mats)
    summ = {b: summarise(mats[b], None if signals is None else signals[b]) for b in budgets}
    flat: dict[str, float] = {}
    for b in budgets:
        flat[f"{split}_psnr_final/b{b}"] = summ[b]["final"]
        flat[f"{split}_forgetting/b{b}"] = summ[b]["forgetting"]
        flat[f"{split}_max_drop/b{b}"] = summ[b]["max_drop"]
        if summ[b]["final_signal"] is not None:
            flat[f"{split}_psnr_signal/b{b}"] = summ[b]["final_signal"]
    metrics = {
        "method": cfg.method.name,
        "run": cfg.run.name,
        "fim_lambda": cfg.method.fim_lambda,
        "num_tasks": cfg.method.mcl.num_tasks,
        "tasks": cfg.method.mcl.tasks,
        "meta_parameters": n_params,
        "step": state["step"],
        "best_step": state["best_step"],
        "best_val_psnr": state["best_val"],
        "split": split,
        f"{split}_sequences": int(next(iter(mats.values())).shape[2]),
        "budgets": {str(b): summ[b] for b in budgets},
        "flat": flat,
    }
    (run_dir / split_file("metrics.json", split)).write_text(json.dumps(metrics, indent=1))
    with open(run_dir / split_file("results.csv", split), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "budget", "after_task", "task", "psnr_mean", "psnr_std"])
        for b in budgets:
            t = mats[b].shape[0]
            for j in range(t):
                for i in range(j + 1):
                    v = mats[b][j, i]
                    row = [cfg.method.name, b, j, i, f"{np.nanmean(v):.4f}", f"{np.nanstd(v):.4f}"]
                    w.writerow(row)
    (run_dir / split_file("results.md", split)).write_text(
        _markdown(cfg, metrics, summ, budgets, split)
    )
    figs = run_dir / split_file("figures", split)
    figs.mkdir(parents=True, exist_ok=True)
    _plot_budgets(summ, budgets, cfg.method.name, figs / "psnr_vs_budget.png")
    _plot_forgetting(summ[budgets[-1]], budgets[-1], cfg.method.name, figs / "forgetting.png")
    for b in budgets:
        whole = summ[b]["final_signal"]
        log(
            f"budget {b:>5} steps/task: final psnr {summ[b]['final']:.2f} dB"
            + ("" if whole is None else f" (whole signals {whole:.2f} dB)")
            + ", "
            f"forgetting {summ[b]['forgetting']:.2f} dB, max drop {summ[b]['max_drop']:.2f} dB"
        )
    return metrics


def _markdown(
    cfg: Config, metrics: dict, summ: dict, budgets: list[int], split: str = "test"
) -> str:
    t = cfg.method.mcl.num_tasks
    lines = [
        f"# {cfg.method.name}: continual evaluation on the {split} split ({cfg.run.name})",
        "",
        f"{metrics[f'{split}_sequences']} {split} sequences of {t} {cfg.method.mcl.tasks} tasks; "
        f"{metrics['meta_parameters']:,} meta-parameters; meta-trained {metrics['step']} steps "
        f"(best on validation: step {metrics['best_step']}); test-time "
        f"{cfg.method.mcl.eval_optimizer} at lr {cfg.method.mcl.eval_lr or cfg.method.inner_lr}.",
        "",
        "PSNR (dB) of the final model per task, after `budget` steps per task; forgetting = "
        "PSNR lost by a task between being learned and the end.",
        "",
        "| budget | " + " | ".join(f"task {i}" for i in range(t)) + " | mean | forgetting |",
        "|---" * (t + 3) + "|",
    ]
    for b in budgets:
        s = summ[b]
        cells = " | ".join(f"{v:.2f}" for v in s["final_per_task"])
        lines.append(f"| {b} | {cells} | {s['final']:.2f} | {s['forgetting']:.2f} |")
    b = budgets[-1]
    lines += [
        "",
        f"PSNR of task i (columns) after learning task j (rows), budget {b}:",
        "",
        "| after \\ task | " + " | ".join(str(i) for i in range(t)) + " |",
        "|---" * (t + 1) + "|",
    ]
    for j, row in enumerate(summ[b]["matrix"]):
        cells = " | ".join("" if np.isnan(v) else f"{v:.2f}" for v in row)
        lines.append(f"| {j} | {cells} |")
    return "\n".join(lines) + "\n"


def _plot_budgets(summ: dict, budgets: list[int], label: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    t = len(summ[budgets[0]]["final_per_task"])
    for i in range(t):
        ax.plot(budgets, [summ[b]["final_per_task"][i] for b in budgets], "o-", label=f"task {i}")
    ax.plot(budgets, [summ[b]["final"] for b in budgets], "k--", lw=2, label="mean")
    ax.set(xscale="log", xlabel="steps per task", ylabel="final PSNR (dB)", title=label)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_forgetting(s: dict, budget: int, label: str, path: Path) -> None:
    mat = np.asarray(s["matrix"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i in range(mat.shape[0]):
        ax.plot(range(i, mat.shape[0]), mat[i:, i], "o-", label=f"task {i}")
    ax.set(xlabel="after learning task", ylabel="PSNR (dB)", title=f"{label}, {budget} steps/task")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def compare_runs(run_dirs: list[Path], out: Path) -> str:
    """Side-by-side table and plots of several runs' ``metrics.json``.

    Writes ``comparison.md``, ``comparison.csv`` and ``comparison.png`` under ``out`` and
    returns the markdown.

    Raises:
        FileNotFoundError: a run directory has no ``metrics.json`` (not evaluated yet).
    """
    runs = []
    for d in run_dirs:
        f = Path(d) / "metrics.json"
        if not f.exists():
            raise FileNotFoundError(
                f"{f}: no metrics.json; run mia-inr evaluate --run-dir {d} --split test first"
            )
        runs.append(json.loads(f.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted({int(b) for r in runs for b in r["budgets"]})
    lines = [
        "# Continual evaluation: methods compared",
        "",
        "Final-model mean PSNR (dB) over all tasks / forgetting (dB) per step budget. "
        "meta-params: the meta-learned weights (for mcl_nf one module's init; a signal's "
        "representation holds one module per task).",
        "",
        "| method (run) | meta-params | " + " | ".join(f"{b} steps" for b in budgets) + " |",
        "|---" * (len(budgets) + 2) + "|",
    ]
    rows = []
    for r in runs:
        cells = []
        for b in budgets:
            s = r["budgets"].get(str(b))
            cells.append("" if s is None else f"{s['final']:.2f} / {s['forgetting']:.2f}")
            if s is not None:
                rows.append([r["method"], r["run"], b, s["final"], s["forgetting"], s["max_drop"]])
        lines.append(
            f"| {r['method']} ({r['run']}) | {r['meta_parameters']:,} | " + " | ".join(cells) + " |"
        )
    md = "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(md)
    with open(out / "comparison.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "run", "budget", "final_psnr", "forgetting", "max_drop"])
        w.writerows(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        bs = sorted(int(b) for b in r["budgets"])
        axes[0].plot(bs, [r["budgets"][str(b)]["final"] for b in bs], "o-", label=r["method"])
        mat = np.asarray(r["budgets"][str(bs[-1])]["matrix"])
        axes[1].plot(range(mat.shape[0]), mat[:, 0], "o-", label=f"{r['method']} ({bs[-1]} st.)")
    axes[0].set(xscale="log", xlabel="steps per task", ylabel="final mean PSNR (dB)")
    axes[1].set(xlabel="after learning task", ylabel="PSNR of task 0 (dB)")
    for ax in axes:
        ax.legend(fontsize=7)
    save_figure(fig, out / "comparison.png")
    return md

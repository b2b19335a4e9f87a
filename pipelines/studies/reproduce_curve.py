"""The budget curve: MIA and CAVIA in the lowest support-ratio bin vs outer steps.

The MIA and CAVIA runs of one seed keep a snapshot at every ``reproduce.curve_steps``
(``run.snapshot_steps``: ``<run_dir>/checkpoints/step_<N>.pt``); each is evaluated on the
test split exactly like the run's selected checkpoint
(:func:`pipelines.reports.evaluate_run.evaluate_run` with ``checkpoint=``), and the rows are
cached in ``<study>/curve/<method>_step<N>.json`` so a rerun does not evaluate again.
Outputs: ``curve.{md,csv,json}`` (a row per step: MIA, CAVIA and MIA / CAVIA per modality)
and ``curve.png`` (a panel per modality, log x axis).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from mia_core.config import Config
from pipelines.engine.run_dir import snapshot_path
from pipelines.reports.evaluate_run import evaluate_run
from pipelines.reports.plots import save_figure
from pipelines.studies.driver import json_safe, markdown, write_csv
from pipelines.studies.reproduce_report import LABELS, RATIO, num_text, ratio_of, study_bins
from pipelines.studies.reproduce_spec import CURVE_METHODS, ReproduceSpec

Evals = dict[str, dict[int, list[dict]]]  # method -> step -> metric rows


def curve_evaluations(
    spec: ReproduceSpec, runs: dict[str, Path], cache: Path, log: Callable[[str], None]
) -> Evals:
    """Evaluate (or read back) every snapshot of the curve runs.

    Args:
        spec: the study (its ``curve_steps``).
        runs: method -> run directory holding the snapshots.
        cache: folder of the per-snapshot row files.
        log: line printer.

    Raises:
        CheckpointMissing: a snapshot is missing (e.g. a Ray run whose run directory rank
            0 could not see).
    """
    cache.mkdir(parents=True, exist_ok=True)
    out: Evals = {}
    for method, run_dir in runs.items():
        out[method] = {}
        for step in spec.curve_steps:
            path = cache / f"{method}_step{step}.json"
            if not path.exists():
                rows = evaluate_run(
                    run_dir,
                    log=lambda s, m=method: log(f"[curve {m}] {s}"),
                    track=False,
                    figures=False,
                    checkpoint=snapshot_path(run_dir, step),
                    split="test",  # the final table's budget curve
                )
                data = [
                    {"modality": r.modality, "r_min": r.r_min, "r_max": r.r_max, **r.metrics}
                    for r in rows
                ]
                path.write_text(json.dumps(data, indent=1))
            out[method][step] = json.loads(path.read_text())
    return out


def lowest_bin(rows: list[dict], modality: str, lo: float, hi: float) -> float:
    """The nMSE x 1e2 of ``modality`` in the bin ``[lo, hi]`` (NaN if absent)."""
    for r in rows:
        if (
            r["modality"] == modality
            and math.isclose(r["r_min"], lo)
            and math.isclose(r["r_max"], hi)
        ):
            return 100.0 * float(r["nmse_all"])  # NaN when the bin received no signal
    return math.nan


def curve_rows(curve: dict) -> list[list[str]]:
    """The markdown table's rows of a ``curve.json`` (as :func:`write_curve` returns them)."""
    nmse = curve["nmse_x1e2"]
    rows = [["outer steps"] + [f"{m} {c}" for m in nmse["mia"] for c in ("MIA", "CAVIA", RATIO)]]
    for i, step in enumerate(curve["steps"]):
        row = [str(step)]
        for mod in nmse["mia"]:
            a, b = (
                math.nan if v is None else float(v)
                for v in (nmse[m][mod][i] for m in CURVE_METHODS)
            )
            row += [num_text(a), num_text(b), num_text(ratio_of(a, b), 3)]
        rows.append(row)
    return rows


def curve_markdown(curve: dict, title: str) -> str:
    """``curve.md``: ``title``, what the cells are, and the table of :func:`curve_rows`."""
    lo, hi = curve["bin"]
    return (
        f"# {title}\n\nTest-split normalised MSE x 1e2 in the lowest support-ratio bin "
        f"[{lo:g}, {hi:g}] of the snapshots at each outer step.\n\n{markdown(curve_rows(curve))}"
    )


def write_curve(
    spec: ReproduceSpec, cfg: Config, evals: Evals, out: Path
) -> tuple[list[list[str]], list[Path], dict[int, dict[str, float]]]:
    """Write ``curve.{md,csv,json}`` and ``curve.png``.

    Returns:
        The markdown table's rows, the files written, and step -> MLflow metrics
        (``curve/<method>/<modality>``).
    """
    lo, hi = study_bins(cfg)[0]
    mods = list(cfg.data.modalities)
    values = {
        m: {s: {mod: lowest_bin(rows, mod, lo, hi) for mod in mods} for s, rows in per.items()}
        for m, per in evals.items()
    }
    curve = {
        "seed": spec.curve_run_seed,
        "bin": [lo, hi],
        "steps": spec.curve_steps,
        "nmse_x1e2": {
            m: {mod: [values[m][s][mod] for s in spec.curve_steps] for mod in mods}
            for m in CURVE_METHODS
        },
    }
    csv_rows: list[list[str | float]] = [["step", "modality", "mia_x1e2", "cavia_x1e2", "ratio"]]
    metrics: dict[int, dict[str, float]] = {}
    for step in spec.curve_steps:
        metrics[step] = {}
        for mod in mods:
            a, b = values["mia"][step][mod], values["cavia"][step][mod]
            csv_rows.append([step, mod, a, b, ratio_of(a, b)])
            metrics[step].update({f"curve/mia/{mod}": a, f"curve/cavia/{mod}": b})
    md = out / "curve.md"
    title = f"Budget curve: {spec.name} ({spec.backbone}, seed {spec.curve_run_seed})"
    md.write_text(curve_markdown(curve, title))
    js = out / "curve.json"
    js.write_text(json.dumps(json_safe(curve), indent=1))
    png = _plot(spec, values, mods, (lo, hi), out / "curve.png")
    return curve_rows(curve), [md, write_csv(csv_rows, out / "curve.csv"), js, png], metrics


def _plot(spec: ReproduceSpec, values: dict, mods: list[str], bin_: tuple, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(mods), figsize=(3.4 * len(mods), 3.0), squeeze=False)
    for ax, mod in zip(axes[0], mods, strict=True):
        for m in CURVE_METHODS:
            ax.plot(
                spec.curve_steps,
                [values[m][s][mod] for s in spec.curve_steps],
                "o-",
                label=LABELS[m],
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{mod}, R in [{bin_[0]:g}, {bin_[1]:g}]")
        ax.set_xlabel("outer steps")
    axes[0][0].set_ylabel("nMSE x 1e2")
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, path)


__all__ = ["curve_evaluations", "curve_markdown", "curve_rows", "lowest_bin", "write_curve"]

"""Table 1 of the reproduction study: statistics over seeds, md/csv/json, bar chart, results JSON.

Cells are the test-split normalised MSE x 1e2 (``nmse_all`` of each run's
``metrics.json``) of one method, modality and support-ratio bin of ``run.eval_bins``:
mean ± sample standard deviation over the seeds, with the paper's value beside it when the
bin is one of ``paper_bins``. The ``MIA / CAVIA`` row divides the means (below 1: MIA is
better), the paper's ratio beside it. Only the ``modality``, ``r_min``, ``r_max``,
``nmse_*``, ``rmse_phys_all`` and ``units`` keys of the metric rows are read. Below Table 1,
``table1.md`` gives each cell's area-weighted RMSE in physical units (``cos(latitude)`` on
lat-lon grids, :mod:`pipelines.reports.evaluation`), mean over seeds, where the runs' rows
have it; the reference rows are area-weighted nMSE (equal to nMSE on other grids).
Classical rows (``reproduce.classical``, :mod:`pipelines.reports.classical_cells`) follow,
nMSE like the methods' cells, ``n/a (k of n: too few points)`` where they could not run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mia_core.config import Config
from pipelines.data.stores.location import redact_url
from pipelines.reports.classical_cells import ClassicalRows, seed_cell
from pipelines.reports.plots import save_figure
from pipelines.studies.driver import json_safe, markdown, write_csv
from pipelines.studies.reproduce_spec import ReproduceSpec

Cell = dict  # {r_min, r_max, mean, std, values, paper[, rmse_phys, units]}
Stats = dict[str, dict[str, list[Cell]]]  # method -> modality -> one cell per bin
LABELS = {"cavia": "CAVIA", "metasgd": "MetaSGD", "gap": "GAP", "alfa": "ALFA", "mia": "MIA"}
RATIO = "MIA / CAVIA"
REFERENCE = "train mean (no adaptation)"


def eof_label(k: int) -> str:
    """Row label of the linear reference with ``k`` EOFs."""
    return f"offset + {k} train EOF{'s' if k != 1 else ''} (linear, least squares on the support)"


def study_bins(cfg: Config) -> list[tuple[float, float]]:
    """``run.eval_bins`` as ``(r_min, r_max)`` tuples, lowest first."""
    return sorted((float(lo), float(hi)) for lo, hi in cfg.run.eval_bins)


def _key(modality: str, lo: float, hi: float) -> tuple[str, float, float]:
    return modality, round(float(lo), 6), round(float(hi), 6)


def paper_value(spec: ReproduceSpec, method: str, modality: str, lo: float, hi: float) -> float:
    """The paper's nMSE x 1e2 of that cell, NaN if the paper has no such bin or entry."""
    values = spec.paper.get(method, {}).get(modality)
    for j, (plo, phi) in enumerate(spec.paper_bins):
        if values and _key("", plo, phi) == _key("", lo, hi):
            return float(values[j])
    return math.nan


def table_stats(spec: ReproduceSpec, cfg: Config, metrics: dict[str, dict[int, dict]]) -> Stats:
    """Mean and std over seeds per method, modality and bin.

    Args:
        spec: the study (its paper numbers).
        cfg: a run config of the study (modalities, bins).
        metrics: method -> seed -> that run's ``metrics.json``.
    """
    stats: Stats = {}
    for method, per_seed in metrics.items():
        rows = {
            s: {_key(r["modality"], r["r_min"], r["r_max"]): r for r in m["test"]}
            for s, m in per_seed.items()
        }
        stats[method] = {}
        for modality in cfg.data.modalities:
            cells = []
            for lo, hi in study_bins(cfg):
                key = _key(modality, lo, hi)
                found = [r[key] for r in rows.values() if key in r]
                cell = seed_cell(
                    (lo, hi),
                    [100.0 * float(r["nmse_all"]) for r in found],
                    [float(r.get("rmse_phys_all", math.nan)) for r in found],
                    next((str(r["units"]) for r in found if r.get("units")), ""),
                    paper=paper_value(spec, method, modality, lo, hi),
                )
                cells.append(cell)
            stats[method][modality] = cells
    return stats


def ratios(stats: Stats) -> dict[str, list[tuple[float, float]]]:
    """Per modality and bin ``(ours, paper)``: mean MIA nMSE / mean CAVIA nMSE."""
    out = {}
    for modality, mia in stats["mia"].items():
        cav = stats["cavia"][modality]
        out[modality] = [
            (ratio_of(a["mean"], b["mean"]), ratio_of(a["paper"], b["paper"]))
            for a, b in zip(mia, cav, strict=True)
        ]
    return out


def ratio_of(a: float, b: float) -> float:
    """``a / b``, NaN when either is NaN or ``b`` is 0."""
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def num_text(x: float, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits, ``-`` for NaN (no value)."""
    return "-" if math.isnan(x) else f"{x:.{digits}g}"


def table1_rows(
    spec: ReproduceSpec,
    cfg: Config,
    stats: Stats,
    reference: dict[str, float] | None = None,
    eof: dict[str, list[float]] | None = None,
    classical: ClassicalRows | None = None,
) -> list[list[str]]:
    """Table 1's layout: a row per method, a column per (modality, bin), then MIA / CAVIA.

    ``reference`` (modality -> nMSE x 1e2 of the train split's mean signal) adds a row
    with that value in every bin of the modality; ``eof`` (modality -> per-bin nMSE x 1e2
    of the linear reference, :mod:`pipelines.reports.eof_reference`) another; ``classical``
    a row per classical reference row.
    """
    bins = study_bins(cfg)
    header = ["method"] + [f"{m} [{lo:g}, {hi:g}]" for m in cfg.data.modalities for lo, hi in bins]
    rows = [header]
    has_paper = bool(spec.paper)

    def cite(value: float, digits: int = 4) -> str:
        return f" (paper {num_text(value, digits)})" if has_paper else ""

    for method in spec.ordered_methods():
        row = [LABELS[method]]
        for modality in cfg.data.modalities:
            for c in stats[method][modality]:
                mean, std = num_text(c["mean"]), num_text(c["std"], 3)
                row.append(f"{mean} ± {std}{cite(c['paper'])}")
        rows.append(row)
    ratio = ratios(stats)
    rows.append(
        [RATIO]
        + [f"{num_text(o, 3)}{cite(p, 3)}" for m in cfg.data.modalities for o, p in ratio[m]]
    )
    if reference is not None:
        rows.append(
            [REFERENCE]
            + [num_text(reference[m]) for m in cfg.data.modalities for _ in study_bins(cfg)]
        )
    if eof is not None:
        rows.append(
            [eof_label(spec.eof_components)]
            + [num_text(v) for m in cfg.data.modalities for v in eof[m]]
        )
    return rows + (classical.table_rows(cfg.data.modalities) if classical else [])


def rmse_rows(cfg: Config, stats: Stats) -> list[list[str]]:
    """Area-weighted RMSE in physical units per method and cell (units beside the value).

    Empty (no rows at all) when no cell has one: runs evaluated before these metrics, or
    every method adopted from a results JSON.
    """
    bins = study_bins(cfg)
    header = ["method"] + [f"{m} [{lo:g}, {hi:g}]" for m in cfg.data.modalities for lo, hi in bins]
    rows = []
    for method, per_mod in stats.items():
        cells = [c for m in cfg.data.modalities for c in per_mod[m]]
        text = [f"{num_text(c.get('rmse_phys', math.nan))} {c.get('units', '')}" for c in cells]
        rows.append([LABELS[method]] + [t.strip() for t in text])
    if all(c.strip() == "-" for r in rows for c in r[1:]):
        return []
    return [header, *rows]


def write_table1(
    spec: ReproduceSpec,
    cfg: Config,
    stats: Stats,
    out: Path,
    reference: dict[str, float] | None = None,
    eof: dict[str, list[float]] | None = None,
    classical: ClassicalRows | None = None,
) -> tuple[list[list[str]], list[Path]]:
    """Write ``table1.md``, ``table1.csv`` (one line per cell), ``table1.json``, ``table1.png``.

    ``reference``, ``eof`` and ``classical``: the reference rows (see :func:`table1_rows`).

    Returns:
        The markdown table's rows and the files written.
    """
    rows = table1_rows(spec, cfg, stats, reference, eof, classical)
    steps, seeds = cfg.run.steps, ", ".join(map(str, spec.seeds))
    md = out / "table1.md"
    paper = (
        "; the paper's value (Table 1, 5 seeds) in parentheses, `-` where the paper has no such bin"
        if spec.paper
        else ""
    )
    rmse = rmse_rows(cfg, stats)
    below = (
        "\nArea-weighted (cos latitude on lat-lon grids, else uniform) RMSE in physical units, "
        f"mean over seeds; the reference rows above are area-weighted.\n\n{markdown(rmse)}"
        if rmse
        else ""
    )
    md.write_text(
        f"# Reproduction of MIA Table 1: {spec.name} ({spec.backbone})\n\n"
        f"Test-split normalised MSE x 1e2, mean ± std over seeds {seeds}, {steps} outer "
        f"steps{paper}. {RATIO}: ratio of the means.\n\n{markdown(rows)}"
        + (f"\n{classical.notes()}" if classical else "")
        + below
    )
    head = ["method", "modality", "r_min", "r_max", "mean_x1e2", "std_x1e2", "paper_x1e2"]
    long: list[list[str | float]] = [[*head, "values", "rmse_phys", "units"]]
    for method, per_mod in stats.items():
        for modality, cells in per_mod.items():
            for c in cells:
                vals = ";".join(f"{v:.6g}" for v in c["values"])
                long.append(
                    [
                        method,
                        modality,
                        c["r_min"],
                        c["r_max"],
                        c["mean"],
                        c["std"],
                        c["paper"],
                        vals,
                        c.get("rmse_phys", math.nan),
                        c.get("units", ""),
                    ]
                )
    for modality, per_bin in ratios(stats).items():
        for (lo, hi), (o, p) in zip(study_bins(cfg), per_bin, strict=True):
            long.append(["mia/cavia", modality, lo, hi, o, "", p, "", "", ""])
    data = {
        "name": spec.name,
        "backbone": spec.backbone,
        "steps": steps,
        "seeds": spec.seeds,
        "bins": [list(b) for b in study_bins(cfg)],
        "nmse_x1e2": stats,
        "mia_over_cavia": {
            m: [{"ours": o, "paper": p} for o, p in v] for m, v in ratios(stats).items()
        },
        **({"train_mean_x1e2": reference} if reference is not None else {}),
        **({"eof_x1e2": eof, "eof_components": spec.eof_components} if eof is not None else {}),
        **(classical.results() if classical else {}),
    }
    js = out / "table1.json"
    js.write_text(json.dumps(json_safe(data), indent=1))
    png = plot_table1(spec, cfg, stats, out / "table1.png")
    return rows, [md, write_csv(long, out / "table1.csv"), js, png]


def plot_table1(spec: ReproduceSpec, cfg: Config, stats: Stats, path: Path) -> Path:
    """Bars per method (mean ± std) for each bin, a panel per modality, paper values as x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = spec.ordered_methods()
    mods = list(cfg.data.modalities)
    bins = study_bins(cfg)
    fig, axes = plt.subplots(1, len(mods), figsize=(3.6 * len(mods), 3.2), squeeze=False)
    width = 0.8 / len(methods)
    for ax, modality in zip(axes[0], mods, strict=True):
        for i, method in enumerate(methods):
            cells = stats[method][modality]
            xs = [b + (i - (len(methods) - 1) / 2) * width for b in range(len(bins))]
            ax.bar(
                xs,
                [c["mean"] for c in cells],
                width,
                yerr=[c["std"] for c in cells],
                label=LABELS[method],
                capsize=2,
            )
            ax.plot(xs, [c["paper"] for c in cells], "kx", ms=4, label="paper" if i == 0 else None)
        ax.set_xticks(range(len(bins)), [f"[{lo:g}, {hi:g}]" for lo, hi in bins], fontsize=7)
        ax.set_yscale("log")
        ax.set_title(modality)
        ax.set_xlabel("support ratio R")
    axes[0][0].set_ylabel("nMSE x 1e2")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{spec.name}: {spec.backbone}, {cfg.run.steps} steps, seeds {spec.seeds}")
    return save_figure(fig, path)


def store_label(cfg: Config) -> str:
    """The store a study read: its configured name, path relative to the working directory."""
    if not cfg.data.store:
        return f"{cfg.data.name} (built from the config)"
    path = Path(cfg.data.store)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return redact_url(cfg.data.store)


def protocol_text(spec: ReproduceSpec, cfg: Config) -> str:
    """The results JSON's ``protocol``: the study's text, then the bins and eval repeats."""
    bins = "; ".join(f"[{lo:g}, {hi:g}]" for lo, hi in study_bins(cfg))
    return f"{spec.protocol}; bins {bins}; {cfg.run.eval_repeats} eval repeats"


def results_data(spec: ReproduceSpec, cfg: Config, stats: Stats, extra: dict | None = None) -> dict:
    """The committed summary JSON (protocol, store, steps, seeds, backbone, nmse_x1e2).

    ``nmse_x1e2`` is method -> modality -> the means over seeds for the bins of
    ``run.eval_bins``, lowest first (Table 1: lowest, middle, highest); ``std_x1e2`` the
    sample standard deviations over seeds in the same layout (``null`` with one seed).
    ``extra`` keys (the budget curve, figure paths, config digests) follow.
    """

    def rounded(key: str) -> dict:
        return {
            m: {mod: [round(c[key], 6) for c in cells] for mod, cells in per_mod.items()}
            for m, per_mod in stats.items()
        }

    return {
        "protocol": protocol_text(spec, cfg),
        "store": store_label(cfg),
        "steps": cfg.run.steps,
        "seeds": list(spec.seeds),
        "backbone": spec.backbone,
        "nmse_x1e2": rounded("mean"),
        "std_x1e2": rounded("std"),
        **(extra or {}),
    }


__all__ = [
    "LABELS",
    "RATIO",
    "REFERENCE",
    "num_text",
    "paper_value",
    "protocol_text",
    "ratio_of",
    "ratios",
    "rmse_rows",
    "store_label",
    "study_bins",
    "table1_rows",
    "table_stats",
    "results_data",
    "write_table1",
]

"""The ablation study's results: per-dataset tables, their captions and ``report.md``.

Tables compare variants over seeds (mean ± std): relative improvement over CAVIA on
non-support (G) and support points (M) for the ``components`` and ``states`` studies,
target nmse per support-ratio bin for ``modalities``, and, for ``trajectories``, the
frozen-CAVIA + SFT comparison per source ratio and the Pearson correlation of the MSFT
attention with the support sizes (with their figures).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mia_core.config import Config
from pipelines.data.resolve import open_training_store
from pipelines.reports import ablation_analysis as an
from pipelines.studies.ablation_spec import AblationSpec
from pipelines.studies.driver import markdown

# The improvement tables: study -> (switch names, [(variant, which switches are on)]).
SWITCHES = {
    "components": (
        ["USFT", "MSFT", "Fusion MLP"],
        [("cavia", "000"), ("usft", "100"), ("usft_msft", "110"), ("full", "111")],
    ),
    "states": (
        ["Params", "Grads", "Scaling"],
        [("grads", "010"), ("grads_scaling", "011"), ("full", "111")],
    ),
}


def study_tables(
    spec: AblationSpec,
    ds: str,
    base: Config,
    target: str,
    runs: dict[str, dict[int, dict]],
    root: Path,
    figures: list[Path],
    log: Callable[[str], None],
) -> dict[str, list[list[str]]]:
    """The tables of dataset ``ds``: ``<ds>_<study>`` -> rows (header first).

    Args:
        spec: the study.
        ds: dataset name.
        base: the dataset's base config (store resolved).
        target: the dataset's target modality.
        runs: variant -> seed -> the run's ``metrics.json``.
        root: the dataset's folder (``<study>/<ds>``), holding every variant's runs.
        figures: the figures drawn are appended here.
        log: line printer.
    """
    seeds = spec.seeds
    out: dict[str, list[list[str]]] = {}
    head = ["G (%)", "M (%)", "nmse non-support x1e2", "nmse support x1e2"]

    def improvement_rows(variants: list[tuple[str, list[str]]]) -> list[list[str]]:
        rows = []
        for v, marks in variants:
            t = {s: runs[v][s]["test"] for s in seeds}
            ref = {s: runs["cavia"][s]["test"] for s in seeds}
            g = [an.relative_improvement(t[s], ref[s], "nmse_nonsupport") for s in seeds]
            m = [an.relative_improvement(t[s], ref[s], "nmse_support") for s in seeds]
            ns = [100 * _mean(t[s], "nmse_nonsupport") for s in seeds]
            sp = [100 * _mean(t[s], "nmse_support") for s in seeds]
            rows.append([*marks, an.fmt(g), an.fmt(m), an.fmt(ns), an.fmt(sp)])
        return rows

    for study, (switches, variants) in SWITCHES.items():
        if study in spec.studies:
            marked = [(v, ["✓" if on == "1" else "✗" for on in bits]) for v, bits in variants]
            out[f"{ds}_{study}"] = [[*switches, *head], *improvement_rows(marked)]
    if "modalities" in spec.studies:
        rows = [
            [
                "support ratio",
                f"{target} only: nmse x1e2",
                "all modalities: nmse x1e2",
                "improvement (%)",
            ]
        ]
        for lo, hi in base.run.eval_bins:
            sub = [100 * _bin(runs["subset"][s]["test"], target, lo, hi) for s in seeds]
            full = [100 * _bin(runs["full"][s]["test"], target, lo, hi) for s in seeds]
            imp = [100 * (a - b) / a for a, b in zip(sub, full, strict=True)]
            rows.append([f"[{lo:g}, {hi:g}]", an.fmt(sub), an.fmt(full), an.fmt(imp)])
        out[f"{ds}_modalities"] = rows
    if "trajectories" in spec.studies:
        store = open_training_store(base)
        device = torch.device("cpu")
        per_seed, corr = [], []
        n, stride, figs = spec.analysis_signals, base.data.spatial_stride, root / "figures"
        for s in seeds:
            learners = {
                k: an.load_learner(root / v / f"seed{s}", store, device)
                for k, v in (("cavia", "cavia"), ("sft", "frozen_sft"), ("full", "full"))
            }
            full = learners.pop("full")
            ratios = (spec.target_ratio, spec.source_ratios)
            res = an.trajectories(learners, store, target, *ratios, n, base.run.seed + 11, stride)
            per_seed.append(res)
            lo_hi = tuple(spec.attention_ratio)
            c, abar, mods = an.attention_correlation(
                full, store, lo_hi, n, base.run.seed + 13, stride
            )
            corr.append(c)
            if s == seeds[0]:
                title = f"{ds}: {target} context trajectories (R_target={spec.target_ratio:g}"
                path = figs / f"trajectories_{target}.png"
                figures.append(
                    an.plot_trajectories(
                        res, target, path, spec.plot_signals, f"{title}, seed {s})"
                    )
                )
                title = f"{ds}: mean MSFT attention (row-scaled, seed {s})"
                path = figs / "msft_attention_mean.png"
                figures.append(an.plot_matrix(abar / abar.max(), mods, title, path))
        rows = [
            [
                "source ratio",
                f"CAVIA (GD): {target} nmse x1e2",
                f"frozen CAVIA + SFT: {target} nmse x1e2",
                "improvement (%)",
            ]
        ]
        for r in spec.source_ratios:
            a = [100 * p["nmse"]["cavia"][r] for p in per_seed]
            b = [100 * p["nmse"]["sft"][r] for p in per_seed]
            imp = [100 * (x - y) / x for x, y in zip(a, b, strict=True)]
            rows.append([f"{r:g}", an.fmt(a), an.fmt(b), an.fmt(imp)])
        out[f"{ds}_trajectories"] = rows
        stack = np.stack(corr)
        out[f"{ds}_attention_pearson"] = [
            ["C_ij (i = attending, j = support size of)", *mods],
            *[
                [mods[i], *(an.fmt(list(stack[:, i, j]), 2) for j in range(len(mods)))]
                for i in range(len(mods))
            ],
        ]
        figures.append(
            an.plot_matrix(
                stack.mean(0),
                mods,
                f"{ds}: Pearson C_ij, MSFT attention vs support size ({len(seeds)} seeds)",
                root / "figures" / "attention_pearson.png",
            )
        )
    log(f"ablation {spec.name}: {ds} tables done")
    return out


def _mean(test: list[dict], key: str) -> float:
    vals = [r[key] for r in test if r[key] == r[key]]
    return sum(vals) / len(vals)


def _bin(test: list[dict], modality: str, lo: float, hi: float) -> float:
    for r in test:
        if r["modality"] == modality and r["r_min"] == lo and r["r_max"] == hi:
            return r["nmse_all"]
    raise KeyError(f"no test row for {modality} in [{lo}, {hi}]")


CAPTIONS = {
    "components": "SFT components: relative improvement over CAVIA on non-support points "
    "(G, generalisation) and support points (M, memorisation), mean over modalities and "
    "support-ratio bins, and the absolute normalised MSEs.",
    "states": "SFT state inputs (Params + Grads + Scaling is the full model): relative "
    "improvement over CAVIA.",
    "modalities": "Modality replacement: MIA trained and evaluated on the target modality "
    "alone vs on all modalities; normalised MSE of the target (all points) per support-ratio "
    "bin.",
    "trajectories": "Learning trajectories: target nmse after the inner loop of a frozen "
    "CAVIA (GD) and of an SFT meta-learned on top of it, for the target at the trajectory "
    "ratio and the other modalities at each source ratio.",
    "attention_pearson": "Pearson C_ij between the full model's mean MSFT attention from "
    "modality i to modality j and the support size of modality j, over test signals.",
}


def write_report(
    spec: AblationSpec,
    tables: dict[str, list[list[str]]],
    figures: list[Path],
    out: Path,
    seconds: float,
) -> Path:
    """Write ``<out>/report.md`` (tables with captions, figures copied to ``figures/``)."""
    lines = [
        f"# Ablation study `{spec.name}`",
        "",
        f"Seeds {spec.seeds} (mean ± std); budget overrides: `{' '.join(spec.budget) or '-'}`; "
        f"wall time of this invocation {seconds / 60:.1f} min (finished runs are reused).",
        "",
    ]
    for name, rows in tables.items():
        ds, _, study = name.partition("_")
        lines += [f"## {ds}: {study}", "", CAPTIONS.get(study, ""), "", markdown(rows)]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}](figures/{p.parent.parent.name}_{p.name})" for p in figures]
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for p in figures:
        (fig_dir / f"{p.parent.parent.name}_{p.name}").write_bytes(p.read_bytes())
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["CAPTIONS", "study_tables", "write_report"]

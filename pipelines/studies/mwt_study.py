"""MWT vs WT vs raw pixels over seeds: the MWT workflow of the comparison study.

A study file (``configs/reproduce/mwt_*.yaml``, top level =
:class:`~pipelines.studies.comparison.ComparisonSpec`) names one MWT experiment (``base``),
the variants trained from it (``mwt`` as is, ``wt`` with ``method.mwt.w_cls=0`` by
default) and the seeds; :mod:`pipelines.studies.comparison` trains them under
``<run.out_dir>/mwt_study/<name>/<variant>/seed<k>``. The logistic regression on raw
pixels comes with every run's report (the same test split; it does not depend on the
seed's training).

The results entry (``results_json``, e.g. ``benchmarks/results/mwt.json``, one per
``dataset``): mean test accuracies ``mwt``, ``wt``, ``pixels`` (fractions), ``psnr_db``
(MWT's mean test PSNR), ``wt_psnr_db``, their standard deviations, every seed's numbers,
the budget and the machine, and ``val_curve``: per variant, the seed-mean validation
accuracy at every evaluation step (read back from each run's MLflow ``val_accuracy``
history), so a target missed at the end of the budget comes with its curve.
``mia-inr mwt-study --readme <json>`` renders the block in ``docs/mwt.md``.
"""

from __future__ import annotations

import statistics
from typing import Any

from mia_core.config import Config
from pipelines.engine.run_dir import run_dir_of
from pipelines.studies.comparison import ComparisonSpec, Configs, Metrics, Workflow
from pipelines.studies.driver import markdown
from pipelines.studies.reproduce import machine_label
from pipelines.studies.reproduce_adopt import config_digest
from pipelines.tracking import run_groups


def validation_curve(cfg: Config) -> dict[int, float]:
    """``step -> validation accuracy`` of the run of ``cfg``.

    Read from its MLflow metric history; a resumed run's repeated steps keep the last value.
    """
    run_id = (run_dir_of(cfg) / "mlflow_run_id").read_text().strip()
    history = run_groups.client_for(cfg).get_metric_history(run_id, "val_accuracy")
    return {int(m.step): float(m.value) for m in sorted(history, key=lambda m: m.timestamp)}


def seed_mean_curve(curves: list[dict[int, float]]) -> dict[str, float]:
    """Mean over seeds at the steps every seed evaluated (JSON keys: step strings)."""
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return {str(k): statistics.fmean(c[k] for c in curves) for k in steps}


def study_entry(spec: ComparisonSpec, configs: Configs, metrics: Metrics) -> dict[str, Any]:
    """The results entry of one study from each run's ``metrics.json``."""
    cfg = next(iter(configs.values()))

    def per_seed(variant: str, key: str) -> list[float]:
        return [float(metrics[(variant, s)][key]) for s in spec.seeds]

    def mean_std(values: list[float]) -> tuple[float, float | None]:
        std = statistics.stdev(values) if len(values) > 1 else None
        return statistics.fmean(values), std

    entry: dict[str, Any] = {}
    stds: dict[str, float | None] = {}
    for key, variant, metric in (
        ("mwt", "mwt", "test_accuracy"),
        ("wt", "wt", "test_accuracy"),
        ("pixels", "mwt", "logreg_test_accuracy"),
        ("psnr_db", "mwt", "test_psnr"),
        ("wt_psnr_db", "wt", "test_psnr"),
    ):
        entry[key], stds[key] = mean_std(per_seed(variant, metric))
    entry["std"] = stds
    entry["per_seed"] = {
        v: {
            str(s): {
                "accuracy": metrics[(v, s)]["test_accuracy"],
                "psnr_db": metrics[(v, s)]["test_psnr"],
                "best_step": metrics[(v, s)]["best_step"],
            }
            for s in spec.seeds
        }
        for v in spec.variants
    }
    entry["val_curve"] = {
        v: seed_mean_curve([validation_curve(configs[(v, s)]) for s in spec.seeds])
        for v in spec.variants
    }
    entry.update(
        seeds=list(spec.seeds),
        test_images=int(metrics[("mwt", spec.seeds[0])]["test_n"]),
        steps=cfg.run.steps,
        description=spec.description,
        config_digest=config_digest(cfg),
        machine=machine_label(cfg),
    )
    return entry


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table (accuracy in %, PSNR in dB, mean ± std over seeds) of every dataset."""
    lines = []
    for dataset, e in results.items():
        n = len(e["seeds"])
        rows = [
            ["model", "test accuracy", "test PSNR"],
            ["MWT", _cell(e, "mwt"), _cell(e, "psnr_db", 1.0, " dB")],
            ["WT (`w_cls = 0`)", _cell(e, "wt"), _cell(e, "wt_psnr_db", 1.0, " dB")],
            ["logistic regression on pixels", _cell(e, "pixels"), "-"],
        ]
        lines += [
            f"**{dataset}**: {e['description']} ({n} seed{'s' * (n > 1)}, {e['steps']} "
            f"steps, {e['test_images']} test images; {e['machine']})",
            "",
            markdown(rows),
        ]
        curves = {v: c for v, c in e.get("val_curve", {}).items() if c}
        if curves:  # validation accuracy (%) by step, one column per variant
            steps = sorted({int(k) for c in curves.values() for k in c})
            head = ["step", *(f"{v} validation accuracy (seed mean)" for v in curves)]
            body = [
                [k, *(f"{c[str(k)] * 100:.2f}%" if str(k) in c else "-" for c in curves.values())]
                for k in steps
            ]
            lines.append(markdown([head, *body]))
    return "\n".join(lines).rstrip() + "\n"


def _cell(entry: dict[str, Any], key: str, scale: float = 100.0, unit: str = "%") -> str:
    std = entry["std"].get(key)
    spread = f" ± {std * scale:.2f}" if std is not None else ""
    return f"{entry[key] * scale:.2f}{spread}{unit}"


def _flat(entry: dict[str, Any]) -> dict[str, float]:
    return {k: float(entry[k]) for k in ("mwt", "wt", "pixels", "psnr_db", "wt_psnr_db")}


MWT = Workflow(
    section="mwt_study",
    folder="mwt_study",
    block="mwt",
    methods=("mwt",),
    required=("mwt", "wt"),
    entry=study_entry,
    render=render_table,
    flat=_flat,
    default_variants={"mwt": [], "wt": ["method.mwt.w_cls=0"]},
    page="docs/mwt.md",
)


load_mwt_study = MWT.load
run_mwt_study = MWT.run
write_readme = MWT.write_readme


__all__ = [
    "MWT",
    "load_mwt_study",
    "render_table",
    "run_mwt_study",
    "study_entry",
    "write_readme",
]

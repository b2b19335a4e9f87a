"""MCL-NF and its baselines over seeds: the continual workflow of the comparison study.

A study file (``configs/reproduce/mcl_nf_*.yaml``, top level =
:class:`~pipelines.studies.comparison.ComparisonSpec`) names one continual experiment
(``base``), the methods as variants of it (``variant -> overrides``, e.g.
``method.name=maml_cl``) and the seeds; :mod:`pipelines.studies.comparison` trains them
under ``<run.out_dir>/continual_study/<name>/<variant>/seed<k>`` and each run's report
evaluates it at every test-time budget of ``method.mcl.eval_budgets`` (steps per task).
A variant with ``run.steps=0`` is not meta-trained: it learns from the seed's random
init, as the MCL-NF paper's OL, CL, ER and EWC rows do; ``method.mcl.num_tasks=1`` makes
the whole signal one task (the paper's offline rows, OL and MOL).

The results entry (``results_json``, e.g. ``benchmarks/results/mcl_nf.json``, one per
``dataset``) holds, per variant, the MCL-NF paper's Table 1 columns of the final model's
PSNR, the whole test signal's under the final model (its tasks' MSEs weighted by their
points) averaged over test signals: ``step1`` (budget 1), ``best`` and ``best_budget``
(the highest point of the seed-mean curve), ``final`` (the largest budget) and
``forgetting`` (dB a task lost between being learned and the end, at the largest budget),
with standard deviations over seeds and the seed-mean curve. (Runs evaluated before the
whole-signal PSNR existed give the mean of the tasks' PSNRs; ``psnr`` says which.)
"""

from __future__ import annotations

import statistics
from typing import Any

from mia_core.config import Config
from mia_core.config.schema_method import CONTINUAL_METHOD_NAMES
from pipelines.studies.comparison import ComparisonSpec, Configs, Metrics, Workflow
from pipelines.studies.driver import markdown
from pipelines.studies.reproduce import machine_label
from pipelines.studies.reproduce_adopt import config_digest


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def variant_entry(
    spec: ComparisonSpec, variant: str, cfg: Config, metrics: Metrics
) -> dict[str, Any]:
    """Step 1 / Best / Final / forgetting of one variant (``cfg``: its first run's config)."""
    runs = [metrics[(variant, s)] for s in spec.seeds]
    budgets = sorted(int(b) for b in runs[0]["budgets"])
    whole = runs[0]["budgets"][str(budgets[0])].get("final_signal") is not None
    key = "final_signal" if whole else "final"
    finals = {b: [r["budgets"][str(b)][key] for r in runs] for b in budgets}
    curve = {b: statistics.fmean(v) for b, v in finals.items()}
    best = max(budgets, key=lambda b: curve[b])
    last = budgets[-1]
    forget = [r["budgets"][str(last)]["forgetting"] for r in runs]
    return {
        "method": runs[0]["method"],
        "meta_trained_steps": cfg.run.steps,
        "tasks": cfg.method.mcl.num_tasks,
        "fim_lambda": cfg.method.fim_lambda,
        "meta_parameters": runs[0]["meta_parameters"],
        "step1": curve[budgets[0]],
        "best": curve[best],
        "best_budget": best,
        "final": curve[last],
        "forgetting": statistics.fmean(forget),
        "std": {
            "step1": _std(finals[budgets[0]]),
            "best": _std(finals[best]),
            "final": _std(finals[last]),
            "forgetting": _std(forget),
        },
        "curve": {str(b): curve[b] for b in budgets},
        "psnr": "whole signal" if key == "final_signal" else "mean over tasks",
        "per_seed_final": {str(s): f for s, f in zip(spec.seeds, finals[last], strict=True)},
    }


def study_entry(spec: ComparisonSpec, configs: Configs, metrics: Metrics) -> dict[str, Any]:
    """The results entry of one study (module docstring)."""
    seed = spec.seeds[0]
    cfg, first = configs[(next(iter(spec.variants)), seed)], next(iter(metrics.values()))
    mcl = cfg.method.mcl
    return {
        "methods": {v: variant_entry(spec, v, configs[(v, seed)], metrics) for v in spec.variants},
        "budgets": sorted(int(b) for b in first["budgets"]),
        "optimizer": mcl.eval_optimizer,
        "eval_lr": mcl.eval_lr or cfg.method.inner_lr,
        "test_sequences": first["test_sequences"],
        "seeds": list(spec.seeds),
        "description": spec.description,
        "config_digest": config_digest(cfg),
        "machine": machine_label(cfg),
    }


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown tables (PSNR in dB, mean ± std over seeds) of every dataset."""
    lines: list[str] = []
    for dataset, e in results.items():
        n, budgets = len(e["seeds"]), e["budgets"]
        rows = [
            ["method", "meta-trained steps", "tasks", "Step 1", "Best (budget)"]
            + [f"Step {budgets[-1]}", f"forgetting at {budgets[-1]}"]
        ]
        for variant, m in e["methods"].items():
            fim = f", FIM {m['fim_lambda']:g}" if m["fim_lambda"] else ""
            rows.append(
                [f"{variant} (`{m['method']}`{fim})", m["meta_trained_steps"], m["tasks"]]
                + [_cell(m, "step1"), f"{_cell(m, 'best')} ({m['best_budget']})"]
                + [_cell(m, "final"), _cell(m, "forgetting")]
            )
        lines += [
            f"**{dataset}**: {e['description']} ({n} seed{'s' * (n > 1)}, "
            f"{e['test_sequences']} test signals; test time: {e['optimizer']} at lr "
            f"{e['eval_lr']:g}, budgets {budgets[0]}-{budgets[-1]} steps per task; "
            f"{e['machine']})",
            "",
            f"PSNR (dB) of the final model: {_psnr_kind(e)}, mean over test signals, "
            "mean ± std over seeds; forgetting: dB a task lost between being learned and "
            "the end.",
            "",
            markdown(rows),
        ]
    return "\n".join(lines).rstrip() + "\n"


def _psnr_kind(entry: dict[str, Any]) -> str:
    kinds = {m.get("psnr", "mean over tasks") for m in entry["methods"].values()}
    return "the whole signal's" if kinds == {"whole signal"} else "the mean of its tasks'"


def _cell(m: dict[str, Any], key: str) -> str:
    std = m["std"].get(key)
    return f"{m[key]:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _flat(entry: dict[str, Any]) -> dict[str, float]:
    return {
        f"{v}_{k}": float(m[k])
        for v, m in entry["methods"].items()
        for k in ("step1", "best", "final", "forgetting")
    }


CONTINUAL = Workflow(
    section="continual_study",
    folder="continual_study",
    block="mcl_nf",
    methods=CONTINUAL_METHOD_NAMES,
    required=(),
    entry=study_entry,
    render=render_table,
    flat=_flat,
    page="docs/mcl_nf.md",
)


load_continual_study = CONTINUAL.load
run_continual_study = CONTINUAL.run
write_readme = CONTINUAL.write_readme


__all__ = [
    "CONTINUAL",
    "load_continual_study",
    "render_table",
    "run_continual_study",
    "study_entry",
    "write_readme",
]

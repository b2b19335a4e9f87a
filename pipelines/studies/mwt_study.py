"""MWT vs WT vs raw pixels over seeds: the study file, the runs, the results JSON and table.

A study file (``configs/reproduce/mwt_*.yaml``, top level = :class:`MWTStudySpec`) names
one MWT experiment (``base``), the variants trained from it (``mwt`` as is, ``wt`` with
``method.mwt.w_cls=0`` by default) and the seeds. Every variant x seed is an ordinary
training run under ``<run.out_dir>/mwt_study/<name>/<variant>/seed<k>`` (an MLflow child of
the study's parent run), trained by :func:`~pipelines.studies.child_run.train_children`
(``workers`` at a time; finished runs are skipped, interrupted ones resume), and evaluated
on the test split by the MWT report. The logistic regression on raw pixels comes with
every run's report (the same test split; it does not depend on the seed's training).

The results JSON (``results_json``, e.g. ``benchmarks/results/mwt.json``) keeps one entry
per ``dataset`` (other datasets already in the file stay): mean test accuracies
``mwt``, ``wt``, ``pixels`` (fractions), ``psnr_db`` (MWT's mean test PSNR),
``wt_psnr_db``, their standard deviations, every seed's numbers, the budget and the
machine. ``mia-inr mwt-study --readme <json>`` renders the README block from it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mia_core.config import Config, ConfigError, load_config
from mia_core.config.spec import Problems, Validated, bounded, load_spec, split_overrides
from pipelines.engine.run_dir import refuse_changed_config
from pipelines.reports.readme_blocks import write_block
from pipelines.studies.child_run import ChildJob, train_children
from pipelines.studies.reproduce import machine_label
from pipelines.studies.reproduce_adopt import config_digest
from pipelines.tracking import run_groups

SECTION = "mwt_study"
BLOCK = "mwt"


@dataclass
class MWTStudySpec(Validated):
    """One MWT comparison, as read from its study file.

    Attributes:
        name: folder ``<run.out_dir>/mwt_study/<name>`` and MLflow parent run name.
        dataset: key of this study's entry in the results JSON (e.g. ``mnist``).
        base: MWT experiment YAML (relative to the study file; absolute once loaded).
        variants: variant -> overrides of the base; must hold ``mwt`` and ``wt``.
        seeds: ``run.seed`` of the repeats (distinct; two or more give a std).
        budget: ``key=value`` overrides applied to every run.
        workers: runs trained at once, each in its own process.
        threads: torch threads of each run.
        results_json: results file to write (relative to the working directory); empty:
            none.
        description: one line on the data and budget, shown above the README table.
    """

    name: str
    dataset: str
    base: str
    variants: dict[str, list[str]] = field(
        default_factory=lambda: {"mwt": [], "wt": ["method.mwt.w_cls=0"]}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: list[str] = field(default_factory=list)
    workers: int = bounded(1, ge=1)
    threads: int = bounded(1, ge=1)
    results_json: str = ""
    description: str = ""

    def _extra_problems(self) -> Problems:
        missing = sorted({"mwt", "wt"} - set(self.variants))
        if missing:
            yield "variants", f"must include {missing} (the table compares MWT with WT)"
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"need distinct seeds, got {self.seeds}"


def load_mwt_study(path: str | Path, extra: Sequence[str] = ()) -> MWTStudySpec:
    """Read a study file; ``mwt_study.<field>=v`` overrides it, other ``k=v`` join ``budget``.

    Raises:
        ConfigError: naming the file or override and the key, or a base that is not an
            MWT experiment.
    """
    path = Path(path)
    own, rest = split_overrides(extra, SECTION)
    spec = load_spec(MWTStudySpec, path, own, SECTION, nested=False)
    spec = dataclasses.replace(
        spec, base=str((path.parent / spec.base).resolve()), budget=[*spec.budget, *rest]
    )
    for variant in spec.variants:
        cfg = variant_config(spec, variant, spec.seeds[0])
        if cfg.method.name != "mwt":
            raise ConfigError(f"{path}: {SECTION}.base must be an MWT experiment (method.name)")
    return spec


def variant_config(spec: MWTStudySpec, variant: str, seed: int) -> Config:
    """The run config of ``variant`` x ``seed`` under the study folder."""
    cfg = load_config(spec.base, [*spec.budget, *spec.variants[variant]])
    out = Path(cfg.run.out_dir).resolve() / "mwt_study" / spec.name / variant
    run = dataclasses.replace(cfg.run, name=f"seed{seed}", seed=seed, out_dir=str(out))
    return dataclasses.replace(cfg, run=run)


def run_mwt_study(
    spec: MWTStudySpec,
    log: Callable[[str], None] = print,
    *,
    local: bool = True,
    address: str | None = None,
) -> dict[str, Any]:
    """Train (or continue) every run, then write and return this study's results entry."""
    order = [(v, s) for s in spec.seeds for v in spec.variants]  # seed-major
    configs = {(v, s): variant_config(spec, v, s) for v, s in order}
    for cfg in configs.values():
        refuse_changed_config(cfg, f"change {SECTION}.name to run the new budget")
    first = configs[order[0]]
    out = Path(first.run.out_dir).parent
    out.mkdir(parents=True, exist_ok=True)
    parent = run_groups.open_run(
        first,
        out / "mlflow_run_id",
        f"mwt_study:{spec.name}",
        params={
            "mwt_study.variants": json.dumps(spec.variants),
            "mwt_study.seeds": json.dumps(spec.seeds),
            "mwt_study.budget": json.dumps(spec.budget),
        },
        tags={"mwt_study": spec.name},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        children = [
            ChildJob(configs[k], f"{k[0]}/seed{k[1]}", {"mwt_study.variant": k[0]}) for k in order
        ]
        done = train_children(
            children,
            parent,
            log,
            workers=spec.workers,
            threads=spec.threads,
            local=local,
            address=address,
        )
    finally:
        torch.set_num_threads(threads)
    entry = study_entry(spec, first, dict(zip(order, done, strict=True)))
    run_groups.log_metrics(first, parent, _flat(entry))
    if spec.results_json:
        path = write_results(Path(spec.results_json), spec.dataset, entry)
        run_groups.log_artifacts(first, parent, [path])
        log(f"mwt study {spec.name}: wrote {path}")
    run_groups.close_run(first, parent)
    log(render_table({spec.dataset: entry}))
    return entry


def study_entry(
    spec: MWTStudySpec, cfg: Config, metrics: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    """The results entry of one study from each run's ``metrics.json``."""

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
    entry.update(
        seeds=list(spec.seeds),
        test_images=int(metrics[("mwt", spec.seeds[0])]["test_n"]),
        steps=cfg.run.steps,
        description=spec.description,
        config_digest=config_digest(cfg),
        machine=machine_label(cfg),
    )
    return entry


def write_results(path: Path, dataset: str, entry: dict[str, Any]) -> Path:
    """Merge ``entry`` under ``dataset`` into the results JSON at ``path``."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[dataset] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table (accuracy in %, PSNR in dB, mean ± std over seeds) of every dataset."""
    lines = []
    for dataset, e in results.items():
        n = len(e["seeds"])
        lines += [
            f"**{dataset}**: {e['description']} ({n} seed{'s' * (n > 1)}, {e['steps']} "
            f"steps, {e['test_images']} test images; {e['machine']})",
            "",
            "| model | test accuracy | test PSNR |",
            "|---|---|---|",
            f"| MWT | {_cell(e, 'mwt')} | {_cell(e, 'psnr_db', 1.0, ' dB')} |",
            f"| WT (`w_cls = 0`) | {_cell(e, 'wt')} | {_cell(e, 'wt_psnr_db', 1.0, ' dB')} |",
            f"| logistic regression on pixels | {_cell(e, 'pixels')} | - |",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _cell(entry: dict[str, Any], key: str, scale: float = 100.0, unit: str = "%") -> str:
    std = entry["std"].get(key)
    spread = f" ± {std * scale:.2f}" if std is not None else ""
    return f"{entry[key] * scale:.2f}{spread}{unit}"


def write_readme(results_json: str | Path, readme: str | Path = "README.md") -> Path:
    """Fill the README's ``mwt`` block from ``results_json``."""
    results = json.loads(Path(results_json).read_text())
    return write_block(readme, BLOCK, render_table(results))


def _flat(entry: dict[str, Any]) -> dict[str, float]:
    return {k: float(entry[k]) for k in ("mwt", "wt", "pixels", "psnr_db", "wt_psnr_db")}


__all__ = [
    "MWTStudySpec",
    "load_mwt_study",
    "render_table",
    "run_mwt_study",
    "study_entry",
    "variant_config",
    "write_readme",
    "write_results",
]

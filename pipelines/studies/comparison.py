"""Variants of one experiment over seeds: the study file, the runs and the results JSON.

The mechanism behind ``mia-inr mwt-study`` and ``mia-inr continual-study``. A study file
(top level = :class:`ComparisonSpec`) names one experiment (``base``), the variants
trained from it (``variant -> overrides``) and the seeds. Every variant x seed is an
ordinary training run under ``<run.out_dir>/<workflow folder>/<name>/<variant>/seed<k>``
(an MLflow child of the study's parent run), trained by
:func:`~pipelines.studies.child_run.train_children` (``workers`` at a time, seed-major;
finished runs are skipped, interrupted ones resume) and evaluated by its task's report.

A :class:`Workflow` says what is specific to a kind of study: the method names its
variants may use, the variants it needs, how the runs' ``metrics.json`` become one results
entry, and how entries render as the generated block of its docs page. The results JSON
keeps one entry per ``dataset`` (other datasets already in the file stay).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mia_core.config import Config, ConfigError, load_config
from mia_core.config.spec import Problems, Validated, bounded, load_spec, split_overrides
from pipelines.data.stores.results_file import read_results
from pipelines.data.stores.results_file import write_results as write_results_file
from pipelines.engine.run_dir import refuse_changed_config
from pipelines.reports.readme_blocks import write_block
from pipelines.studies.child_run import ChildJob, train_children
from pipelines.tracking import run_groups

Metrics = dict[tuple[str, int], dict[str, Any]]
Configs = dict[tuple[str, int], Config]


@dataclass
class ComparisonSpec(Validated):
    """One comparison, as read from its study file.

    Attributes:
        name: folder ``<run.out_dir>/<workflow folder>/<name>`` and MLflow parent run name.
        dataset: key of this study's entry in the results JSON (e.g. ``mnist``).
        base: experiment YAML (relative to the study file; absolute once loaded).
        variants: variant -> overrides of the base (the workflow names the ones needed);
            empty: the workflow's default variants.
        seeds: ``run.seed`` of the repeats (distinct; two or more give a std).
        budget: ``key=value`` overrides applied to every run (before the variant's own).
        workers: runs trained at once, each in its own process.
        threads: torch threads of each run.
        results_json: results file to write (relative to the working directory); empty:
            none.
        description: one line on the data and budget, shown above the generated table.
    """

    name: str
    dataset: str
    base: str
    variants: dict[str, list[str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: list[str] = field(default_factory=list)
    workers: int = bounded(1, ge=1)
    threads: int = bounded(1, ge=1)
    results_json: str = ""
    description: str = ""

    def _extra_problems(self) -> Problems:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"need distinct seeds, got {self.seeds}"


@dataclass(frozen=True)
class Workflow:
    """What one kind of comparison study adds to the shared mechanism.

    Attributes:
        section: the study file's override prefix (``<section>.<field>=value``).
        folder: the runs' folder under ``run.out_dir``.
        block: generated block name (HTML comments ``<block>:begin`` / ``<block>:end``).
        methods: ``method.name`` values a variant may resolve to.
        required: variants every study of this kind must hold.
        entry: ``(spec, configs, metrics)`` -> the results entry; both mappings are keyed
            by ``(variant, seed)`` and iterate seed-major (the first is the first run).
        render: datasets -> entries -> the generated block's markdown.
        flat: entry -> scalars logged to the parent MLflow run.
        page: the docs page holding the block (``--readme`` writes it there).
        default_variants: the variants of a study file that names none.
    """

    section: str
    folder: str
    block: str
    methods: tuple[str, ...]
    required: tuple[str, ...]
    entry: Callable[[ComparisonSpec, Configs, Metrics], dict[str, Any]]
    render: Callable[[dict[str, dict[str, Any]]], str]
    flat: Callable[[dict[str, Any]], dict[str, float]]
    page: str
    default_variants: dict[str, list[str]] = field(default_factory=dict)


def load_comparison(
    workflow: Workflow, path: str | Path, extra: Sequence[str] = ()
) -> ComparisonSpec:
    """Read a study file; ``<section>.<field>=v`` overrides it, other ``k=v`` join ``budget``.

    Raises:
        ConfigError: naming the file or override and the key, a missing required variant,
            or a variant whose method is not one of the workflow's.
    """
    path = Path(path)
    own, rest = split_overrides(extra, workflow.section)
    spec = load_spec(ComparisonSpec, path, own, workflow.section, nested=False)
    spec = dataclasses.replace(
        spec,
        base=str((path.parent / spec.base).resolve()),
        budget=[*spec.budget, *rest],
        variants=spec.variants or dict(workflow.default_variants),
    )
    missing = sorted(set(workflow.required) - set(spec.variants))
    if not spec.variants:
        raise ConfigError(f"{path}: {workflow.section}.variants names no variant")
    if missing:
        raise ConfigError(f"{path}: {workflow.section}.variants must include {missing}")
    for variant in spec.variants:
        cfg = variant_config(workflow, spec, variant, spec.seeds[0])
        if cfg.method.name not in workflow.methods:
            raise ConfigError(
                f"{path}: variant {variant!r} is method.name={cfg.method.name!r}; a "
                f"{workflow.section} compares {list(workflow.methods)}"
            )
    return spec


def variant_config(workflow: Workflow, spec: ComparisonSpec, variant: str, seed: int) -> Config:
    """The run config of ``variant`` x ``seed`` under the study folder."""
    cfg = load_config(spec.base, [*spec.budget, *spec.variants[variant]])
    out = Path(cfg.run.out_dir).resolve() / workflow.folder / spec.name / variant
    run = dataclasses.replace(cfg.run, name=f"seed{seed}", seed=seed, out_dir=str(out))
    return dataclasses.replace(cfg, run=run)


def run_comparison(
    workflow: Workflow,
    spec: ComparisonSpec,
    log: Callable[[str], None] = print,
    *,
    local: bool = True,
    address: str | None = None,
) -> dict[str, Any]:
    """Train (or continue) every run, then write and return this study's results entry."""
    order = [(v, s) for s in spec.seeds for v in spec.variants]  # seed-major
    configs = {(v, s): variant_config(workflow, spec, v, s) for v, s in order}
    for cfg in configs.values():
        refuse_changed_config(cfg, f"change {workflow.section}.name to run the new budget")
    first = configs[order[0]]
    out = Path(first.run.out_dir).parent
    out.mkdir(parents=True, exist_ok=True)
    parent = run_groups.open_run(
        first,
        out / "mlflow_run_id",
        f"{workflow.section}:{spec.name}",
        params={
            f"{workflow.section}.variants": json.dumps(spec.variants),
            f"{workflow.section}.seeds": json.dumps(spec.seeds),
            f"{workflow.section}.budget": json.dumps(spec.budget),
        },
        tags={workflow.section: spec.name},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        children = [
            ChildJob(configs[k], f"{k[0]}/seed{k[1]}", {f"{workflow.section}.variant": k[0]})
            for k in order
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
    entry = workflow.entry(spec, configs, dict(zip(order, done, strict=True)))
    run_groups.log_metrics(first, parent, workflow.flat(entry))
    if spec.results_json:
        path = write_results(Path(spec.results_json), spec.dataset, entry)
        run_groups.log_artifacts(first, parent, [path])
        log(f"{workflow.section} {spec.name}: wrote {path}")
    run_groups.close_run(first, parent)
    log(workflow.render({spec.dataset: entry}))
    return entry


def write_results(path: Path, dataset: str, entry: dict[str, Any]) -> Path:
    """Merge ``entry`` under ``dataset`` into the results JSON at ``path``."""
    data = read_results(path)
    data[dataset] = entry
    return write_results_file(path, json.dumps(data, indent=1) + "\n")


def write_comparison_readme(
    workflow: Workflow, results_json: str | Path, readme: str | Path | None = None
) -> Path:
    """Fill the block of ``workflow`` in ``readme`` (default: its page) from ``results_json``."""
    results = json.loads(Path(results_json).read_text())
    return write_block(readme or workflow.page, workflow.block, workflow.render(results))


__all__ = [
    "ComparisonSpec",
    "Configs",
    "Metrics",
    "Workflow",
    "load_comparison",
    "run_comparison",
    "variant_config",
    "write_comparison_readme",
    "write_results",
]

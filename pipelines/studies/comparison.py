"""Variants of one experiment over seeds: the study file, the runs and the results JSON.

The mechanism behind ``mia-inr mwt-study`` and ``mia-inr continual-study``. A study file
(top level = :class:`ComparisonSpec`) names one experiment (``base``), the variants
trained from it (``variant -> overrides``) and the seeds. Every variant x seed is an
ordinary training run under ``<run.out_dir>/<workflow folder>/<name>/<variant>/seed<k>``
(an MLflow child of the study's parent run), trained by the study driver
(:func:`~pipelines.studies.driver.run_study`: ``workers`` at a time, seed-major; finished
runs are skipped, interrupted ones resume) and evaluated by its task's report.

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

from mia_core.config import Config, ConfigError, load_config
from mia_core.config.spec import Problems, Validated, bounded
from pipelines.studies.child_run import ChildJob
from pipelines.studies.driver import (
    ChildStudy,
    Outcome,
    ParentRun,
    Results,
    load_study_file,
    run_study,
    write_docs,
)

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

    def load(self, path: str | Path, extra: Sequence[str] = ()) -> ComparisonSpec:
        """Read a study file (:func:`load_comparison`)."""
        return load_comparison(self, path, extra)

    def run(
        self,
        spec: ComparisonSpec,
        log: Callable[[str], None] = print,
        *,
        local: bool = True,
        address: str | None = None,
    ) -> dict[str, Any]:
        """Train (or continue) every run; write and return the study's results entry."""
        return run_study(ComparisonStudy(self, spec), log, local=local, address=address).value

    def write_readme(self, results_json: str | Path, readme: str | Path | None = None) -> Path:
        """Fill the block in ``readme`` (default: the workflow's page) from ``results_json``."""
        return write_docs(readme or self.page, results_json, self.docs_table, self.block)

    def docs_table(self, results: dict[str, Any], source: str = "", page_dir: str = ".") -> str:
        """:attr:`render` as the driver's renderer (the block needs no source or folder)."""
        return self.render(results)


def load_comparison(
    workflow: Workflow, path: str | Path, extra: Sequence[str] = ()
) -> ComparisonSpec:
    """Read a study file; ``<section>.<field>=v`` overrides it, other ``k=v`` join ``budget``.

    Raises:
        ConfigError: naming the file or override and the key, a missing required variant,
            or a variant whose method is not one of the workflow's.
    """
    spec = load_study_file(ComparisonSpec, path, extra, workflow.section, bases=("base",))
    spec = dataclasses.replace(spec, variants=spec.variants or dict(workflow.default_variants))
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


class ComparisonStudy(ChildStudy):
    """A comparison as a :class:`~pipelines.studies.driver.Study`: variants x seeds."""

    def __init__(self, workflow: Workflow, spec: ComparisonSpec) -> None:
        self.workflow, self.spec = workflow, spec
        self.section, self.name = workflow.section, spec.name
        self.workers, self.threads = spec.workers, spec.threads
        self.order = [(v, s) for s in spec.seeds for v in spec.variants]  # seed-major
        self.configs = {(v, s): variant_config(workflow, spec, v, s) for v, s in self.order}
        self.cfg = self.configs[self.order[0]]
        self.out = Path(self.cfg.run.out_dir).parent
        self.results_json, self.results_key = spec.results_json, spec.dataset

    def params(self) -> dict[str, Any]:
        """Variants, seeds and budget."""
        spec = self.spec
        keys = {"variants": spec.variants, "seeds": spec.seeds, "budget": spec.budget}
        return {f"{self.section}.{k}": json.dumps(v) for k, v in keys.items()}

    def children(self) -> list[ChildJob]:
        """Every variant x seed, seed-major."""
        tag = f"{self.section}.variant"
        return [ChildJob(self.configs[k], f"{k[0]}/seed{k[1]}", k, {tag: k[0]}) for k in self.order]

    def read(self, results: Results, run: ParentRun, log: Callable[[str], None]) -> Outcome:
        """The workflow's results entry (logged as its table)."""
        entry = self.workflow.entry(self.spec, self.configs, results)
        log(self.workflow.render({self.spec.dataset: entry}))
        return Outcome(entry, metrics=self.workflow.flat(entry), results=entry)

    def render(self, results: dict[str, Any], source: str = "", page_dir: str = ".") -> str:
        """The workflow's table."""
        return self.workflow.docs_table(results, source, page_dir)


__all__ = [
    "ComparisonSpec",
    "ComparisonStudy",
    "Configs",
    "Metrics",
    "Workflow",
    "load_comparison",
    "variant_config",
]

"""The reproduction study file (``configs/reproduce/*.yaml``): typed spec and loader.

The file's top level is a :class:`ReproduceSpec` (like the ablation and sweep files); on
the command line its fields are ``reproduce.<field>=value`` (``reproduce.seeds=[0,1,2,3,4]``,
``reproduce.curve_steps=[500,2000]``, ``reproduce.methods.mia.base=...``) and every other
``key=value`` is appended to ``budget`` (applied to every run). Method ``base`` files are
relative to the study file, so a study can name today's ``synthetic_<method>.yaml`` or the
``paper_synthetic_<method>.yaml`` presets. After the spec is checked by
:func:`mia_core.config.spec.load_spec`, each method's base is loaded with its overrides and
the budget; its ``method.name`` must be the method's key and its ``model.family`` the
study's backbone, and ``run.steps`` must reach the largest curve step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mia_core.config import Config, ConfigError
from mia_core.config.spec import Problems, Validated, bounded, choice
from pipelines.reports.classical import CLASSICAL
from pipelines.studies.driver import BaseEntry, base_configs, load_study_file

SECTION = "reproduce"
# Table 1's rows, in the paper's order; CAVIA is the plain backbone (Functa or Composers).
METHODS = ("cavia", "metasgd", "gap", "alfa", "mia")
BACKBONES = ("composers", "functa")
CURVE_METHODS = ("mia", "cavia")
PAPER_BINS = [[0.01, 0.02], [0.02, 0.05], [0.05, 0.1]]


@dataclass
class MethodSpec(BaseEntry):
    """One row of the table: its base experiment and overrides."""


@dataclass
class ReproduceSpec(Validated):
    """A reproduction of MIA Table 1, as read from ``configs/reproduce/*.yaml``.

    Attributes:
        name: folder ``<run.out_dir>/reproduce/<name>`` and MLflow parent run name.
        backbone: ``composers`` or ``functa``: every base must use this ``model.family``,
            and ``paper`` holds the paper's numbers for it.
        methods: method (one of ``METHODS``; ``cavia`` and ``mia`` required) ->
            :class:`MethodSpec`; the table lists them in ``METHODS`` order.
        seeds: ``run.seed`` of the repeats (distinct; the paper uses 5). One seed is
            allowed for a first look (the tables then show no standard deviation and the
            results JSON lists the single seed); the shipped studies use 3 or 5.
        budget: ``key=value`` overrides applied to every run (steps, batch, widths...).
        curve_steps: outer steps at which the MIA and CAVIA runs of ``curve_seed`` keep a
            snapshot (``run.snapshot_steps``) evaluated for the budget curve; empty: no
            curve. ``run.steps`` must be at least the largest.
        curve_seed: the seed whose runs keep the snapshots (default: the first seed).
        paper: method -> modality -> the paper's nMSE x 1e2 per bin of ``paper_bins``
            (Table 1 of the paper for ``backbone``); missing entries show as ``-``.
        paper_bins: the support-ratio bins of ``paper``'s columns.
        protocol: text put in ``results_json`` (what was measured, how).
        results_json: also write the means as ``{"protocol", "steps", "seeds",
            "backbone", "nmse_x1e2"}`` to this path (relative to the working
            directory, e.g. ``benchmarks/results/mia_table1.json``); empty: not written.
        only: train and report only these of ``methods`` (``cavia`` and ``mia`` always
            stay); empty: all. A ``reproduce.methods={...}`` override merges into the
            file's methods, so this is how a command line narrows the study.
        adopt: a committed results JSON of this same study (store, steps, seeds,
            backbone, protocol and method configs checked,
            :mod:`pipelines.studies.reproduce_adopt`): the methods it holds are taken from
            it instead of trained, so methods can be added to a study on a machine that
            has its JSON but not its run folders; empty: train every method.
        run_figures: draw every run's reconstruction figures (off: seconds per run).
        threads: torch intra-op threads while the study runs (1 is fastest on a shared
            2-core machine).
        eof_components: ``k`` of the linear reference row (a per-signal offset plus the
            train split's ``k`` leading EOFs fitted to each support set,
            :mod:`pipelines.reports.eof_reference`); shown for stores with shared
            coordinates.
        workers: runs trained at once, each driven from its own process with
            ``threads`` threads (two 1-thread runs use a 2-core machine best).
        classical: classical reference rows (``eof``, ``mv_eof``, ``gp``, ``linear``,
            ``nearest``; :mod:`pipelines.reports.classical`), fitted on the train split
            (``k`` of the EOF rows chosen on validation) and scored on each seed's test
            support draws; they need a store with shared coordinates. Empty (default):
            none.
    """

    name: str
    methods: dict[str, MethodSpec]
    backbone: str = choice("composers", BACKBONES)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: list[str] = field(default_factory=list)
    curve_steps: list[int] = field(default_factory=list)
    curve_seed: int | None = None
    paper: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    paper_bins: list[list[float]] = field(default_factory=lambda: [list(b) for b in PAPER_BINS])
    protocol: str = "MIA Table 1: test-split nMSE x 1e2 per modality and support-ratio bin"
    results_json: str = ""
    only: list[str] = field(default_factory=list)
    adopt: str = ""
    run_figures: bool = False
    eof_components: int = bounded(1, ge=0)
    threads: int = bounded(1, ge=1)
    workers: int = bounded(1, ge=1)
    classical: list[str] = field(default_factory=list)

    @property
    def curve_run_seed(self) -> int:
        """The seed of the runs that keep the budget-curve snapshots."""
        return self.seeds[0] if self.curve_seed is None else self.curve_seed

    def ordered_methods(self) -> list[str]:
        """The study's methods in the paper's row order."""
        keep = set(self.only) | set(CURVE_METHODS) if self.only else set(self.methods)
        return [m for m in METHODS if m in self.methods and m in keep]

    def _extra_problems(self) -> Problems:
        bad = sorted(set(self.methods) - set(METHODS))
        if set(self.only) - set(self.methods):
            yield "only", f"{sorted(set(self.only) - set(self.methods))} are not in methods"
        if bad:
            yield "methods", f"unknown {bad}; expected a subset of {list(METHODS)}"
        missing = [m for m in CURVE_METHODS if m not in self.methods]
        if missing:
            yield "methods", f"must include {missing} (the MIA / CAVIA ratio and the curve)"
        unknown = [c for c in self.classical if c not in CLASSICAL]
        if unknown:
            yield "classical", f"unknown rows {unknown}; choose from {list(CLASSICAL)}"
        if len(set(self.classical)) != len(self.classical):
            yield "classical", f"repeated rows in {self.classical}"
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"need at least one seed, all distinct, got {self.seeds}"
        if any(s < 1 for s in self.curve_steps) or sorted(set(self.curve_steps)) != list(
            self.curve_steps
        ):
            yield "curve_steps", f"must be increasing positive steps, got {self.curve_steps}"
        if self.curve_seed is not None and self.curve_seed not in self.seeds:
            yield "curve_seed", f"{self.curve_seed} is not one of seeds {self.seeds}"
        for method, per_mod in self.paper.items():
            if method not in METHODS:
                yield f"paper.{method}", f"unknown method; expected one of {list(METHODS)}"
            for modality, values in per_mod.items():
                if len(values) != len(self.paper_bins):
                    yield (
                        f"paper.{method}.{modality}",
                        f"needs {len(self.paper_bins)} values (one per paper_bins), "
                        f"got {len(values)}",
                    )


def load_reproduce(path: str | Path, extra: Sequence[str] = ()) -> tuple[ReproduceSpec, dict]:
    """The study file ``path`` (with command line ``extra``) and each method's base config.

    One modality is allowed: MIA then runs its unimodal SFT only (a real single-variable
    field store).

    Raises:
        ConfigError: naming the file or override and the key (unknown field or method,
            no or repeated seeds, a base of another method or backbone, ``run.steps``
            below the largest curve step).
    """
    spec = load_study_file(ReproduceSpec, path, extra, SECTION, bases=("methods",))

    def check(name: str, m: MethodSpec, cfg: Config, where: str) -> None:
        if cfg.method.name != name:
            raise ConfigError(f"{where}: {m.base} trains method.name={cfg.method.name!r}")
        if cfg.model.family != spec.backbone:
            raise ConfigError(
                f"{where}: {m.base} uses model.family={cfg.model.family!r}, "
                f"the study's backbone is {spec.backbone!r}"
            )
        if spec.curve_steps and cfg.run.steps < spec.curve_steps[-1]:
            raise ConfigError(
                f"{where}: run.steps={cfg.run.steps} is below the largest "
                f"{SECTION}.curve_steps {spec.curve_steps[-1]}"
            )

    methods = {name: spec.methods[name] for name in spec.ordered_methods()}
    return spec, base_configs(methods, spec.budget, f"{path}: {SECTION}.methods", check)


def method_config(spec: ReproduceSpec, base: Config, method: str, seed: int, root: Path) -> Config:
    """The run config of one method x seed: ``<root>/<method>/seed<k>``.

    The MIA and CAVIA runs of ``spec.curve_run_seed`` also keep the curve snapshots.
    """
    snapshots = (
        list(spec.curve_steps)
        if (method in CURVE_METHODS and seed == spec.curve_run_seed)
        else list(base.run.snapshot_steps)
    )
    run = dataclasses.replace(
        base.run,
        name=f"seed{seed}",
        seed=seed,
        out_dir=str(root / method),
        snapshot_steps=snapshots,
    )
    return dataclasses.replace(base, run=run)


__all__ = [
    "BACKBONES",
    "CURVE_METHODS",
    "METHODS",
    "PAPER_BINS",
    "MethodSpec",
    "ReproduceSpec",
    "load_reproduce",
    "method_config",
]

"""The ablation study file (``configs/ablation/*.yaml``): typed spec, variants, loader.

The file's top level is an :class:`AblationSpec` (no ``ablation:`` section: the format
predates sections); on the command line its fields are ``ablation.<field>=value``
(``ablation.seeds=[0,1,2,3,4]``, ``ablation.datasets.synthetic1d.target=tanh``) and every
other ``key=value`` is appended to ``budget`` (applied to every run). Dataset ``base``
files are relative to the study file. The spec is read by
:func:`pipelines.studies.driver.load_study_file`; each dataset's base config is then loaded with
its overrides and the budget, and its target must be one of its modalities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mia_core.config import Config, ConfigError
from mia_core.config.spec import Problems, Validated, bounded
from pipelines.studies.driver import BaseEntry, base_configs, load_study_file

SECTION = "ablation"
STUDIES = ("components", "states", "modalities", "trajectories")
_ALL = {"use_usft": True, "use_msft": True, "use_fusion": True}
_STATES = {"state_params": True, "state_grads": True, "state_scaling": True}
# variant -> (method.name, sft switches); "subset" also restricts data.modalities.
VARIANTS: dict[str, tuple[str, dict[str, bool]]] = {
    "cavia": ("cavia", {}),
    "usft": ("mia", {**_STATES, "use_usft": True, "use_msft": False, "use_fusion": False}),
    "usft_msft": ("mia", {**_STATES, "use_usft": True, "use_msft": True, "use_fusion": False}),
    "full": ("mia", {**_STATES, **_ALL}),
    "grads": ("mia", {**_ALL, "state_params": False, "state_grads": True, "state_scaling": False}),
    "grads_scaling": (
        "mia",
        {**_ALL, "state_params": False, "state_grads": True, "state_scaling": True},
    ),
    "subset": ("mia", {**_STATES, **_ALL}),
    "frozen_sft": ("mia", {**_STATES, **_ALL}),
}
NEEDS = {
    "components": ["cavia", "usft", "usft_msft", "full"],
    "states": ["cavia", "grads", "grads_scaling", "full"],
    "modalities": ["subset", "full"],
    "trajectories": ["cavia", "frozen_sft", "full"],
}


@dataclass
class DatasetSpec(BaseEntry):
    """One dataset of the study: a base experiment, its overrides and a target modality.

    Attributes:
        target: the modality shared by the modality-replacement and trajectory studies.
    """

    target: str = field(kw_only=True)


@dataclass
class AblationSpec(Validated):
    """A study, as read from ``configs/ablation/*.yaml``.

    Attributes:
        name: folder ``<run.out_dir>/ablation/<name>`` and MLflow parent run name.
        datasets: name -> :class:`DatasetSpec` (at least one).
        seeds: ``run.seed`` of the repeats (at least 2 distinct, for a standard deviation).
        budget: ``key=value`` overrides applied to every run (steps, batch, widths...):
            the knob between a minutes-long and an hours-long study.
        studies: subset of ``STUDIES``.
        target_ratio: support ratio of the target in the trajectory study.
        source_ratios: support ratios of the other modalities in the trajectory study.
        attention_ratio: ``[R_min, R_max]`` drawn per signal and modality for the
            attention correlation.
        analysis_signals: test signals used by the trajectory and attention analyses.
        plot_signals: signals drawn in the trajectory figure.
        run_figures: draw every run's reconstruction figures (off: seconds per run).
        threads: torch intra-op threads while the study runs (1 is ~10x faster than 2
            on a shared 2-core machine: OpenMP spin-waits under contention).
        results_dir: also copy ``report.md``, ``tables/`` and ``figures/`` to this folder
            (relative to the working directory, e.g. ``benchmarks/results/ablation_av``),
            replacing what is there; empty: not copied.
        workers: runs trained at once, each driven from its own process with
            ``threads`` threads (two 1-thread runs use a 2-core machine best).
    """

    name: str
    datasets: dict[str, DatasetSpec]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=lambda: list(STUDIES))
    target_ratio: float = bounded(0.02, gt=0.0, le=1.0)
    source_ratios: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.2, 0.5])
    attention_ratio: list[float] = field(default_factory=lambda: [0.01, 0.5])
    analysis_signals: int = bounded(64, ge=1)
    plot_signals: int = bounded(3, ge=1)
    run_figures: bool = False
    threads: int = bounded(1, ge=1)
    workers: int = bounded(1, ge=1)
    results_dir: str = ""

    def _extra_problems(self) -> Problems:
        if not self.datasets:
            yield "datasets", "must name at least one dataset ({name: {base, target}})"
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"need at least two distinct seeds, got {self.seeds}"
        bad = sorted(set(self.studies) - set(STUDIES))
        if bad:
            yield "studies", f"unknown {bad}; expected a subset of {list(STUDIES)}"
        lo_hi = self.attention_ratio
        if not (len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1] <= 1):
            yield "attention_ratio", f"must be [R_min, R_max] within (0, 1], got {lo_hi}"
        if not all(0 < r <= 1 for r in self.source_ratios):
            yield "source_ratios", f"must lie in (0, 1], got {self.source_ratios}"


def load_ablation(path: str | Path, extra: Sequence[str] = ()) -> tuple[AblationSpec, dict]:
    """The study file ``path`` (with command line ``extra``) and each dataset's base config.

    Raises:
        ConfigError: naming the file or override and the key (unknown field or study,
            fewer than two seeds, a target that is not one of the dataset's modalities).
    """
    spec = load_study_file(AblationSpec, path, extra, SECTION, bases=("datasets",))

    def check(name: str, d: DatasetSpec, cfg: Config, where: str) -> None:
        if d.target not in cfg.data.modalities:
            raise ConfigError(
                f"{where}.target: {d.target!r} is not one of data.modalities {cfg.data.modalities}"
            )
        if len(cfg.data.modalities) < 2:
            raise ConfigError(f"{where}: the study needs >= 2 modalities")

    return spec, base_configs(spec.datasets, spec.budget, f"{path}: {SECTION}.datasets", check)


def variant_config(base: Config, variant: str, seed: int, root: Path, target: str) -> Config:
    """The run config of one variant x seed (see ``VARIANTS``)."""
    method, switches = VARIANTS[variant]
    sft = dataclasses.replace(base.method.sft, **switches)
    cfg = dataclasses.replace(base, method=dataclasses.replace(base.method, name=method, sft=sft))
    if variant == "subset":
        # The target alone; its own per-modality support ratio (if any) stays.
        ratios = {m: r for m, r in cfg.data.support_ratio_per_modality.items() if m == target}
        data = dataclasses.replace(cfg.data, modalities=[target], support_ratio_per_modality=ratios)
        cfg = dataclasses.replace(cfg, data=data)
    run = dataclasses.replace(cfg.run, name=f"seed{seed}", seed=seed, out_dir=str(root / variant))
    return dataclasses.replace(cfg, run=run)


__all__ = [
    "NEEDS",
    "STUDIES",
    "VARIANTS",
    "AblationSpec",
    "DatasetSpec",
    "load_ablation",
    "variant_config",
]

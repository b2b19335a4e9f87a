"""The sweep file (``configs/tune/*.yaml``): a typed :class:`SweepSpec` and its loader.

The file's top level is the spec (the format has no ``sweep:`` section); on the command
line its fields are ``sweep.<field>=value`` (``sweep.num_samples=20``,
``sweep.scheduler.name=none``, ``sweep.params.method.inner_lr={loguniform: [0.1, 1]}``)
and every other ``key=value`` is appended to ``overrides``, i.e. goes to the base
experiment. ``base`` is relative to the sweep file. The spec is checked by the config
machinery (:func:`mia_core.config.spec.load_spec`: file, dotted key, did-you-mean, types,
allowed values); then every bound or choice of every swept key is applied to the base
config, so a sweep that would produce an invalid trial fails before anything starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mia_core.config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from mia_core.config.spec import Problems, Validated, bounded, choice
from pipelines.studies.driver import load_study_file

SEARCHES = ("grid", "random", "tpe")
DOMAINS = ("values", "uniform", "loguniform", "randint")
METRICS = ("best_val", "loss")
SCHEDULERS = ("asha", "none")
SECTION = "sweep"


@dataclass
class Domain(Validated):
    """The values one swept key takes: exactly one field is set.

    Attributes:
        values: a grid axis (grid search) or a categorical choice (random, TPE).
        uniform: ``[low, high]``.
        loguniform: ``[low, high]`` with ``low > 0``.
        randint: ``[low, high]``, both inclusive.
    """

    values: list[Any] | None = None
    uniform: list[float] | None = None
    loguniform: list[float] | None = None
    randint: list[int] | None = None

    @property
    def kind(self) -> str:
        """The field that is set (``values``, ``uniform``, ...)."""
        return next(k for k in DOMAINS if getattr(self, k) is not None)

    @property
    def arg(self) -> list[Any]:
        """The choices (``values``) or the ``[low, high]`` bounds."""
        return getattr(self, self.kind)

    def to_dict(self) -> dict[str, list[Any]]:
        """``{kind: arg}``, the YAML form."""
        return {self.kind: self.arg}

    def _extra_problems(self) -> Problems:
        kinds = [k for k in DOMAINS if getattr(self, k) is not None]
        if len(kinds) != 1:
            yield (kinds[-1] if kinds else "values"), f"set exactly one of {list(DOMAINS)}"
            return
        kind, arg = kinds[0], getattr(self, kinds[0])
        if kind == "values":
            if not arg:
                yield kind, "must be a non-empty list"
        elif not (len(arg) == 2 and arg[0] <= arg[1]):
            yield kind, f"needs [low, high] with low <= high, got {arg}"
        elif kind == "loguniform" and arg[0] <= 0:
            yield kind, f"needs low > 0, got {arg}"


@dataclass
class SchedulerSpec(Validated):
    """Early stopping of poor trials.

    Attributes:
        name: ``asha`` (asynchronous successive halving on the outer ``step`` axis,
            ``max_t = run.steps``) or ``none``.
        grace_period: steps before ASHA may stop a trial (``None``: ``run.eval_every``);
            capped at ``run.steps``.
        reduction_factor: ASHA keeps ``1 / reduction_factor`` of the trials per rung.
    """

    name: str = choice("asha", SCHEDULERS)
    grace_period: int | None = bounded(None, ge=1)
    reduction_factor: float = bounded(2.0, gt=1.0)


@dataclass
class SweepSpec(Validated):
    """A sweep, as read from ``configs/tune/*.yaml``.

    Attributes:
        name: sweep name (folder ``<run.out_dir>/sweeps/<name>`` and MLflow parent run).
        base: experiment YAML the trials start from (relative to the sweep file; absolute
            once loaded).
        overrides: ``key=value`` overrides applied to ``base`` for every trial (budget).
        params: dotted config key -> :class:`Domain`.
        search: ``grid`` (every ``values`` combination), ``random`` or ``tpe`` (Optuna's
            Tree-structured Parzen Estimator through ``ray.tune.search.optuna``).
        num_samples: trials for random/TPE; repeats of the whole grid for grid.
        metric: reported metric to optimise (``best_val`` or ``loss``).
        mode: ``min`` or ``max``.
        max_concurrent_trials: upper bound; lowered further to what the cluster fits.
        scheduler: early stopping, see :class:`SchedulerSpec`.
        seed: seed of the search algorithm.
    """

    name: str
    base: str
    overrides: list[str] = field(default_factory=list)
    params: dict[str, Domain] = field(default_factory=dict)
    search: str = choice("random", SEARCHES)
    num_samples: int = bounded(4, ge=1)
    metric: str = choice("best_val", METRICS)
    mode: str = choice("min", ("min", "max"))
    max_concurrent_trials: int = bounded(2, ge=1)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    seed: int = 0

    def _extra_problems(self) -> Problems:
        if not self.params:
            yield "params", "names no key to sweep"
        for key, dom in self.params.items():
            if self.search == "grid" and isinstance(dom, Domain) and dom.kind != "values":
                yield f"params.{key}", f"grid search needs a 'values' list, got {dom.kind}"


def load_sweep(path: str | Path, extra: Sequence[str] = ()) -> tuple[SweepSpec, Config]:
    """Read a sweep file; returns the spec and its validated base config.

    Args:
        path: the sweep YAML.
        extra: command line overrides: ``sweep.<field>=value`` set sweep fields, any
            other ``key=value`` is appended to the base config's ``overrides``.

    Raises:
        ConfigError: naming the file or override and the key (unknown sweep field, bad
            domain, a swept key that is not a config key or whose values make an
            invalid config, a grid over a non-``values`` domain).
    """
    spec = load_study_file(SweepSpec, path, extra, SECTION, bases=("base",), rest="overrides")
    base = load_config(spec.base, spec.overrides)
    for key, dom in spec.params.items():
        for value in dom.arg:  # every bound / choice must make a valid config
            try:
                apply_params(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{path}: {SECTION}.params.{key}: {err}") from None
    return spec, base


def apply_params(cfg: Config, values: dict[str, Any]) -> Config:
    """``cfg`` with dotted keys set to ``values`` (validated; unknown key = ConfigError)."""
    data = config_to_dict(cfg)
    for key, value in values.items():
        node, parts = data, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in '{key}'")
            if i < len(parts) - 1:
                node = node[part]
        node[parts[-1]] = value
    return config_from_dict(data, "sweep parameters")


__all__ = [
    "DOMAINS",
    "SEARCHES",
    "Domain",
    "SchedulerSpec",
    "SweepSpec",
    "apply_params",
    "load_sweep",
]

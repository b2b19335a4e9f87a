"""How Ray Tune explores a sweep: search space, searcher, scheduler and trial concurrency.

Categorical searchers only take scalars, so list/dict values (``data.support_ratio``)
travel through Tune as ``json:``-prefixed strings (:func:`encode`) and are decoded in the
trial (:func:`decode`). Grid search turns every ``values`` domain into a grid axis; random
search uses Tune's basic variant generator and TPE Optuna's sampler.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mia_core.config import Config, ConfigError
from pipelines.studies.sweep_spec import SweepSpec

JSON_PREFIX = "json:"


def encode(value: Any) -> Any:
    """Lists/dicts become JSON strings (categorical searchers only take scalars)."""
    return JSON_PREFIX + json.dumps(value) if isinstance(value, list | dict) else value


def decode(values: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode` for every value of a sampled point."""
    out = {}
    for k, v in values.items():
        is_json = isinstance(v, str) and v.startswith(JSON_PREFIX)
        out[k] = json.loads(v[len(JSON_PREFIX) :]) if is_json else v
    return out


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune domains for ``spec.params`` (grid axes for grid search)."""
    from ray import tune

    space = {}
    for key, dom in spec.params.items():
        kind, arg = dom.kind, dom.arg
        if kind == "values":
            vals = [encode(v) for v in arg]
            space[key] = tune.grid_search(vals) if spec.search == "grid" else tune.choice(vals)
        elif kind == "uniform":
            space[key] = tune.uniform(float(arg[0]), float(arg[1]))
        elif kind == "loguniform":
            space[key] = tune.loguniform(float(arg[0]), float(arg[1]))
        else:
            space[key] = tune.randint(int(arg[0]), int(arg[1]) + 1)
    return space


def make_searcher(spec: SweepSpec, slots: int) -> Any:
    """The search algorithm of ``spec.search``; ``slots`` caps concurrent trials."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if spec.search == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.seed))
    if spec.search == "random":
        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=slots)
    return BasicVariantGenerator(max_concurrent=slots)


def make_scheduler(spec: SweepSpec, base: Config) -> Any:
    """ASHA on the outer ``step`` axis (``max_t = run.steps``), or ``None``."""
    if spec.scheduler.name != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    grace = spec.scheduler.grace_period or base.run.eval_every
    return ASHAScheduler(
        time_attr="step",
        max_t=base.run.steps,
        # A grace period beyond the run would never stop anything (and ASHA rejects it).
        grace_period=min(grace, base.run.steps),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def trial_slots(
    per_trial_cpus: float,
    total_cpus: float,
    wanted: int,
    per_trial_gpus: float = 0.0,
    total_gpus: float = 0.0,
) -> int:
    """How many trials run at once: ``wanted``, capped so one CPU stays for data reads.

    With ``per_trial_gpus`` (``run.use_gpu``: one GPU per Ray Train worker) the cluster's
    GPUs cap it too.

    Raises:
        ConfigError: when even one trial cannot fit (it would stay PENDING forever): too
            few CPUs, or GPUs asked for on a cluster with too few (or none).
    """
    free = total_cpus - 1.0 if total_cpus > 1.0 else total_cpus
    fit = _fit(
        free / per_trial_cpus,
        f"a trial needs run.num_workers x run.cpus_per_worker = {per_trial_cpus:g} CPUs "
        f"but the cluster has {total_cpus:g} (one kept for data reads); lower "
        "run.num_workers or run.cpus_per_worker (fractions are fine)",
    )
    if per_trial_gpus > 0:
        gpu_fit = _fit(
            total_gpus / per_trial_gpus,
            f"run.use_gpu=true: a trial needs {per_trial_gpus:g} GPU(s) (one per "
            f"run.num_workers) but the Ray cluster has {total_gpus:g}; add GPU nodes, "
            "lower run.num_workers or set run.use_gpu=false",
        )
        fit = min(fit, gpu_fit)
    return max(1, min(wanted, fit))


def _fit(ratio: float, problem: str) -> int:
    """Whole trials in ``ratio`` (available / per trial); ``problem`` raised when none."""
    fit = math.floor(ratio + 1e-9)
    if fit < 1:
        raise ConfigError(problem)
    return fit


def cluster_trial_slots(run: Any, cluster: dict[str, float], wanted: int) -> int:
    """:func:`trial_slots` for the base config's ``run`` section on a cluster.

    Args:
        run: ``cfg.run`` (``num_workers``, ``cpus_per_worker``, ``use_gpu``).
        cluster: ``ray.cluster_resources()``.
        wanted: ``sweep.max_concurrent_trials``.
    """
    gpus = float(run.num_workers) if run.use_gpu else 0.0
    return trial_slots(
        run.num_workers * run.cpus_per_worker,
        cluster.get("CPU", 1.0),
        wanted,
        gpus,
        cluster.get("GPU", 0.0),
    )


__all__ = [
    "cluster_trial_slots",
    "decode",
    "encode",
    "make_scheduler",
    "make_searcher",
    "search_space",
    "trial_slots",
]

"""Hyper-parameter sweeps with Ray Tune; every trial is a Ray Train run of the training job.

A sweep file (``configs/tune/*.yaml``) names a base experiment, a search over dotted
config keys and the search/scheduling options (see :class:`SweepSpec`). Each trial is a
function trainable that applies its sampled values to the base config and calls
:func:`pipelines.engine.ray_train.run_ray_training` with ``TuneReportCallback`` (Ray Train V2
does not accept ``Tuner(trainer)``), so the workers' reports (``step``, ``loss``,
``best_val`` = best validation nmse so far) reach Tune and ASHA. Trials report at every
validation (``run.checkpoint_every`` is set to ``run.eval_every``).

Resources: the trainable itself holds 0.01 CPU; its Ray Train workers hold
``num_workers x cpus_per_worker``. Concurrency is capped so that running trials leave one
CPU for Ray Data reads, and a trial that could never fit the cluster is an error rather
than a trial PENDING forever.

Resume: the Tune experiment lives in ``<sweep_dir>/ray/tune``; a second call restores it
(``Tuner.can_restore``/``Tuner.restore``), and a restored trial resumes its Ray Train run
from ``<sweep_dir>/trials/<trial_id>/checkpoints/last.pt``.

Outputs in ``<run.out_dir>/sweeps/<name>/``: ``summary.csv``, ``summary.md``,
``metric_vs_params.png``, ``best_config.yaml`` (loadable by ``ray_jobs/train.py
--config``) and ``best_params.json``; MLflow gets a parent run for the sweep with these
artifacts and one child run per trial (tag ``mlflow.parentRunId``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mia_core.config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from mia_core.config.loader import flatten_config, save_config
from pipelines.tracking import run_groups
from pipelines.tracking.tracker import tracking_uri

SEARCHES = ("grid", "random", "tpe")
DOMAINS = ("values", "uniform", "loguniform", "randint")
# data.* keys that change the synthetic store itself (a sweep over them builds per trial).
STORE_KEYS = {"num_functions", "num_train", "num_points", "x_range", "noise_std", "seed"}
STORE_KEYS |= {"modalities", "val_fraction", "name", "store", "endpoint_url"}
JSON_PREFIX = "json:"
# CPUs per Ray Data read task of a trial: two concurrent trials must both be able to read
# from the CPU left beside their workers (a 1-CPU read task each would deadlock on 2 CPUs).
READ_CPUS = 0.25


@dataclass
class SweepSpec:
    """A sweep, as read from ``configs/tune/*.yaml``.

    Attributes:
        name: sweep name (folder ``<run.out_dir>/sweeps/<name>`` and MLflow parent run).
        base: experiment YAML the trials start from (relative to the sweep file).
        overrides: ``key=value`` overrides applied to ``base`` for every trial (budget).
        params: dotted config key -> domain, one of ``{values: [...]}`` (grid axis or
            categorical choice), ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
            ``{randint: [lo, hi]}`` (inclusive).
        search: ``grid`` (every ``values`` combination), ``random`` or ``tpe`` (Optuna's
            Tree-structured Parzen Estimator through ``ray.tune.search.optuna``).
        num_samples: trials for random/TPE; repeats of the whole grid for grid.
        metric: reported metric to optimise (``best_val`` or ``loss``).
        mode: ``min`` or ``max``.
        max_concurrent_trials: upper bound; lowered further to what the cluster fits.
        scheduler: ``{name: asha|none, grace_period, reduction_factor}``; ASHA's time
            axis is the outer ``step`` and its ``max_t`` is ``run.steps``.
        seed: seed of the search algorithm.
    """

    name: str
    base: str
    overrides: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: str = "random"
    num_samples: int = 4
    metric: str = "best_val"
    mode: str = "min"
    max_concurrent_trials: int = 2
    scheduler: dict[str, Any] = field(default_factory=lambda: {"name": "asha"})
    seed: int = 0


def load_sweep(path: str | Path, extra: list[str] = ()) -> tuple[SweepSpec, Config]:
    """Read a sweep file; returns the spec and its validated base config.

    Args:
        path: the sweep YAML.
        extra: more ``key=value`` overrides for the base config (command line); ``sweep.``
            prefixed ones set sweep fields (``sweep.num_samples=8``).

    Raises:
        ConfigError: naming the file and the key (unknown sweep field, bad domain, a
            swept key that is not a config key, a grid over a non-``values`` domain).
    """
    path = Path(path)
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file must be a mapping")
    known = {f.name for f in dataclasses.fields(SweepSpec)}
    cfg_overrides = []
    for item in extra:
        key, _, value = item.partition("=")
        if key.startswith("sweep."):
            raw[key[6:]] = yaml.safe_load(value)
        else:
            cfg_overrides.append(item)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown sweep key(s) {unknown}; expected {sorted(known)}")
    for req in ("name", "base"):
        if req not in raw:
            raise ConfigError(f"{path}: missing sweep key '{req}'")
    spec = SweepSpec(**raw)
    spec.base = str((path.parent / spec.base).resolve())
    spec.overrides = [*spec.overrides, *cfg_overrides]
    base = load_config(spec.base, spec.overrides)
    _check_spec(spec, base, str(path))
    return spec, base


def _check_spec(spec: SweepSpec, base: Config, where: str) -> None:
    if spec.search not in SEARCHES:
        raise ConfigError(f"{where}: search must be one of {list(SEARCHES)}, got {spec.search!r}")
    if spec.mode not in ("min", "max"):
        raise ConfigError(f"{where}: mode must be 'min' or 'max', got {spec.mode!r}")
    if spec.metric not in ("best_val", "loss"):
        raise ConfigError(f"{where}: metric must be 'best_val' or 'loss', got {spec.metric!r}")
    if not spec.params:
        raise ConfigError(f"{where}: 'params' names no key to sweep")
    sched = spec.scheduler.get("name", "none")
    if sched not in ("asha", "none"):
        raise ConfigError(f"{where}: scheduler.name must be 'asha' or 'none', got {sched!r}")
    for key, dom in spec.params.items():
        label = f"{where}: params.{key}"
        if not (isinstance(dom, dict) and len(dom) == 1 and next(iter(dom)) in DOMAINS):
            raise ConfigError(f"{label}: domain must be one of {list(DOMAINS)}, got {dom!r}")
        kind, arg = next(iter(dom.items()))
        if kind == "values":
            if not (isinstance(arg, list) and arg):
                raise ConfigError(f"{label}: values must be a non-empty list")
            samples = arg
        else:
            if not (isinstance(arg, list) and len(arg) == 2 and arg[0] <= arg[1]):
                raise ConfigError(f"{label}: {kind} needs [low, high] with low <= high")
            if kind == "loguniform" and arg[0] <= 0:
                raise ConfigError(f"{label}: loguniform needs low > 0")
            samples = arg
        if spec.search == "grid" and kind != "values":
            raise ConfigError(f"{label}: grid search needs a 'values' list, got {kind}")
        for value in samples:  # every bound / choice must make a valid config
            try:
                apply_params(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{label}: {err}") from None


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
        kind, arg = next(iter(dom.items()))
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


def trial_config(base: Config, params: dict[str, Any], trial_id: str, sweep_dir: Path) -> Config:
    """The config of one trial: base + sampled values, its own run directory."""
    cfg = apply_params(base, decode(params))
    run = dataclasses.replace(cfg.run, name=trial_id, out_dir=str(sweep_dir / "trials"))
    return dataclasses.replace(cfg, run=run)


def _trial(config: dict, *, base: dict, sweep_dir: str, parent_id: str) -> None:
    """Function trainable: one Ray Train run reporting to Tune (see the module docstring)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.engine.loop import run_dir_of
    from pipelines.engine.ray_train import run_ray_training

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(config_from_dict(base, "sweep base"), config, trial_id, Path(sweep_dir))
    run_groups.open_run(
        cfg,
        run_dir_of(cfg) / "mlflow_run_id",
        trial_id,
        parent_id=parent_id,
        tags={"sweep.trial_id": trial_id},
    )
    run_ray_training(
        cfg,
        resume=True,
        evaluate_after=False,
        callbacks=[TuneReportCallback()],
        read_cpus=READ_CPUS,
    )


def trial_slots(per_trial_cpus: float, total_cpus: float, wanted: int) -> int:
    """How many trials run at once: ``wanted``, capped so one CPU stays for data reads.

    Raises:
        ValueError: when even one trial cannot fit (it would stay PENDING forever).
    """
    free = total_cpus - 1.0 if total_cpus > 1.0 else total_cpus
    fit = math.floor(free / per_trial_cpus + 1e-9)
    if fit < 1:
        raise ValueError(
            f"a trial needs run.num_workers x run.cpus_per_worker = {per_trial_cpus:g} CPUs "
            f"but the cluster has {total_cpus:g} (one kept for data reads); lower "
            "run.num_workers or run.cpus_per_worker (fractions are fine)"
        )
    return max(1, min(wanted, fit))


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every trial finished (it can be resumed)."""


@dataclass
class SweepResult:
    """What a sweep produced.

    Attributes:
        sweep_dir: output folder.
        rows: one dict per trial (``trial_id``, swept keys, metric, status, ...).
        best_params: decoded values of the best trial.
        best_config: path of ``best_config.yaml``.
        parent_run_id: MLflow parent run.
    """

    sweep_dir: Path
    rows: list[dict[str, Any]]
    best_params: dict[str, Any]
    best_config: Path
    parent_run_id: str


def run_sweep(
    spec: SweepSpec,
    base: Config,
    resume: bool = True,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Run (or resume) the sweep; see the module docstring."""
    import ray
    from ray import tune

    from pipelines.data.resolve import resolve_store
    from pipelines.engine.ray_train import _init_ray

    _init_ray(address)
    sweep_dir = Path(base.run.out_dir).resolve() / "sweeps" / spec.name
    if not resume and sweep_dir.exists():  # start afresh, keeping the old sweep aside
        old = sweep_dir.with_name(f"{spec.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        sweep_dir.rename(old)
        log(f"sweep {spec.name}: previous sweep moved to {old}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # Trials share one tracking store and (unless a store-building key is swept) one store.
    run_cfg = dataclasses.replace(
        base.run, tracking_uri=tracking_uri(base), checkpoint_every=base.run.eval_every
    )
    trial_base = dataclasses.replace(base, run=run_cfg)
    swept_store = any(k.startswith("data.") and k.split(".")[1] in STORE_KEYS for k in spec.params)
    if not swept_store:
        data = dataclasses.replace(base.data, store=resolve_store(base).url)
        trial_base = dataclasses.replace(trial_base, data=data)
    per_trial = base.run.num_workers * base.run.cpus_per_worker
    slots = trial_slots(
        per_trial, ray.cluster_resources().get("CPU", 1.0), spec.max_concurrent_trials
    )
    parent_id = run_groups.open_run(
        trial_base,
        sweep_dir / "mlflow_run_id",
        f"sweep:{spec.name}",
        params={
            **flatten_config(base),
            **{f"sweep.{k}": json.dumps(v) for k, v in spec.params.items()},
            "sweep.search": spec.search,
            "sweep.num_samples": spec.num_samples,
            "sweep.metric": spec.metric,
            "sweep.scheduler": json.dumps(spec.scheduler),
        },
        tags={"sweep": spec.name},
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, base=config_to_dict(trial_base), sweep_dir=str(sweep_dir), parent_id=parent_id
        ),
        {"cpu": 0.01},
    )
    exp_path = sweep_dir / "ray" / "tune"
    if resume and tune.Tuner.can_restore(str(exp_path)):
        log(f"sweep {spec.name}: resuming {exp_path}")
        tuner = tune.Tuner.restore(
            str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                search_alg=_searcher(spec, slots),
                scheduler=_scheduler(spec, base),
                num_samples=spec.num_samples,
                # Basic variant generators carry their own limit (Tune ignores this one).
                max_concurrent_trials=slots if spec.search == "tpe" else None,
            ),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir / "ray"), verbose=1),
        )
    log(
        f"sweep {spec.name}: {spec.search} search over {list(spec.params)}, "
        f"{slots} trial(s) at a time x {per_trial:g} CPU"
    )
    grid = tuner.fit()
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if unfinished:  # Ctrl-C / SIGINT: Tune saved the experiment and returned early
        run_groups.close_run(trial_base, parent_id, "KILLED")
        raise SweepInterrupted(
            f"sweep {spec.name}: interrupted with {unfinished} unfinished trial(s); run the "
            "same command again to resume them"
        )
    try:
        rows = _rows(spec, grid, sweep_dir, trial_base)
        best = _best(spec, rows)
        out = _write_outputs(spec, base, rows, best, sweep_dir)
    except BaseException:
        run_groups.close_run(trial_base, parent_id, "FAILED")
        raise
    run_groups.log_artifacts(trial_base, parent_id, out)
    run_groups.log_metrics(
        trial_base, parent_id, {f"best_{spec.metric}": best[spec.metric], "trials": len(rows)}
    )
    run_groups.close_run(trial_base, parent_id)
    log(f"sweep {spec.name}: best {spec.metric} {best[spec.metric]:.4g} with {best['params']}")
    log(f"best config: {sweep_dir / 'best_config.yaml'}")
    return SweepResult(sweep_dir, rows, best["params"], sweep_dir / "best_config.yaml", parent_id)


def _searcher(spec: SweepSpec, slots: int):
    if spec.search == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.seed))
    if spec.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=slots)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=slots)


def _scheduler(spec: SweepSpec, base: Config):
    if spec.scheduler.get("name", "none") != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        max_t=base.run.steps,
        # A grace period beyond the run would never stop anything (and ASHA rejects it).
        grace_period=min(
            int(spec.scheduler.get("grace_period", base.run.eval_every)), base.run.steps
        ),
        reduction_factor=float(spec.scheduler.get("reduction_factor", 2)),
    )


def _rows(spec: SweepSpec, grid, sweep_dir: Path, trial_base: Config) -> list[dict[str, Any]]:
    """One row per trial; also closes each trial's MLflow child run with its final metrics."""
    rows = []
    for res in grid:
        params = decode(res.config)
        metrics = res.metrics or {}
        trial_id = metrics.get("trial_id") or Path(res.path).name
        value = metrics.get(spec.metric, math.nan)
        value = math.nan if value is None else float(value)
        step = int(metrics.get("step", 0) or 0)
        status = "error" if res.error else ("done" if step >= trial_base.run.steps else "stopped")
        id_file = sweep_dir / "trials" / str(trial_id) / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if run_id:
            run_groups.log_metrics(trial_base, run_id, {f"final_{spec.metric}": value}, step)
            run_groups.client_for(trial_base).set_tag(run_id, "sweep.status", status)
            run_groups.close_run(trial_base, run_id, "FAILED" if res.error else "FINISHED")
        rows.append(
            {
                "trial_id": trial_id,
                "params": params,
                spec.metric: value,
                "step": step,
                "status": status,
                "mlflow_run_id": run_id,
            }
        )
    if not rows:
        raise RuntimeError(f"sweep {spec.name}: Tune returned no trial")
    # A trial that died before its first report has no id in its results: close its
    # child run from the id file so no MLflow run stays RUNNING.
    seen = {r["mlflow_run_id"] for r in rows}
    for id_file in (sweep_dir / "trials").glob("*/mlflow_run_id"):
        run_id = id_file.read_text().strip()
        if run_id not in seen:
            run_groups.close_run(trial_base, run_id, "FAILED")
    return rows


def _best(spec: SweepSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r[spec.metric] == r[spec.metric]]
    if not ok:
        raise RuntimeError(f"sweep {spec.name}: no trial reported '{spec.metric}'")
    sign = 1.0 if spec.mode == "min" else -1.0
    return min(ok, key=lambda r: sign * r[spec.metric])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _write_outputs(
    spec: SweepSpec, base: Config, rows: list[dict], best: dict, sweep_dir: Path
) -> list[Path]:
    keys = list(spec.params)
    head = ["trial_id", *keys, spec.metric, "step", "status", "mlflow_run_id"]
    table = [
        [
            r["trial_id"],
            *(r["params"][k] for k in keys),
            r[spec.metric],
            r["step"],
            r["status"],
            r["mlflow_run_id"],
        ]
        for r in rows
    ]
    sign = 1.0 if spec.mode == "min" else -1.0
    table.sort(
        key=lambda t: sign * t[len(keys) + 1] if t[len(keys) + 1] == t[len(keys) + 1] else math.inf
    )
    with open(sweep_dir / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        w.writerows([[_fmt(v) if isinstance(v, list | dict) else v for v in t] for t in table])
    md = [
        f"# Sweep {spec.name}: {spec.search} search, {len(rows)} trials, "
        f"{spec.metric} ({spec.mode}), scheduler {spec.scheduler.get('name', 'none')}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(_fmt(v) for v in t) + " |" for t in table),
        "",
    ]
    (sweep_dir / "summary.md").write_text("\n".join(md))
    best_cfg = apply_params(base, best["params"])
    best_cfg = dataclasses.replace(
        best_cfg, run=dataclasses.replace(best_cfg.run, name=f"{spec.name}-best")
    )
    save_config(best_cfg, sweep_dir / "best_config.yaml")
    (sweep_dir / "best_params.json").write_text(
        json.dumps(
            {
                "trial_id": best["trial_id"],
                spec.metric: best[spec.metric],
                "params": best["params"],
            },
            indent=1,
        )
    )
    plot = _plot(spec, rows, sweep_dir / "metric_vs_params.png")
    return [
        sweep_dir / n for n in ("summary.csv", "summary.md", "best_config.yaml", "best_params.json")
    ] + [plot]


def _plot(spec: SweepSpec, rows: list[dict], path: Path) -> Path:
    """One panel per swept key: metric against the value (categories on an index axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.params)
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    ys = [r[spec.metric] for r in rows]
    for ax, key in zip(axes.flat, keys, strict=False):
        vals = [r["params"][key] for r in rows]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
        if numeric:
            ax.scatter(vals, ys)
            if "loguniform" in spec.params[key]:
                ax.set_xscale("log")
        else:
            cats = sorted({_fmt(v) for v in vals})
            ax.scatter([cats.index(_fmt(v)) for v in vals], ys)
            ax.set_xticks(range(len(cats)), cats, rotation=20, fontsize=7)
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel(spec.metric)
    fig.suptitle(f"sweep {spec.name}: {spec.metric} per trial")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "SweepInterrupted",
    "SweepResult",
    "SweepSpec",
    "apply_params",
    "decode",
    "encode",
    "load_sweep",
    "run_sweep",
    "search_space",
    "trial_config",
    "trial_slots",
]

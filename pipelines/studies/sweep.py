"""Hyper-parameter sweeps with Ray Tune; every trial is a Ray Train run of the training job.

A sweep file (``configs/tune/*.yaml``, :mod:`pipelines.studies.sweep_spec`) names a base
experiment, a search over dotted config keys and the search/scheduling options. Each
trial is a function trainable that applies its sampled values to the base config and
calls :func:`pipelines.jobs.train` on Ray Train with ``TuneReportCallback`` (Ray Train V2
does not accept ``Tuner(trainer)``), so the workers' reports (``step``, ``loss``,
``best_val`` = best validation nmse so far) reach Tune and ASHA. Trials report at every
validation (``run.checkpoint_every`` is set to ``run.eval_every``).

Resources: the trainable itself holds 0.01 CPU; its Ray Train workers hold
``num_workers x cpus_per_worker``. Concurrency is capped so that running trials leave one
CPU for Ray Data reads (:func:`~pipelines.studies.sweep_search.trial_slots`) and, with
``run.use_gpu``, by the cluster's GPUs (one per worker); a trial that could never fit the
cluster (no GPU at all included) is an error rather than a trial PENDING forever.

Resume: the Tune experiment lives in ``<sweep_dir>/ray/tune``; a second call restores it
(``Tuner.can_restore``/``Tuner.restore``), and a restored trial resumes its Ray Train run
from ``<sweep_dir>/trials/<trial_id>/checkpoints/last.pt``.

Outputs in ``<run.out_dir>/sweeps/<name>/`` (:mod:`pipelines.studies.sweep_report`);
MLflow gets a parent run for the sweep with these artifacts and one child run per trial
(tag ``mlflow.parentRunId``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_core.config import Config, config_from_dict, config_to_dict
from mia_core.config.loader import flatten_config
from pipelines import jobs
from pipelines.cluster.connect import init_ray
from pipelines.data.resolve import resolve_store
from pipelines.engine.run_dir import run_dir_of
from pipelines.studies.sweep_report import best_row, trial_rows, write_outputs
from pipelines.studies.sweep_search import (
    cluster_trial_slots,
    decode,
    make_scheduler,
    make_searcher,
    search_space,
)
from pipelines.studies.sweep_spec import SweepSpec, apply_params
from pipelines.tracking import run_groups
from pipelines.tracking.reach import check_tracking
from pipelines.tracking.tracker import tracking_uri

# data.* keys that change the synthetic store itself (a sweep over them builds per trial).
STORE_KEYS = {"num_functions", "num_train", "num_points", "x_range", "noise_std", "seed"}
STORE_KEYS |= {"modalities", "val_fraction", "name", "store", "endpoint_url"}
# CPUs per Ray Data read task of a trial: two concurrent trials must both be able to read
# from the CPU left beside their workers (a 1-CPU read task each would deadlock on 2 CPUs).
READ_CPUS = 0.25


def trial_config(base: Config, params: dict[str, Any], trial_id: str, sweep_dir: Path) -> Config:
    """The config of one trial: base + sampled values, its own run directory."""
    cfg = apply_params(base, decode(params))
    run = dataclasses.replace(cfg.run, name=trial_id, out_dir=str(sweep_dir / "trials"))
    return dataclasses.replace(cfg, run=run)


def _trial(config: dict, *, base: dict, sweep_dir: str, parent_id: str) -> None:
    """Function trainable: one Ray Train run reporting to Tune (see the module docstring)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(config_from_dict(base, "sweep base"), config, trial_id, Path(sweep_dir))
    run_groups.open_run(
        cfg,
        run_dir_of(cfg) / "mlflow_run_id",
        trial_id,
        parent_id=parent_id,
        tags={"sweep.trial_id": trial_id},
    )
    jobs.train(
        cfg,
        local=False,
        resume=True,
        evaluate_after=False,
        callbacks=[TuneReportCallback()],
        read_cpus=READ_CPUS,
    )


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

    check_tracking(tracking_uri(base))  # before Ray: a dead server fails in one line
    init_ray(address)
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
    slots = cluster_trial_slots(base.run, ray.cluster_resources(), spec.max_concurrent_trials)
    parent_id = run_groups.open_run(
        trial_base,
        sweep_dir / "mlflow_run_id",
        f"sweep:{spec.name}",
        params={
            **flatten_config(base),
            **{f"sweep.{k}": json.dumps(v.to_dict()) for k, v in spec.params.items()},
            "sweep.search": spec.search,
            "sweep.num_samples": spec.num_samples,
            "sweep.metric": spec.metric,
            "sweep.scheduler": json.dumps(dataclasses.asdict(spec.scheduler)),
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
                search_alg=make_searcher(spec, slots),
                scheduler=make_scheduler(spec, base),
                num_samples=spec.num_samples,
                # Basic variant generators carry their own limit (Tune ignores this one).
                max_concurrent_trials=slots if spec.search == "tpe" else None,
            ),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir / "ray"), verbose=1),
        )
    log(
        f"sweep {spec.name}: {spec.search} search over {list(spec.params)}, "
        f"{slots} trial(s) at a time x {per_trial:g} CPU"
        + (f" + {base.run.num_workers} GPU" if base.run.use_gpu else "")
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
        rows = trial_rows(spec, grid, sweep_dir, trial_base)
        best = best_row(spec, rows)
        out = write_outputs(spec, base, rows, best, sweep_dir)
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


__all__ = ["SweepInterrupted", "SweepResult", "run_sweep", "trial_config"]

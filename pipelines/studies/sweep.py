"""Hyper-parameter sweeps with Ray Tune; every trial is a Ray Train run (docs/studies.md).

Each trial is a function trainable (0.01 CPU) that applies its sampled values to the base
config and calls :func:`pipelines.jobs.train` on Ray Train with ``TuneReportCallback``
(Ray Train V2 has no ``Tuner(trainer)``); trials report ``step``, ``loss`` and ``best_val``
at every validation. Concurrency: :func:`~pipelines.studies.sweep_search.trial_slots`. A
second call restores the Tune experiment (``<sweep_dir>/ray/tune``) and a restored trial
resumes its run from its ``last.pt``. The sweep is a :class:`~pipelines.studies.driver.Study`
whose runs are Tune's trials: the driver owns the MLflow parent run (KILLED when the sweep
is interrupted); each trial opens its own child run. Outputs:
:mod:`pipelines.studies.sweep_report`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_core.config import Config, config_from_dict, config_to_dict
from mia_core.config.loader import flatten_config
from pipelines import jobs
from pipelines.cluster.connect import init_ray
from pipelines.data.resolve import resolve_store
from pipelines.engine.run_dir import run_dir_of
from pipelines.studies.child_run import ChildJob
from pipelines.studies.driver import Log, Outcome, ParentRun, Results, StudyInterrupted, run_study
from pipelines.studies.sweep_report import best_row, summary_table, trial_rows, write_outputs
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


class SweepInterrupted(StudyInterrupted):
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


class SweepStudy:
    """A sweep as a :class:`~pipelines.studies.driver.Study`: its runs are Tune's trials."""

    section, threads, results_json, results_key = "sweep", None, "", None

    def __init__(self, spec: SweepSpec, base: Config, sweep_dir: Path, resume: bool) -> None:
        self.spec, self.base, self.name, self.out = spec, base, spec.name, sweep_dir
        self.resume = resume
        # Trials share one tracking store and (unless a store-building key is swept) one store.
        run_cfg = dataclasses.replace(
            base.run, tracking_uri=tracking_uri(base), checkpoint_every=base.run.eval_every
        )
        self.cfg = dataclasses.replace(base, run=run_cfg)
        if not any(k.startswith("data.") and k.split(".")[1] in STORE_KEYS for k in spec.params):
            data = dataclasses.replace(base.data, store=resolve_store(base).url)
            self.cfg = dataclasses.replace(self.cfg, data=data)
        import ray  # initialised by run_sweep

        wanted = spec.max_concurrent_trials
        self.slots = cluster_trial_slots(base.run, ray.cluster_resources(), wanted)

    def params(self) -> dict[str, Any]:
        """The base config and the sweep's settings."""
        spec = self.spec
        return {
            **flatten_config(self.base),
            **{f"sweep.{k}": json.dumps(v.to_dict()) for k, v in spec.params.items()},
            "sweep.search": spec.search,
            "sweep.num_samples": spec.num_samples,
            "sweep.metric": spec.metric,
            "sweep.scheduler": json.dumps(dataclasses.asdict(spec.scheduler)),
        }

    def children(self) -> list[ChildJob]:
        """None known up front: Tune samples the trials."""
        return []

    def train(self, children: list[ChildJob], parent: str, log: Log, **kw: Any) -> Results:
        """Fit (or restore) the Tune experiment; returns trial id -> its row.

        Raises:
            SweepInterrupted: Tune returned with unfinished trials (Ctrl-C).
        """
        from ray import tune

        spec, base, sweep_dir, slots = self.spec, self.base, self.out, self.slots
        trainable = tune.with_resources(
            tune.with_parameters(
                _trial, base=config_to_dict(self.cfg), sweep_dir=str(sweep_dir), parent_id=parent
            ),
            {"cpu": 0.01},
        )
        exp_path = sweep_dir / "ray" / "tune"
        if self.resume and tune.Tuner.can_restore(str(exp_path)):
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
                run_config=tune.RunConfig(
                    name="tune", storage_path=str(sweep_dir / "ray"), verbose=1
                ),
            )
        per_trial = base.run.num_workers * base.run.cpus_per_worker
        log(
            f"sweep {spec.name}: {spec.search} search over {list(spec.params)}, "
            f"{slots} trial(s) at a time x {per_trial:g} CPU"
            + (f" + {base.run.num_workers} GPU" if base.run.use_gpu else "")
        )
        grid = tuner.fit()
        unfinished = len(grid) - grid.num_terminated - grid.num_errors
        if unfinished:  # Ctrl-C / SIGINT: Tune saved the experiment and returned early
            raise SweepInterrupted(
                f"sweep {spec.name}: interrupted with {unfinished} unfinished trial(s); run "
                "the same command again to resume them"
            )
        return {r["trial_id"]: r for r in trial_rows(spec, grid, sweep_dir, self.cfg)}

    def read(self, results: Results, run: ParentRun, log: Log) -> Outcome:
        """The best trial; the summary table, plot, best config and best params."""
        spec, rows = self.spec, list(results.values())
        best = best_row(spec, rows)
        files = write_outputs(spec, self.base, rows, best, self.out)
        log(f"sweep {spec.name}: best {spec.metric} {best[spec.metric]:.4g} with {best['params']}")
        log(f"best config: {self.out / 'best_config.yaml'}")
        value = SweepResult(
            self.out, rows, best["params"], self.out / "best_config.yaml", run.run_id
        )
        metrics = {f"best_{spec.metric}": best[spec.metric], "trials": len(rows)}
        return Outcome(value, files, metrics)

    def render(self, results: dict[str, Any], source: str = "", page_dir: str = ".") -> str:
        """The summary table of trial rows (``trial_id -> row``)."""
        return summary_table(self.spec, list(results.values()))


def run_sweep(
    spec: SweepSpec,
    base: Config,
    resume: bool = True,
    address: str | None = None,
    log: Log = print,
) -> SweepResult:
    """Run (or resume) the sweep; see the module docstring."""
    check_tracking(tracking_uri(base))  # before Ray: a dead server fails in one line
    init_ray(address)
    sweep_dir = Path(base.run.out_dir).resolve() / "sweeps" / spec.name
    if not resume and sweep_dir.exists():  # start afresh, keeping the old sweep aside
        old = sweep_dir.with_name(f"{spec.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        sweep_dir.rename(old)
        log(f"sweep {spec.name}: previous sweep moved to {old}")
    return run_study(SweepStudy(spec, base, sweep_dir, resume), log).value


__all__ = ["SweepInterrupted", "SweepResult", "SweepStudy", "run_sweep", "trial_config"]

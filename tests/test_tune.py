"""Ray Tune sweeps: spec validation, and a real 2-trial sweep writing MLflow child runs."""

from __future__ import annotations

import json

import pytest

from mia_core.config import ConfigError, load_config
from pipelines.studies.sweep import run_sweep
from pipelines.studies.sweep_search import (
    decode,
    encode,
    make_searcher,
    search_space,
    trial_slots,
)
from pipelines.studies.sweep_spec import apply_params, load_sweep

TINY = [
    "data.num_functions=40",
    "data.num_train=30",
    "data.num_points=32",
    "data.modalities=[sine,tanh]",
    "model.width=16",
    "model.context_dim=16",
    "model.context_tokens=2",
    "model.depth=3",
    "method.sft.dim=16",
    "method.sft.mlp_dim=16",
    "method.sft.heads=2",
    "run.eval_bins=[[0.05,0.1]]",
    "run.eval_batch_size=16",
    "run.batch_size=4",
    "run.log_every=1",
    "run.steps=2",
    "run.eval_every=1",
]


def write_sweep(tmp_path, search="random", params=None, **extra):
    spec = {
        "name": "tiny",
        "base": "/work/placeholder",
        "overrides": [
            *TINY,
            f"run.out_dir={tmp_path}",
            f"run.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        "search": search,
        "num_samples": 2,
        "max_concurrent_trials": 2,
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "params": params
        or {
            "method.inner_steps": {"values": [1, 2]},
            "method.sft.eta_init": {"uniform": [-0.5, 0.5]},
            "data.support_ratio": {"values": [[0.05, 0.2], [0.1, 0.3]]},
        },
        **extra,
    }
    from pathlib import Path

    spec["base"] = str(Path("configs/experiments/default.yaml").resolve())
    path = tmp_path / "sweep.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def test_shipped_sweeps_load():
    for name in ("mia_random", "mia_grid", "mia_tpe"):
        spec, base = load_sweep(f"configs/tune/{name}.yaml")
        assert base.run.num_workers * base.run.cpus_per_worker <= 1.0
        assert search_space(spec).keys() == spec.params.keys()


def test_bad_sweeps_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"params\.method\.inner_stpes.*unknown config key"):
        load_sweep(write_sweep(tmp_path, params={"method.inner_stpes": {"values": [1]}}))
    with pytest.raises(ConfigError, match=r"'sweep\.params\.method\.inner_lr': grid search"):
        load_sweep(write_sweep(tmp_path, "grid", {"method.inner_lr": {"uniform": [0.1, 1.0]}}))
    with pytest.raises(ConfigError, match=r"params\.method\.inner_steps.*must be >= 0"):
        load_sweep(write_sweep(tmp_path, params={"method.inner_steps": {"randint": [-2, 1]}}))
    with pytest.raises(ConfigError, match=r"sweep\.yaml: unknown key 'sweep\.serch'; did you"):
        load_sweep(write_sweep(tmp_path, serch="grid"))
    with pytest.raises(ConfigError, match=r"'sweep\.params\.run\.outer_lr\.unifrom'.*'unif"):
        load_sweep(write_sweep(tmp_path, params={"run.outer_lr": {"unifrom": [0.1, 1.0]}}))
    with pytest.raises(ConfigError, match=r"'sweep\.scheduler\.name': must be one of"):
        load_sweep(write_sweep(tmp_path), ["sweep.scheduler.name=hyperband"])
    with pytest.raises(ConfigError, match=r"missing required key 'sweep\.base'"):
        load_sweep(_no_base(tmp_path))


def _no_base(tmp_path):
    import yaml

    path = write_sweep(tmp_path)
    raw = yaml.safe_load(path.read_text())
    del raw["base"]
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sweep_overrides_reach_spec_and_base(tmp_path):
    path = write_sweep(tmp_path)
    spec, base = load_sweep(
        path,
        [
            "sweep.num_samples=3",
            "sweep.params.method.inner_lr={loguniform: [0.1, 1.0]}",
            "sweep.params.method.inner_steps.values=[3]",
            "run.steps=5",
        ],
    )
    assert spec.num_samples == 3 and base.run.steps == 5 and spec.overrides[-1] == "run.steps=5"
    assert spec.params["method.inner_lr"].to_dict() == {"loguniform": [0.1, 1.0]}
    assert spec.params["method.inner_steps"].values == [3]
    assert spec.params["data.support_ratio"].kind == "values"  # file entries are kept


def test_params_round_trip_through_encoding():
    cfg = load_config("configs/experiments/default.yaml")
    sampled = {"data.support_ratio": encode([0.02, 0.3]), "method.sft.dim": 32}
    assert isinstance(sampled["data.support_ratio"], str)
    new = apply_params(cfg, decode(sampled))
    assert new.data.support_ratio == [0.02, 0.3] and new.method.sft.dim == 32


def test_trial_slots_fit_two_cpus():
    assert trial_slots(0.5, 2.0, 4) == 2
    assert trial_slots(1.0, 2.0, 4) == 1
    with pytest.raises(ValueError, match="run.num_workers x run.cpus_per_worker"):
        trial_slots(2.0, 2.0, 1)


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_sweep_two_trials_mlflow_children_and_resume(ray_session, tmp_path, mlflow_db):
    import mlflow

    spec, base = load_sweep(write_sweep(tmp_path), ["run.num_workers=1", "run.cpus_per_worker=0.5"])
    res = run_sweep(spec, base)
    assert len(res.rows) == 2
    assert all(r["best_val"] == r["best_val"] and r["status"] != "error" for r in res.rows)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mia-inr")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.info.run_id == res.parent_run_id][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.parent_run_id]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["method.inner_steps"] in ("1", "2")
        assert "final_best_val" in child.data.metrics and "val_nmse" in child.data.metrics
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "summary.csv", "metric_vs_params.png", "best_config.yaml"} <= arts
    md = (res.sweep_dir / "summary.md").read_text()
    assert md.count("\n| ") == 3  # header + 2 trials
    best = load_config(res.best_config)
    assert best.method.inner_steps == res.best_params["method.inner_steps"]
    assert json.loads((res.sweep_dir / "best_params.json").read_text())["params"]
    # A second call restores the finished experiment instead of running new trials.
    again = run_sweep(spec, base)
    assert {r["trial_id"] for r in again.rows} == {r["trial_id"] for r in res.rows}
    assert len(client.search_runs([exp.experiment_id])) == 3


@pytest.mark.parametrize("search", ["tpe", "random"])
def test_searchers_suggest_points_inside_the_space(tmp_path, search):
    spec, base = load_sweep(write_sweep(tmp_path, search))
    searcher = make_searcher(spec, 2)
    if search == "tpe":  # Optuna's TPE through Ray's OptunaSearch
        assert searcher.set_search_properties("best_val", "min", search_space(spec))
        for i in range(3):
            point = decode(searcher.suggest(f"t{i}"))
            assert point["method.inner_steps"] in (1, 2)
            assert -0.5 <= point["method.sft.eta_init"] <= 0.5
            assert point["data.support_ratio"] in ([0.05, 0.2], [0.1, 0.3])
            apply_params(base, point)
    else:
        assert searcher.__class__.__name__ == "BasicVariantGenerator"


def test_tune_job_reports_bad_input_in_one_line(tmp_path, capsys):
    from ray_jobs.common import run_main
    from ray_jobs.tune import main

    assert run_main(main, ["--config", str(write_sweep(tmp_path)), "sweep.serch=grid"]) == 2
    assert "did you mean 'sweep.search'" in capsys.readouterr().err
    binary = tmp_path / "sweep.bin"
    binary.write_bytes(b"\x00\xff" * 8)
    assert run_main(main, ["--config", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "sweep.bin: not a text file" in err and err.count("\n") == 1

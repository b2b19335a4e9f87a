"""Every registered method trains through the one engine: locally and on Ray Train, with resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_configs import TINY_META_MODEL, TINY_MWT_MODEL

from mia_core.config import ConfigError, load_config
from mia_core.config.schema import CONTINUAL_METHOD_NAMES, METHOD_NAMES
from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores import make_location
from pipelines.data.stores.field_writer import write_field_store
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.jobs import train
from pipelines.tasks.registry import get_task, registered

RUN = [
    "run.batch_size=4",
    "run.log_every=1",
    "run.eval_every=2",
    "run.checkpoint_every=2",
    "run.eval_batch_size=16",
    "run.eval_repeats=1",
]
SYNTHETIC = [
    "data.num_functions=40",
    "data.num_train=30",
    "data.num_points=30",
    "data.modalities=[sine,tanh]",
    *TINY_META_MODEL,
    "run.eval_bins=[[0.05,0.1]]",
]
MWT = [
    *TINY_MWT_MODEL,
    "method.mwt.pixel_baseline=false",
    "data.modalities=[image]",
]
CONTINUAL = [
    "model.family=siren",
    "model.width=16",
    "model.depth=2",
    "model.omega0=10.0",
    "method.inner_steps=1",
    "method.inner_lr=0.05",
    "method.mcl.num_tasks=2",
    "method.mcl.eval_budgets=[1]",
    "data.modalities=[air]",
    "run.batch_size=2",
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    digits = root / "digits.zarr"
    assert build_main(["digits", "--out", str(digits), "--limit", "80"]) == 0
    import xarray as xr

    rng = np.random.default_rng(0)
    lat, lon = np.linspace(-40, 40, 6), np.linspace(0, 350, 8)
    data = 0.5 + 0.1 * rng.standard_normal((12, 6, 8))
    ds = xr.Dataset(
        {"air": (("time", "lat", "lon"), data.astype(np.float32))},
        coords={"time": np.arange(12), "lat": lat, "lon": lon},
    )
    split = np.zeros(12, np.int8)
    split[-4:-2], split[-2:] = 1, 2
    field = root / "air.zarr"
    write_field_store(
        ds, make_location(str(field)), chunk_time=4, split=split, normalisation="none"
    )
    return {"digits": str(digits), "field": str(field)}


def method_config(method: str, stores: dict[str, str], out, *extra: str):
    if method == "mwt":
        over = [*MWT, f"data.store={stores['digits']}"]
    elif method in CONTINUAL_METHOD_NAMES:
        over = [*CONTINUAL, f"data.store={stores['field']}"]
    else:
        siren = ["model.family=siren", "model.omega0=10.0", "method.inner_lr=0.001"]
        over = [*SYNTHETIC] + (siren if method == "meta_inr" else [])
    return load_config(
        None, [f"method.name={method}", *over, *RUN, f"run.out_dir={out}", "run.name=t", *extra]
    )


def test_every_method_name_has_a_task():
    assert sorted(registered()) == sorted(METHOD_NAMES)
    with pytest.raises(ConfigError, match="no registered task"):
        get_task("no_such_method")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_trains_locally_and_resumes(method, stores, tmp_path, mlflow_db):
    lines: list[str] = []
    first = train(
        method_config(method, stores, tmp_path, "run.steps=2"),
        local=True,
        evaluate_after=False,
        log=lines.append,
    )
    assert first.step == 2 and first.best_step == 2
    again = train(
        method_config(method, stores, tmp_path, "run.steps=4"),
        local=True,
        evaluate_after=False,
        log=lines.append,
    )
    assert any(line.startswith("resumed at step 2") for line in lines)
    state = load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")
    assert again.step == state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def one_method_per_task() -> list[str]:
    """The first method name of every registered task but the meta-learning one.

    Methods of one task share every engine code path; the meta-learning task's 2-worker
    runs, resubmission and failure recovery are in tests/test_ray_train.py.
    """
    firsts: dict[type, str] = {}
    for name, task in registered().items():
        firsts.setdefault(task, name)
    return sorted(n for t, n in firsts.items() if t is not get_task("mia"))


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", one_method_per_task())
def test_task_trains_on_two_ray_workers_and_resumes(
    method, stores, ray_session, tmp_path, mlflow_db
):
    workers = ["run.num_workers=2", "run.cpus_per_worker=0.5", "run.read_cpus=0.25"]
    marks = tmp_path / "hook"
    marks.mkdir()
    first = train(  # the init hook travels to every worker (cloudpickle)
        method_config(method, stores, tmp_path, "run.steps=2", *workers),
        evaluate_after=False,
        init_hook=lambda trainer: (marks / f"rank{trainer.task.ctx.rank}").touch(),
    )
    assert first.step == 2
    assert sorted(p.name for p in marks.iterdir()) == ["rank0", "rank1"]
    again = train(method_config(method, stores, tmp_path, "run.steps=4", *workers))
    assert again.step == 4 and again.evaluation
    assert load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["step"] == 4
    assert (tmp_path / "t" / "checkpoints" / "best.pt").exists()


def test_snapshot_steps_keep_the_state_of_those_steps(stores, tmp_path):
    cfg = method_config("cavia", stores, tmp_path, "run.steps=3", "run.snapshot_steps=[1,3]")
    train(cfg, local=True, evaluate_after=False, log=lambda _s: None)
    ckpts = tmp_path / "t" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_1.pt", "step_3.pt"]
    assert load_checkpoint(ckpts / "step_1.pt")["step"] == 1

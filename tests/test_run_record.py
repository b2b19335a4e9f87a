"""A run directory is a record: refused config changes, names not paths, full disks, moves."""

from __future__ import annotations

import errno
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_configs import TINY_META_MODEL

from mia_core.config import ConfigError, load_config, save_config
from pipelines.data.stores.errors import DiskFull
from pipelines.engine import checkpoint as ckpt_mod
from pipelines.engine.checkpoint import CheckpointError, load_checkpoint
from pipelines.jobs import train
from ray_jobs.cli import main

BASE = [
    "data.num_functions=40",
    "data.num_train=30",
    "data.num_points=50",
    *TINY_META_MODEL,
    "run.eval_bins=[[0.05,0.1],[0.1,0.2]]",
    "run.eval_batch_size=16",
    "run.batch_size=4",
    "run.log_every=2",
    "run.eval_every=2",
    "run.checkpoint_every=2",
    "run.eval_repeats=1",
    "run.num_workers=1",
    "run.log_model=false",
    "run.system_metrics=false",
    "run.name=r",
]
CONFIG = str(Path("configs/experiments/default.yaml").resolve())
WIDTH8 = ("model.width=8", "model.context_dim=8")  # composers: the context is as wide


def overrides(out: Path, *extra: str) -> list[str]:
    return [*BASE, "run.steps=4", f"run.out_dir={out}", *extra]


def cli(out: Path, *extra: str, command: str = "train") -> list[str]:
    return [command, "--config", CONFIG, "--local", *overrides(out, *extra)]


def one_line(capsys) -> str:
    """The job's one error line (MLflow's own INFO lines on creating a store aside)."""
    lines = [s for s in capsys.readouterr().err.splitlines() if " INFO mlflow." not in s]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-step run ``<out>/r`` (not evaluated); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("finished")
    train(load_config(CONFIG, overrides(out)), local=True, evaluate_after=False, log=print)
    return out


def copy_run(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(finished, out)
    return out


# --- 1, 2: a resume with another config is refused; config.yaml stays as it was --------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("model.depth=3", "model.depth"),
        ("run.outer_lr=0.5", "run.outer_lr"),
        ("run.seed=3", "run.seed"),
        ("run.steps=2", "already trained 4 steps"),
    ],
)
def test_changed_resume_is_refused_and_keeps_the_record(finished, tmp_path, capsys, change, named):
    out = copy_run(finished, tmp_path)
    saved = (out / "r" / "config.yaml").read_bytes()
    last = (out / "r" / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(cli(out, change)) == 2
    err = one_line(capsys)
    assert named in err and "--no-resume" in err and "run.name" in err and len(err) < 260
    assert (out / "r" / "config.yaml").read_bytes() == saved
    assert (out / "r" / "checkpoints" / "last.pt").read_bytes() == last


def test_changed_resume_on_ray_is_refused_before_ray_starts(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    cfg = load_config(CONFIG, overrides(out, *WIDTH8))
    with pytest.raises(ConfigError, match=r"model\.width.*--no-resume"):
        train(cfg, local=False, address="127.0.0.1:1", evaluate_after=False)


def test_more_steps_and_neutral_keys_continue_the_run(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    moved = tmp_path / "elsewhere"
    shutil.move(str(out), moved)  # the whole output folder moved: resumes there
    lines: list[str] = []
    cfg = load_config(CONFIG, overrides(moved, "run.steps=6", "run.log_every=3"))
    res = train(cfg, local=True, evaluate_after=False, log=lines.append)
    assert any(line.startswith("resumed at step 4") for line in lines) and res.step == 6
    assert load_config(moved / "r" / "config.yaml") == cfg  # the record follows the run


def test_resume_without_a_matching_record_never_writes_config(finished, tmp_path, capsys):
    # config.yaml lost: the checkpoint of another shape is found when it loads, in one line
    out = copy_run(finished, tmp_path)
    (out / "r" / "config.yaml").unlink()
    capsys.readouterr()
    assert main(cli(out, *WIDTH8)) == 2
    err = one_line(capsys)
    assert "model of another shape" in err and "saved [" in err and len(err) < 260
    assert not (out / "r" / "config.yaml").exists()


def test_run_without_checkpoints_may_change_its_config(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    shutil.rmtree(out / "r" / "checkpoints")  # nothing trained to keep: a fresh start
    cfg = load_config(CONFIG, overrides(out, "run.steps=2", *WIDTH8))
    assert train(cfg, local=True, evaluate_after=False, log=lambda _s: None).step == 2
    assert load_config(out / "r" / "config.yaml") == cfg


# --- 3, 4, 5: config validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../x", "a/b", "a\\b", "..", ".hidden", "", "  ", "tab\there", "x" * 101]
)
def test_run_name_is_a_name_not_a_path(name):
    with pytest.raises(ConfigError, match="run.name") as err:
        load_config(CONFIG, [f"run.name={name}"])
    assert "\n" not in str(err.value)


def test_huge_run_name_is_one_short_line(capsys):
    assert main(["train", "--config", CONFIG, "--local", "run.name=" + "x" * 100_000]) == 2
    err = one_line(capsys)
    assert "run.name" in err and "at most 100 characters" in err and len(err) < 260


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", "1e999", "-1.0e+999"])
def test_non_finite_numbers_are_refused(tmp_path, text):
    with pytest.raises(ConfigError, match=r"'run\.outer_lr' must be a finite number"):
        load_config(CONFIG, [f"run.outer_lr={text}"])
    with pytest.raises(ConfigError, match=r"'data\.x_range\[1\]' must be a finite number"):
        load_config(CONFIG, [f"data.x_range=[0, {text}]"])
    path = tmp_path / "c.yaml"
    path.write_text(f"include: [{Path(CONFIG).resolve()}]\nrun:\n  weight_decay: {text}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: 'run\.weight_decay' must be a finite"):
        load_config(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "\n   \n"])
def test_empty_config_file_is_one_line(tmp_path, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--local"]) == 2
    err = one_line(capsys)
    assert "empty.yaml" in err and "empty" in err


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("run:\n  steps: 10\n  outer_lr: 0.001\n  steps: 2\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: key 'steps' appears twice .*line 4"):
        load_config(path)
    with pytest.raises(ConfigError, match="appears twice"):
        load_config(None, ["run.eval_bins={a: 1, a: 2}"])


# --- 6, 7: evaluation of a run of another shape, or moved ---------------------------------


def test_evaluate_checkpoint_of_another_shape_is_one_line(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    cfg = load_config(out / "r" / "config.yaml", list(WIDTH8))
    save_config(cfg, out / "r" / "config.yaml")  # a config that does not fit the checkpoint
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(out / "r"), "--no-track", "--no-figures"]) == 2
    err = one_line(capsys)
    assert "model of another shape" in err and "vs config [" in err
    assert len(err) < 260


def test_moved_run_directory_evaluates(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    alone = tmp_path / "elsewhere" / "r2"
    alone.parent.mkdir()
    shutil.move(str(out / "r"), alone)  # without its MLflow store nor its data folder
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(alone), "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "logging to a new MLflow run" in captured.err
    assert (alone / "metrics_val.json").exists() and (tmp_path / "elsewhere" / "mlflow.db").exists()
    assert not out.exists()  # nothing written where the run used to be


# --- 8: a full disk stops training with one line; the last good checkpoint is kept ------


def test_disk_full_checkpoint_stops_with_one_line(tmp_path, capsys, monkeypatch):
    real = torch.save

    def full_after_step_2(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("step", 0) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_after_step_2)
    monkeypatch.chdir(tmp_path)  # the message shows the folder relative to here
    out = tmp_path / "runs"
    assert main(cli(Path("runs"), "run.steps=8")) == 2
    err = one_line(capsys)
    ckpts = out / "r" / "checkpoints"
    assert "no space left on device" in err and "runs/r/checkpoints" in err
    assert "needs about" in err and len(err) < 220
    assert load_checkpoint(ckpts / "last.pt")["step"] == 2  # the last good one, intact
    assert not [p.name for p in ckpts.iterdir() if ".tmp-" in p.name]
    assert not (out / "r" / "results.md").exists()  # stopped at step 4, not at the end


def test_ray_checkpoint_disk_full_is_disk_full(tmp_path, monkeypatch):
    from pipelines.engine import ray_train

    def no_space(state, path, keep_previous=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ray_train, "save_checkpoint", no_space)
    trainer = SimpleNamespace(
        task=SimpleNamespace(ctx=SimpleNamespace(rank=0)),
        state_dict=lambda: {"w": torch.zeros(256)},
        cfg=load_config(None, [f"run.out_dir={tmp_path}"]),
    )
    with pytest.raises(DiskFull, match="needs about 1.0 KB") as err:
        ray_train.report_to_ray(trainer, {"step": 1}, False, True)
    # Ray hands a worker's error to the driver pickled: it must survive that, message intact
    again = pickle.loads(pickle.dumps(err.value))
    assert isinstance(again, DiskFull) and str(again) == str(err.value)
    from ray.train import WorkerGroupError

    group = WorkerGroupError("rank 0 failed", {0: again})
    assert ray_train._user_error(group) is again


# --- 6: checkpoint error lines stay short -----------------------------------------------


def test_checkpoint_error_is_short(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"x": SimpleNamespace(a="y" * 2000)}, path)  # not weights-only loadable
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert len(str(err.value)) < 300


# --- 9: the builders' flags -------------------------------------------------------------


def test_era5_fraction_error_names_its_flag(tmp_path):
    from era5_samples import build_store

    with pytest.raises(ValueError, match="--val-fraction") as err:
        build_store(tmp_path, tmp_path / "none.nc", "--val-fraction", "0.95")
    assert "--time-stride" not in str(err.value)


# --- 7: a run without Ray storage (trained --local, or moved) resumes on Ray ---------------


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_local_run_resumes_on_ray_from_its_run_directory(finished, tmp_path, ray_session):
    out = copy_run(finished, tmp_path)
    # a fault at step 3 fires only if Ray trained again from scratch instead of from step 4
    extra = ["run.steps=6", "run.fault_injection_step=3", "run.max_failures=0"]
    cfg = load_config(CONFIG, overrides(out, *extra))
    res = train(cfg, local=False, evaluate_after=False)
    assert res.step == 6 and not (out / "r" / ".fault_injected_3").exists()
    assert load_checkpoint(out / "r" / "checkpoints" / "last.pt")["step"] == 6
    assert load_config(out / "r" / "config.yaml") == cfg

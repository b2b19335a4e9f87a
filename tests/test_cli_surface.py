"""What a newcomer learns from ``mia-inr --help``: every command, its usage, its flags."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from typing import Any

import pytest

import pipelines.jobs
import ray_jobs.encode
import ray_jobs.train
import ray_jobs.tune
from ray_jobs.cli import COMMANDS, DISTRIBUTION, GROUPS, main

# `mia-inr <argv> --help` -> the start of its usage line
USAGES = {
    **{name: f"usage: mia-inr {name} " for name in COMMANDS},
    "encode report": "usage: mia-inr encode report ",
    "encode decode": "usage: mia-inr decode ",  # the hidden alias: one decode
    "build synthetic1d": "usage: mia-inr build synthetic1d ",
}


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mia-inr"])  # main() renames argv[0]


def _command_lines(text: str) -> dict[str, str]:
    """``{command: summary}`` of the listing in ``mia-inr --help``."""
    rows = [line.split(None, 1) for line in text.splitlines() if line.startswith("  ")]
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows if row[0] in COMMANDS}


def test_groups_hold_every_command_once():
    grouped = [name for group in GROUPS.values() for name in group]
    assert sorted(grouped) == sorted(COMMANDS)
    assert set(GROUPS) == {"data", "training", "studies", "codec"}


def test_help_lists_every_command_with_a_summary(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = _command_lines(out)
    assert set(listed) == set(COMMANDS)
    assert all(len(summary) > 10 for summary in listed.values()), listed
    assert sum(line.split()[:1] == ["decode"] for line in out.splitlines()) == 1
    assert "mia-inr <command> --help" in out and "--no-resume" in out
    for group in GROUPS:
        assert f"\n{group}:\n" in out


def test_no_arguments_lists_the_commands_and_exits_2(capsys):
    assert main([]) == 2
    assert set(_command_lines(capsys.readouterr().out)) == set(COMMANDS)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mia-inr {version(DISTRIBUTION)}"


def test_top_level_errors_are_status_2(capsys):
    assert main(["--local", "train"]) == 2
    assert "options follow it" in capsys.readouterr().err
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_help_imports_no_job_module():
    code = (
        "import sys\nfrom ray_jobs.cli import main\nmain(['--help'])\n"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv", sorted(USAGES))
def test_every_command_help_starts_with_its_usage(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*argv.split(), "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(USAGES[argv])


def test_encode_decode_alias_still_decodes(tmp_path, capsys):
    # the alias reaches the decoder: a missing code store is its one-line user error
    argv = [str(tmp_path / "none.zarr"), "--out", str(tmp_path / "x.nc")]
    assert main(["encode", "decode", *argv]) == main(["decode", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0] == err[1] and "none.zarr" in err[0]


def _capture(calls: list[dict[str, Any]], result: Any = None):
    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append({"args": args, **kwargs})
        return result

    return fake


def test_no_resume_reaches_train_and_continual(monkeypatch):
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray_jobs.train, "train", _capture(calls))
    monkeypatch.setattr(pipelines.jobs, "train", _capture(calls))  # ray_jobs.continual
    config = ["--config", "configs/experiments/default.yaml", "--local"]
    for command in ("train", "continual"):
        assert main([command, *config]) == 0
        assert main([command, *config, "--no-resume"]) == 0
    assert [c["resume"] for c in calls] == [True, False, True, False]


def test_no_resume_reaches_tune(monkeypatch):
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray_jobs.tune, "load_sweep", lambda path, overrides: ("spec", "base"))
    monkeypatch.setattr(ray_jobs.tune, "run_sweep", _capture(calls))
    assert main(["tune", "--config", "sweep.yaml"]) == 0
    assert main(["tune", "--config", "sweep.yaml", "--no-resume"]) == 0
    assert [c["resume"] for c in calls] == [True, False]


def test_tune_refuses_local_with_the_reason(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["tune", "--config", "sweep.yaml", "--local"])
    assert stop.value.code == 2 and "Ray Tune" in capsys.readouterr().err


def test_encode_no_resume_is_overwrite(monkeypatch):
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray_jobs.encode, "run_encode", _capture(calls))
    where = ["--store", "s.zarr", "--checkpoint", "runs/x", "--out", "c.zarr", "--local"]
    assert main(["encode", *where]) == 0
    assert main(["encode", *where, "--no-resume"]) == 0
    assert main(["encode", *where, "--overwrite"]) == 0
    assert [c["args"][0].overwrite for c in calls] == [False, True, True]

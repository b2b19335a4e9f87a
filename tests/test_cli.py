"""The ``mia-inr`` command: subcommands, one-line user errors with status 2."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ray_jobs.cli import COMMANDS, main

EXPECTED = {"build", "train", "evaluate", "tune", "ablate", "encode", "decode", "continual"}


def test_every_job_is_a_subcommand():
    assert EXPECTED <= set(COMMANDS)


def test_unknown_command_and_help(capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "mia-inr train" in capsys.readouterr().out


def test_bad_key_is_one_line_and_status_2(capsys):
    code = main(["train", "--config", "configs/experiments/default.yaml", "run.stepz=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "run.stepz" in err and "run.steps" in err


def test_binary_config_is_one_line_and_status_2(tmp_path, capsys):
    blob = tmp_path / "model.pt"
    blob.write_bytes(bytes(range(256)) * 4)
    assert main(["train", "--config", str(blob)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.pt" in err and "Traceback" not in err


def test_missing_run_directory_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--run-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err


@pytest.mark.skipif(
    shutil.which("mia-inr") is None and sys.prefix == sys.base_prefix,
    reason="console script not installed",
)
def test_console_script_runs_without_sys_path_edits():
    exe = shutil.which("mia-inr") or str(__import__("pathlib").Path(sys.prefix) / "bin" / "mia-inr")
    out = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--local" in out.stdout and "--no-resume" in out.stdout


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text("run: {name: x}\n")
    (tmp_path / "checkpoints" / "best.pt").write_text("garbage\n")
    assert main(["evaluate", "--run-dir", str(tmp_path), "--no-track"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best.pt" in err and "not a safe checkpoint" in err


def test_overrides_may_follow_flags(capsys):
    # argparse alone stops at the first flag; the jobs take key=value anywhere.
    code = main(["train", "--config", "configs/experiments/default.yaml", "--local", "run.stepz=1"])
    assert code == 2 and "run.stepz" in capsys.readouterr().err

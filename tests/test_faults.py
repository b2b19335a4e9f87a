"""Fault injection: a corrupt latest checkpoint, a full disk, a killed driver resubmitted.

Each test asserts the step count and that no step is lost (the run ends where it should,
from the last good checkpoint). A full disk stops the run with ``DiskFull`` at the first
checkpoint it cannot write, the last good one kept; it is both an ``ENOSPC`` raised by the
checkpoint write and, where the test may mount one, a real 8 MB tmpfs filled mid-run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from test_tasks import method_config, stores  # noqa: F401  (stores: fixture)

from mia_core.config import save_config
from pipelines.data.stores.errors import DiskFull
from pipelines.engine import checkpoint
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.jobs import train

pytestmark = pytest.mark.fault
REPO = Path(__file__).resolve().parents[1]


def _train(stores, tmp_path, steps, lines):  # noqa: F811
    cfg = method_config("cavia", stores, tmp_path, f"run.steps={steps}")
    return train(cfg, local=True, evaluate_after=False, log=lines.append)


def test_corrupt_latest_checkpoint_resumes_from_the_previous_one(stores, tmp_path):  # noqa: F811
    lines: list[str] = []
    _train(stores, tmp_path, 4, lines)  # last.pt at step 4, previous.pt at step 2
    ckpts = tmp_path / "t" / "checkpoints"
    assert load_checkpoint(ckpts / "previous.pt")["step"] == 2
    (ckpts / "last.pt").write_bytes(b"\x00garbage" * 64)  # a damaged file
    result = _train(stores, tmp_path, 6, lines)
    warned = [line for line in lines if line.startswith("warning:")]
    assert len(warned) == 1 and "last.pt is unreadable" in warned[0] and "(step 2)" in warned[0]
    assert any(line.startswith("resumed at step 2") for line in lines)
    assert result.step == load_checkpoint(ckpts / "last.pt")["step"] == 6
    assert load_checkpoint(ckpts / "previous.pt")["step"] == 4


def test_a_full_disk_while_checkpointing_stops_and_keeps_the_last_good(stores, tmp_path, monkeypatch):  # noqa: F811, E501
    calls = {"n": 0}
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint write: no space left, half a file
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    lines: list[str] = []
    with pytest.raises(DiskFull, match="no space left on device writing last.pt"):
        _train(stores, tmp_path, 6, lines)  # training on without a record would lose it all
    ckpts = tmp_path / "t" / "checkpoints"
    assert load_checkpoint(ckpts / "best.pt")["step"] == 2  # the first write, kept
    assert not (ckpts / "last.pt").exists()
    assert not [p.name for p in ckpts.iterdir() if ".tmp-" in p.name]  # nothing half-written


@pytest.fixture
def tmpfs(tmp_path):
    """A real 8 MB tmpfs (needs the right to mount: root in the CI sandbox), else skip."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_file_system_while_checkpointing_stops(stores, tmp_path, tmpfs):  # noqa: F811
    filler = tmpfs / "filler"
    cfg = method_config(
        "cavia", stores, tmpfs, "run.steps=6", f"run.tracking_uri=sqlite:///{tmp_path}/m.db"
    )
    lines: list[str] = []

    def log(line: str) -> None:  # fill the disk after step 3's line, free it after step 5's
        lines.append(line)
        if line.startswith("step") and line.split()[1] == "3/6":
            free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
            with open(filler, "wb") as f:
                try:
                    f.write(b"\0" * free)
                except OSError:
                    pass
        if line.startswith("step") and line.split()[1] == "5/6":
            filler.unlink()

    with pytest.raises(DiskFull, match="no space left on device"):
        train(cfg, local=True, evaluate_after=False, log=log)
    assert not any(line.startswith("step") and line.split()[1] == "5/6" for line in lines)
    filler.unlink()
    ckpts = tmpfs / "t" / "checkpoints"
    assert load_checkpoint(ckpts / "last.pt")["step"] == 2  # step 4 was never written
    assert not [p.name for p in ckpts.iterdir() if ".tmp-" in p.name]


@pytest.mark.timeout(300)
def test_killed_driver_resubmitted_resumes_without_losing_steps(
    stores, tmp_path, mlflow_db  # noqa: F811
):
    base = method_config("cavia", stores, tmp_path)  # the same tiny model and data
    overrides = [
        f"data.store={base.data.store}",
        f"run.out_dir={tmp_path}",
        "run.name=t",
        "run.checkpoint_every=5",
        "run.eval_every=1000",
        "run.log_every=1",
        "run.system_metrics=false",
    ]
    config = tmp_path / "job.yaml"
    save_config(base, config)
    cmd = [sys.executable, "-m", "ray_jobs.train", "--config", str(config), "--local"]
    env = {**os.environ, "MIA_NO_TCMALLOC": "1", "PYTHONUNBUFFERED": "1"}
    job = subprocess.Popen(
        [*cmd, *overrides, "run.steps=60"], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    for line in job.stdout:  # kill -9 once a checkpoint past step 10 exists
        if line.startswith("step") and int(line.split()[1].split("/")[0]) >= 12:
            os.kill(job.pid, signal.SIGKILL)
            break
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL
    saved = load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["step"]
    assert saved % 5 == 0 and 10 <= saved < 60
    rerun = subprocess.run(
        [*cmd, *overrides, "run.steps=60"], cwd=REPO, env=env, text=True,
        capture_output=True, timeout=240,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"resumed at step {saved}" in rerun.stdout
    assert load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["step"] == 60
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"

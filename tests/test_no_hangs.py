"""A Ray address or an MLflow server that does not answer fails in one line, in seconds.

Before: ``--address 127.0.0.1:<closed port>`` printed Ray's GCS warnings for minutes, and an
unreachable tracking server gave more than 150 s of silence (MLflow's retries). The
timeout is ``MIA_CONNECT_TIMEOUT`` (a short one here).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tune import write_sweep

from pipelines.cluster.connect import ClusterError, probe_address
from pipelines.tracking.reach import ConnectError
from ray_jobs.common import run_main

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "s3cr3t-pw"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(MIA_CONNECT_TIMEOUT="2", RAY_AUTH_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "ray_jobs.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.timeout(200)
def test_train_and_tune_with_no_ray_at_the_address_fail_in_one_line(tmp_path):
    port = closed_port()
    cases = [
        ["train", "--config", "configs/experiments/default.yaml", f"run.out_dir={tmp_path}"],
        ["tune", "--config", str(write_sweep(tmp_path))],
    ]
    for args, address in zip(cases, [f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"], strict=True):
        start = time.monotonic()
        out = _cli([*args, "--address", address], tmp_path)
        assert time.monotonic() - start < 60
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) < 220, out.stderr[-2000:]
        assert address in lines[0] and "not reachable" in lines[0]


def test_a_port_that_accepts_and_never_answers_is_no_ray(silent_port, monkeypatch):
    monkeypatch.setenv("MIA_CONNECT_TIMEOUT", "0.5")
    start = time.monotonic()
    with pytest.raises(ClusterError, match=rf"127.0.0.1:{silent_port} did not answer within 0.5 s"):
        probe_address(f"127.0.0.1:{silent_port}")
    assert time.monotonic() - start < 5


def test_a_live_ray_answers_the_probe(ray_session):
    import ray

    probe_address(ray.get_runtime_context().gcs_address)  # no error
    probe_address("auto")  # left to Ray


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_unreachable_tracking_server_fails_in_one_line(
    tmp_path, kind, silent_port, capsys, monkeypatch
):
    from ray_jobs.train import main

    port = closed_port() if kind == "closed" else silent_port
    uri = f"http://mlflow:{PASSWORD}@127.0.0.1:{port}"
    monkeypatch.setenv("MIA_CONNECT_TIMEOUT", "1")
    start = time.monotonic()
    args = ["--config", "configs/experiments/default.yaml", "--local"]
    rc = run_main(main, [*args, f"run.out_dir={tmp_path}", f"run.tracking_uri={uri}"])
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"http://***@127.0.0.1:{port}" in err and PASSWORD not in err
    assert ("did not answer within 1 s" if kind == "silent" else "not reachable") in err


def test_connect_timeout_must_be_a_positive_number(monkeypatch):
    monkeypatch.setenv("MIA_CONNECT_TIMEOUT", "soon")
    with pytest.raises(ConnectError, match="MIA_CONNECT_TIMEOUT='soon'"):
        probe_address(f"127.0.0.1:{closed_port()}")

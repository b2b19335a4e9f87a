"""Ray's own output in a job: the settings of pipelines/cluster/ray_output.py and following a
submitted job with pipelines/cluster/follow_job.py (scripts/run_default.sh)."""

from __future__ import annotations

import importlib
import io
import logging
import types
import warnings

import pytest
from ray.util.annotations import RayDeprecationWarning

from pipelines.cluster import follow_job
from pipelines.cluster.connect import forwarded_env
from pipelines.cluster.ray_output import (
    QUIET_ENV,
    SETUP_HOOK,
    driver_init_kwargs,
    quiet_rank,
    quiet_worker,
)


def _shown(module: str) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("old option", RayDeprecationWarning, "x.py", 1, module=module)
    return bool(seen)


def test_workers_drop_ray_s_deprecations_of_its_own_calls_only():
    with warnings.catch_warnings():
        warnings.filterwarnings("module", category=RayDeprecationWarning)  # what Ray sets
        assert _shown("ray.data._internal.execution.interfaces.execution_options")
        quiet_worker()
        assert not _shown("ray.data._internal.execution.interfaces.execution_options")
        assert not _shown("ray")
        assert _shown("pipelines.engine.ray_train")  # the user's code: still warned
        assert _shown("rayleigh")


def test_the_setup_hook_names_quiet_worker():
    module, _, name = SETUP_HOOK.rpartition(".")  # Ray imports it in every worker
    assert getattr(importlib.import_module(module), name) is quiet_worker


def test_ray_data_level_is_forwarded_and_honoured_by_ray_data(monkeypatch):
    from ray.data._internal.logging import configure_logging

    assert forwarded_env({})["RAY_DATA_LOG_LEVEL"] == QUIET_ENV["RAY_DATA_LOG_LEVEL"]
    assert forwarded_env({"RAY_DATA_LOG_LEVEL": "INFO"})["RAY_DATA_LOG_LEVEL"] == "INFO"
    logger = logging.getLogger("ray.data")
    try:  # Ray Data (re)configures its logger from the variable in every process
        monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "WARNING")
        configure_logging()
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
    finally:
        monkeypatch.delenv("RAY_DATA_LOG_LEVEL")
        configure_logging()
    assert logger.isEnabledFor(logging.INFO)


class _Out(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_driver_colours_worker_prefixes_only_on_a_terminal():
    env: dict[str, str] = {}
    assert driver_init_kwargs(_Out(True), env) == {"logging_level": logging.WARNING}
    assert "RAY_COLOR_PREFIX" not in env
    driver_init_kwargs(_Out(False), env)  # a file: ray job submit's log
    assert env["RAY_COLOR_PREFIX"] == "0"
    env = {"RAY_COLOR_PREFIX": "1"}
    driver_init_kwargs(io.StringIO(), env)  # the user's choice is kept
    assert env["RAY_COLOR_PREFIX"] == "1"


def test_only_rank_0_logs_info():
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)  # as Ray Train configures its workers
        quiet_rank(0)
        assert root.level == logging.INFO
        quiet_rank(1)
        assert root.level == logging.WARNING
    finally:
        root.setLevel(level)


class _Client:
    """A JobSubmissionClient that replays a log and ends in ``status``."""

    def __init__(self, status: str, message: str = "", error: Exception | None = None):
        self.status, self.message, self.error = status, message, error
        self.known = True

    async def tail_job_logs(self, job_id):
        yield f"{job_id} line 1\n"
        if self.error is not None:
            raise self.error
        yield "line 2\n"

    def get_job_info(self, job_id):
        if not self.known:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return types.SimpleNamespace(status=self.status, message=self.message)


def test_follow_writes_the_job_s_log_and_returns_its_status():
    out = io.StringIO()
    assert follow_job.follow(_Client("SUCCEEDED", "done"), "j1", out) == ("SUCCEEDED", "done")
    assert out.getvalue() == "j1 line 1\nline 2\n"


@pytest.mark.parametrize(
    ("client", "code", "line"),
    [
        (_Client("SUCCEEDED", "Job finished successfully."), 0, ""),
        (
            _Client("FAILED", "exit code 2, last available logs (truncated): j1 line 1\nline 2"),
            1,
            "job j1 failed: exit code 2\n",
        ),
        (_Client("RUNNING", error=RuntimeError("closed")), 1, "error: job j1: closed\n"),
    ],
)
def test_follow_job_exits_with_the_job_s_status(monkeypatch, capsys, client, code, line):
    import ray.job_submission

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address: client)
    assert follow_job.main(["--address", "http://127.0.0.1:8265", "j1"]) == code
    got = capsys.readouterr()
    assert got.out.startswith("j1 line 1\n") and got.err == line


def test_follow_job_names_an_unknown_job_in_one_line(monkeypatch, capsys):
    import ray.job_submission

    client = _Client("PENDING")
    client.known = False
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address: client)
    assert follow_job.main(["--address", "http://127.0.0.1:8265", "nope"]) == 1
    got = capsys.readouterr()
    assert got.out == ""
    assert (
        got.err
        == "error: job nope: Request failed with status code 404: Job nope does not exist.\n"
    )

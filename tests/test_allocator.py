"""tcmalloc for every command: the re-exec preloads it once, and can be turned off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ray_jobs.cli as cli
from pipelines.cluster.allocator import OPT_OUT, REEXEC_FLAG, tcmalloc_path

SCRIPT = """
import os, sys
from pipelines.cluster.allocator import allocator_status, reexec_with_tcmalloc
print("start", flush=True)
reexec_with_tcmalloc()
print(allocator_status(), os.environ.get("LD_PRELOAD", ""), sys.argv[1:])
"""


def _run(tmp_path, **env_extra) -> list[str]:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in (OPT_OUT, REEXEC_FLAG, "LD_PRELOAD")}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, str(script), "a", "b c"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.skipif(tcmalloc_path() is None, reason="libtcmalloc_minimal.so.4 not installed")
def test_reexec_preloads_tcmalloc_once_and_keeps_the_arguments(tmp_path):
    lines = _run(tmp_path)
    # "start" twice: the original process, then the re-executed one (and no third time).
    assert lines[:2] == ["start", "start"] and len(lines) == 3
    assert lines[2].startswith("tcmalloc (preloaded)") and tcmalloc_path() in lines[2]
    assert lines[2].endswith("['a', 'b c']")


def test_opt_out_keeps_glibc_malloc(tmp_path):
    lines = _run(tmp_path, **{OPT_OUT: "1"})
    assert lines[0] == "start" and len(lines) == 2
    assert lines[1].startswith("glibc malloc")


def test_cli_reexecs_only_as_the_command(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "reexec_with_tcmalloc", lambda: calls.append(1))
    monkeypatch.setattr(sys, "argv", ["mia-inr", "--help"])
    assert cli.main() == 0 and calls == [1]
    assert cli.main(["--help"]) == 0 and calls == [1]
    capsys.readouterr()

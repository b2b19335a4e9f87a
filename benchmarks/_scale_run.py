"""One stage of the scale benchmark as a fresh ``mia-inr`` process, with its peak memory.

Each stage runs in its own child process so that its peak resident set size is its own.
The peak is the larger of the child's ``ru_maxrss`` from ``os.wait4`` (the kernel's
high-water mark of that process, exact, including children it reaped) and the largest sum
of RSS over the child's process tree sampled every 0.2 s with psutil (processes it starts
but does not reap, such as Ray workers). ``mia-inr`` re-executes itself with tcmalloc in
the same process, so the measured process is the job itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.2


def mia_command() -> list[str]:
    """The ``mia-inr`` console script of this interpreter, else ``python -m ray_jobs.cli``."""
    script = Path(sys.executable).parent / "mia-inr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray_jobs.cli"]


@dataclass
class ChildRun:
    """A finished child process.

    Attributes:
        cmd: the command line.
        rc: exit status (negative: killed by that signal; 124: timed out).
        seconds: wall time, start-up included.
        peak_mb: peak resident set size (MiB), see the module docstring.
        stdout: its standard output.
        stderr: path of its standard error (progress bars, warnings).
    """

    cmd: list[str]
    rc: int
    seconds: float
    peak_mb: float
    stdout: str
    stderr: Path

    def reason(self) -> str:
        """One line: the child's last error line, or its exit status."""
        lines = [ln.strip() for ln in self.stderr.read_text(errors="replace").splitlines()]
        errors = [ln for ln in lines if ln.startswith("error") or "Error" in ln]
        last = (errors or [ln for ln in lines if ln] or [""])[-1]
        what = "timed out" if self.rc == 124 else f"exit {self.rc}"
        return f"{what}: {last}"[:240] if last else what


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_child(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: float | None = None
) -> ChildRun:
    """Run ``cmd`` from the repository root; stderr goes to ``log``, stdout is returned.

    A child past ``timeout`` seconds is killed with its process group (status 124).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.with_suffix(".out")
    t0 = time.perf_counter()
    with open(out, "w") as fo, open(log, "w") as fe:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=fo,
            stderr=fe,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        watched = psutil.Process(proc.pid)
        peak_tree, timed_out = 0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss(watched))
            if timeout is not None and time.perf_counter() - t0 > timeout and not timed_out:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(POLL_S)
        proc.returncode = rc = 124 if timed_out else os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    peak = max(usage.ru_maxrss * 1024, peak_tree) / 2**20  # ru_maxrss: KiB on Linux
    return ChildRun(cmd, rc, seconds, peak, out.read_text(errors="replace"), log)


def run_stage(
    name: str,
    fn: Callable[[], dict[str, Any]],
    row: dict[str, Any],
    notes: list[str],
    keys: Sequence[str],
    label: str = "",
    on_error: Sequence[str] = (),
) -> bool:
    """Run one benchmark stage into ``row``: its numbers, or nulls and a note on failure.

    Args:
        name: the stage (shown, and the note's prefix).
        fn: returns the stage's keys and optional ``notes``.
        row: the result row the stage's keys go into.
        notes: the row's notes (extended).
        keys: the row's numeric keys (shown, and checked for null).
        label: shown before the stage name (e.g. a variant).
        on_error: keys set to null when ``fn`` raises.

    Returns:
        Whether every key the stage gave is a number.
    """
    t0 = time.perf_counter()
    try:
        got = fn()
    except Exception as err:  # noqa: BLE001 - a failed stage is a null with a note
        got = {"notes": [f"{name}: {type(err).__name__}: {' '.join(str(err).split())}"[:240]]}
        got.update(dict.fromkeys(on_error))
    notes.extend(got.pop("notes", []))
    row.update(got)
    ok = bool(got) and all(got.get(k) is not None for k in keys if k in got)
    shown = ", ".join(f"{k}={show(got[k])}" for k in keys if k in got)
    failed = "" if ok else f"  [{notes[-1] if notes else 'failed'}]"
    prefix = f"{label:13s} " if label else ""
    print(f"  {prefix}{name:9s} {time.perf_counter() - t0:7.1f} s  {shown}{failed}", flush=True)
    return ok


def show(v: Any) -> str:
    """A number as the progress lines show it (``null`` for None)."""
    return "null" if v is None else f"{v:.4g}"


def render_only(render: Callable[[dict[str, Any], str], str], json_path: str, md_path: str) -> int:
    """``--render-only``: regenerate the page ``md_path`` from the results ``json_path``."""
    out_md = Path(md_path)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render(json.loads(Path(json_path).read_text()), json_path))
    print(f"wrote {out_md} from {json_path}")
    return 0

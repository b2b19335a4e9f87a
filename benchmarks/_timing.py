"""Timing on a shared machine: foreign CPU load, waiting for quiet, interleaved medians.

Every benchmark script here measures wall time on a small VM shared with other jobs; two
OpenMP threads on two cores slow down several-fold when another process takes a core.
So each timed section first waits for the machine to be idle, and reports how many cores
processes outside the benchmark's own process tree used meanwhile (``/proc`` has a 10 ms
resolution, so sections shorter than ~0.2 s are never flagged). Linux only.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

CLK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds used by every process since boot (all cores, idle and iowait excluded)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK


def own_busy_s() -> float:
    """CPU seconds of this process and its descendants (e.g. Ray's processes, a server)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(f[1]), []).append(int(name))
        cpu[int(name)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    total, stack = 0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / CLK


class Contention:
    """Cores used by processes outside this process tree during a ``with`` block.

    Attributes:
        foreign: mean foreign cores over the block (set on exit).
        threshold: foreign cores above which :meth:`note` flags the section.
    """

    def __init__(self, threshold: float = 0.25) -> None:
        self.threshold = threshold
        self.foreign = 0.0

    def __enter__(self) -> Contention:
        self.b0, self.o0, self.t0 = machine_busy_s(), own_busy_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        self.foreign = max(0.0, (machine_busy_s() - self.b0) - (own_busy_s() - self.o0)) / wall

    def note(self) -> str:
        """Foreign load, flagged when it makes the number unreliable."""
        flag = " CONTENDED" if self.foreign > self.threshold else ""
        return f"others {self.foreign:.2f} cores{flag}"


def wait_idle(max_wait: float, quiet_s: int = 3) -> float:
    """Wait (at most ``max_wait`` s) until foreign processes use < 0.1 core for ``quiet_s`` s.

    Returns:
        The seconds waited.
    """
    t0, quiet = time.perf_counter(), 0
    while quiet < quiet_s and time.perf_counter() - t0 < max_wait:
        with Contention() as c:
            time.sleep(1.0)
        quiet = quiet + 1 if c.foreign < 0.1 else 0
    return time.perf_counter() - t0


def load_note() -> str:
    """1-minute load average vs cores."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


class Timing:
    """Median wall time of repeated calls plus the CPU load of other processes meanwhile.

    Args:
        samples: wall seconds per call.
        foreign: CPU seconds other processes used during each call.
    """

    def __init__(self, samples: list[float], foreign: list[float]) -> None:
        self.samples, self.foreign = samples, foreign
        self.median = statistics.median(samples)
        self.wall = sum(samples)
        self.foreign_mean = sum(foreign) / self.wall if self.wall > 0 else 0.0

    @property
    def contended(self) -> bool:
        """Whether other processes used a noticeable share of the CPU meanwhile."""
        return self.wall >= 0.2 and self.foreign_mean > 0.15

    def describe(self) -> str:
        """Samples in ms and the foreign load."""
        ms = ", ".join(f"{s * 1e3:.0f}" for s in self.samples)
        note = "  << CONTENDED: numbers unreliable" if self.contended else ""
        return f"samples ms: {ms}; other processes: {self.foreign_mean:.2f} cores{note}"


def paired_time(
    fns: dict[str, Callable[[], object]],
    warmup: int,
    iters: int,
    max_wait: float = 0.0,
    retries: int = 2,
) -> dict[str, Timing]:
    """Time several functions with interleaved calls (A B A B ...), median per function.

    Interleaving makes their ratio robust to the slow drift of a shared machine's speed.
    When other processes used the CPU meanwhile, the measurement is repeated (after waiting
    for an idle machine) up to ``retries`` times; the least contended attempt is returned.
    The foreign load of a call is the machine's CPU time minus this process's (cheap
    enough to take around every call; child processes are not expected while timing).
    """
    best: dict[str, Timing] | None = None
    for _ in range(1 + retries):
        if max_wait > 0:
            wait_idle(max_wait)
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        samples: dict[str, list[float]] = {k: [] for k in fns}
        foreign: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(iters):
            for k, fn in fns.items():
                b0, c0, t0 = machine_busy_s(), time.process_time(), time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
                cpu = time.process_time() - c0
                foreign[k].append(max(0.0, machine_busy_s() - b0 - cpu))
        timings = {k: Timing(samples[k], foreign[k]) for k in fns}
        load = max(t.foreign_mean for t in timings.values())
        if best is None or load < max(t.foreign_mean for t in best.values()):
            best = timings
        if not any(t.contended for t in best.values()):
            break
    assert best is not None
    return best

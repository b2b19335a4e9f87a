"""Process memory for the benchmarks: the allocator (tcmalloc) and resident set size.

Imports nothing heavy: :func:`maybe_reexec_with_tcmalloc` must run before torch is
imported. glibc malloc returns large buffers to the OS and page-faults them back every
iteration; tcmalloc avoids that (faster, lower peak RSS). torch on CPU has no allocator
statistics, so peak RSS (with the kernel's high-water mark reset) is the honest measure.
Linux only.
"""

from __future__ import annotations

import os
import resource
import sys

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
REEXEC_FLAG = "_MIA_BENCH_REEXEC"


def tcmalloc_loaded() -> bool:
    """Whether tcmalloc is mapped into this process."""
    try:
        with open("/proc/self/maps") as fh:
            return "tcmalloc" in fh.read()
    except OSError:
        return False


def maybe_reexec_with_tcmalloc(quiet: bool = False) -> str:
    """Re-exec this script with tcmalloc preloaded when possible; return a status line.

    Does nothing when tcmalloc is already mapped, ``MIA_NO_TCMALLOC`` is set, the library
    is missing, or a re-exec already happened (the environment flag ``_MIA_BENCH_REEXEC``).

    Args:
        quiet: do not announce the re-exec (subprocesses whose stdout is parsed).
    """
    if tcmalloc_loaded():
        status = f"tcmalloc: preloaded (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r})"
        return status + (" [re-executed by this script]" if os.environ.get(REEXEC_FLAG) else "")
    if os.environ.get("MIA_NO_TCMALLOC"):
        return "tcmalloc: NOT preloaded (MIA_NO_TCMALLOC set): glibc malloc"
    if not os.path.exists(TCMALLOC):
        return f"tcmalloc: NOT preloaded ({TCMALLOC} not found): glibc malloc"
    if os.environ.get(REEXEC_FLAG):
        return "tcmalloc: NOT preloaded (re-exec with LD_PRELOAD did not load it): glibc malloc"
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (TCMALLOC, env.get("LD_PRELOAD", "")) if p)
    env[REEXEC_FLAG] = "1"
    if not quiet:
        print(f"tcmalloc: not preloaded; re-executing with LD_PRELOAD={TCMALLOC}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
    raise AssertionError("unreachable")


def current_rss_mb() -> float:
    """Resident set size now, from /proc/self/statm."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """RSS high-water mark: VmHWM from /proc/self/status, else ru_maxrss (KiB on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

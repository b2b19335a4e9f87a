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

from pipelines.cluster.allocator import (
    OPT_OUT,
    allocator_status,
    reexec_with_tcmalloc,
    tcmalloc_loaded,
    tcmalloc_path,
)


def maybe_reexec_with_tcmalloc(quiet: bool = False) -> str:
    """Re-exec this script with tcmalloc preloaded when possible; return a status line.

    The mechanism every ``mia-inr`` command uses (:mod:`pipelines.cluster.allocator`);
    ``MIA_NO_TCMALLOC=1`` measures glibc malloc instead.

    Args:
        quiet: do not announce the re-exec (subprocesses whose stdout is parsed).
    """
    if not quiet and not tcmalloc_loaded() and tcmalloc_path() and not os.environ.get(OPT_OUT):
        print(f"tcmalloc: not preloaded; re-executing with {tcmalloc_path()}", flush=True)
    reexec_with_tcmalloc()
    return f"allocator: {allocator_status()}"


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

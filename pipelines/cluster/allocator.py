"""The process allocator: every ``mia-inr`` command runs with tcmalloc when it is installed.

glibc malloc hands large activation buffers (a few MB: one ``(16, 512, 64)`` float tensor
is 2 MB) back to the OS when they are freed and page-faults them in again on the next
step, so element-wise ops and GEMM outputs of that size ran 5-9x slower than half-size
ones in a profile of the ERA5 CPU preset; preloading tcmalloc (Debian
``libtcmalloc-minimal4``, installed by ``scripts/setup.sh``) keeps them mapped: 1.24x
the training throughput of that preset on one thread here (``benchmarks/fields_bench.py``
reports the allocator with each run). ``mallopt`` thresholds set from inside a running
process did not help (1.03x), and the library must be loaded before anything allocates,
so the command re-executes itself once with ``LD_PRELOAD`` set; its children (spawned
study workers, the local Ray cluster's processes) inherit it.

Imports only the standard library: it runs before torch is imported.
``MIA_NO_TCMALLOC=1`` turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)
REEXEC_FLAG = "_MIA_TCMALLOC_REEXEC"
OPT_OUT = "MIA_NO_TCMALLOC"


def tcmalloc_path() -> str | None:
    """The first installed tcmalloc of :data:`CANDIDATES`, or ``None``."""
    return next((p for p in CANDIDATES if os.path.exists(p)), None)


def tcmalloc_loaded() -> bool:
    """Whether tcmalloc is mapped into this process (Linux; ``False`` elsewhere)."""
    try:
        with open("/proc/self/maps") as fh:
            return "tcmalloc" in fh.read()
    except OSError:
        return False


def allocator_status() -> str:
    """One line saying which allocator this process runs with, and why."""
    if tcmalloc_loaded():
        return "tcmalloc (preloaded)"
    if os.environ.get(OPT_OUT):
        return f"glibc malloc ({OPT_OUT} set)"
    if tcmalloc_path() is None:
        return "glibc malloc (libtcmalloc_minimal.so.4 not installed)"
    return "glibc malloc (tcmalloc installed, not preloaded)"


def reexec_with_tcmalloc(argv: Sequence[str] | None = None) -> None:
    """Replace this process by itself with tcmalloc preloaded, when that is possible.

    Returns (doing nothing) when tcmalloc is already mapped, ``MIA_NO_TCMALLOC`` is set,
    the library is not installed, the platform is not Linux, or this process is already
    the re-executed one (the environment flag stops a loop if the preload failed).

    Args:
        argv: the command line to run again, ``sys.argv`` by default (its first entry is
            the script, run with this interpreter).
    """
    lib = tcmalloc_path()
    if (
        not sys.platform.startswith("linux")
        or lib is None
        or os.environ.get(OPT_OUT)
        or os.environ.get(REEXEC_FLAG)
        or tcmalloc_loaded()
    ):
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[REEXEC_FLAG] = "1"
    # tcmalloc reports every allocation above 1 GiB on stderr; errors stay one line.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    args = list(sys.argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args], env)


__all__ = [
    "CANDIDATES",
    "OPT_OUT",
    "allocator_status",
    "reexec_with_tcmalloc",
    "tcmalloc_loaded",
    "tcmalloc_path",
]

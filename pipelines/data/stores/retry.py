"""Riding out an object store outage: chunk reads retried until a deadline.

botocore's own retries give up within seconds when the endpoint refuses connections; an
S3 gateway restarting or a network blip can last longer, and a training epoch should not
die of it. :func:`read_with_retry` retries a read of a *remote* store whose error is a
connection or timeout error (anywhere in its cause chain) with exponential backoff
(0.5 s doubling to 8 s) until ``MIA_STORE_OUTAGE_S`` seconds (default 120) have passed
since the first failure, printing one line when it starts waiting and one when the store
answers again. Any other error (a corrupt chunk, a missing key, bad credentials) is
raised at once, as is a local store's.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
TRANSIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests")
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def outage_seconds() -> float:
    """How long a remote read keeps retrying (``MIA_STORE_OUTAGE_S``, default 120)."""
    return float(os.environ.get("MIA_STORE_OUTAGE_S", "120"))


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` or an error it came from is a connection or timeout failure."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        name = type(err).__name__
        if isinstance(err, (ConnectionError, TimeoutError)) and not isinstance(err, PERMANENT):
            return True
        if type(err).__module__.split(".")[0] in TRANSIENT_MODULES and any(
            word in name for word in ("Connect", "Timeout", "Endpoint", "ServerDisconnected")
        ):
            return True
        err = err.__cause__ or err.__context__
    return False


def read_with_retry(
    read: Callable[[], T],
    what: str,
    remote: bool,
    deadline_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``read()``, retried through a remote store's outage (see the module docstring).

    Args:
        read: the read to run.
        what: what is read, for the waiting line (e.g. the chunk key and store).
        remote: only remote stores are retried.
        deadline_s: give up this long after the first failure (default
            :func:`outage_seconds`); the last error is then raised.
        sleep: the waiting function (tests).
    """
    deadline = outage_seconds() if deadline_s is None else deadline_s
    first, delay = None, 0.5
    while True:
        try:
            value = read()
        except Exception as err:
            now = time.monotonic()
            first = now if first is None else first
            if not remote or not is_transient(err) or now - first + delay > deadline:
                raise
            if delay == 0.5:
                print(f"store unreachable reading {what} ({type(err).__name__}); retrying "
                      f"for up to {deadline:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
            sleep(delay)
            delay = min(2 * delay, 8.0)
            continue
        if first is not None:
            waited = time.monotonic() - first
            print(
                f"store answered again after {waited:.0f} s ({what})", file=sys.stderr, flush=True
            )
        return value

"""The code store's writer lock: one encoding job writes a code store at a time.

The lock is the ``mia_lock`` attribute of the store (owner host, pid, token and a
heartbeat time refreshed by a thread); a lock whose heartbeat is older than
``LOCK_STALE_S``, or whose owner process is gone on this host, is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import zarr

from pipelines.data.stores import StoreError, StoreLocation

LOCK_PERIOD_S, LOCK_STALE_S = 15.0, 90.0  # heartbeat period; a lock older than this is dead
_HELD: set[str] = set()  # tokens of the locks this process holds now


def acquire_lock(group: zarr.Group, location: StoreLocation, stale_s: float = LOCK_STALE_S) -> str:
    """Mark the code store as written by this job; refuse one that another job writes.

    The ``mia_lock`` attribute holds an owner token, host, pid and a heartbeat the
    owner refreshes (:func:`refresh_lock`); a lock whose heartbeat is older than
    ``stale_s`` (a killed job) is taken over, and so at once is a lock of this host
    whose process no longer exists.

    Returns:
        This job's token.

    Raises:
        StoreError: another encoder holds a fresh lock.
    """
    held = dict(group.attrs.get("mia_lock", {}) or {})
    age = time.time() - float(held.get("heartbeat", 0.0))
    if held and age < stale_s and not _owner_gone(held):
        raise StoreError(
            f"{location}: another encoder is writing this code store (pid {held.get('pid')} "
            f"on {held.get('host')}, last seen {age:.0f}s ago); wait for it to finish, or "
            f"choose another output (a lock unrefreshed for {stale_s:.0f}s is taken over)"
        )
    token = uuid.uuid4().hex
    _HELD.add(token)
    group.attrs["mia_lock"] = {
        "token": token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": time.time(),
    }
    return token


def _owner_gone(held: dict[str, Any]) -> bool:
    """True when the lock was taken on this host by a process that no longer exists."""
    if held.get("host") != socket.gethostname():
        return False  # another machine's pid means nothing here
    try:
        pid = int(held.get("pid", 0))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():  # this process: gone unless one of its writers holds it now
        return held.get("token") not in _HELD
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError as err:  # EPERM: alive, owned by another user
        return err.errno == errno.ESRCH
    return False


def refresh_lock(group: zarr.Group, token: str) -> None:
    """Move this job's heartbeat forward (no-op if the lock is no longer ours)."""
    held = dict(group.attrs.get("mia_lock", {}) or {})
    if held.get("token") == token:
        group.attrs["mia_lock"] = {**held, "heartbeat": time.time()}


def release_lock(group: zarr.Group, token: str) -> None:
    """Remove this job's lock (a lock taken over by another job is left alone)."""
    _HELD.discard(token)
    held = dict(group.attrs.get("mia_lock", {}) or {})
    if held.get("token") == token:
        group.attrs["mia_lock"] = {}


@contextlib.contextmanager
def writer_lock(
    group: zarr.Group, location: StoreLocation, period_s: float = LOCK_PERIOD_S
) -> Iterator[str]:
    """Hold the code store's lock while the block runs, refreshed every ``period_s``.

    The lock is released however the block ends (an error, a full disk, Ctrl-C); when
    the release itself fails while an error is on its way out (a full disk cannot store
    the cleared attribute either), the block's error is the one raised, and the next
    run on this host takes the lock over at once (its process is gone).
    """
    token = acquire_lock(group, location)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period_s):
            try:
                refresh_lock(group, token)
            except Exception:  # a missed heartbeat is harmless; the job's writes fail loudly
                continue

    thread = threading.Thread(target=beat, name="code-store-lock", daemon=True)
    thread.start()
    try:
        yield token
    finally:
        stop.set()
        thread.join()
        failing = sys.exc_info()[1] is not None
        _HELD.discard(token)
        try:
            release_lock(group, token)
        except Exception:
            if not failing:
                raise


__all__ = ["acquire_lock", "refresh_lock", "release_lock", "writer_lock"]

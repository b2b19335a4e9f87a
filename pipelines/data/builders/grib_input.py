"""GRIB inputs read with cfgrib, refusing truncated or corrupt messages.

cfgrib skips a message ecCodes cannot read with a logged traceback ("skipping corrupted
Message") and builds the dataset from the rest: a file truncated half way gave a store with
2 of its 4 time steps and exit status 0. :func:`scan_grib` walks the messages with ecCodes
first and lists the unreadable ones (index and byte offset), including unreadable bytes
between messages, which ecCodes passes over in silence. :func:`open_grib` refuses such a
file with one line naming it and the first bad message, or, with ``skip_corrupt``, prints
what is skipped and opens the rest. cfgrib's own log records of skipped messages are
caught as well (never printed as tracebacks) and are an error when the scan saw none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import xarray as xr

_CFGRIB_LOGGER = "cfgrib.messages"


@dataclass(frozen=True)
class CorruptMessage:
    """A GRIB message (or stretch of bytes) that could not be read.

    Attributes:
        index: 1-based message number in the file.
        offset: byte offset where it starts.
        reason: what ecCodes said.
    """

    index: int
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"message {self.index} at byte {self.offset}"


def scan_grib(path: str) -> tuple[int, list[CorruptMessage]]:
    """Count the readable messages of a local GRIB file and list the unreadable ones.

    Each message is framed (not decoded) by ecCodes; a read error (a truncated last
    message: "End of resource reached") or a gap of bytes before the next message found
    marks a corrupt one.

    Returns:
        ``(readable, corrupt)``.
    """
    import eccodes

    size = os.path.getsize(path)
    good, index, end, corrupt = 0, 0, 0, []
    failed = False  # the bytes after a failed read belong to that message
    with open(path, "rb") as fh:
        while True:
            index += 1
            before = fh.tell()
            try:
                gid = eccodes.codes_grib_new_from_file(fh)
            except Exception as err:  # ecCodes' error classes differ by version
                corrupt.append(CorruptMessage(index, end, _reason(err)))
                if fh.tell() <= before or fh.tell() >= size:
                    break
                failed, end = True, fh.tell()
                continue
            if gid is None:
                if size > end and not failed and _has_data(path, end):
                    corrupt.append(CorruptMessage(index, end, f"{size - end} unreadable bytes"))
                break
            try:
                offset = int(eccodes.codes_get(gid, "offset"))
                length = int(eccodes.codes_get(gid, "totalLength"))
            finally:
                eccodes.codes_release(gid)
            if offset > end and not failed and _has_data(path, end, offset - end):
                corrupt.append(CorruptMessage(index, end, f"{offset - end} unreadable bytes"))
                index += 1
            good, end, failed = good + 1, offset + length, False
    return good, corrupt


def open_grib(
    path: str, shown: str, skip_corrupt: bool = False, log: Callable[[str], None] | None = None
) -> xr.Dataset:
    """Open a local GRIB file with cfgrib after checking every message.

    Args:
        path: local file.
        shown: the input as it may be printed.
        skip_corrupt: go on without the corrupt messages (listed through ``log``).
        log: line printer of the skipped messages (default: stderr).

    Raises:
        ValueError: a corrupt message without ``skip_corrupt`` (names the file and the
            message), or no readable message at all.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    good, corrupt = scan_grib(path)
    if corrupt and not skip_corrupt:
        first, more = corrupt[0], len(corrupt) - 1
        also = f" (and {more} more)" if more else ""
        raise ValueError(
            f"GRIB input {shown}: {first} is corrupt ({first.reason}){also}; "
            "pass --skip-corrupt to build from the readable messages"
        )
    if not good:
        raise ValueError(f"GRIB input {shown}: no readable GRIB message")
    with _cfgrib_skips() as skipped:
        ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})
    if skipped and not corrupt and not skip_corrupt:
        ds.close()
        raise ValueError(
            f"GRIB input {shown}: cfgrib skipped {len(skipped)} corrupt message(s) "
            f"({skipped[0]}); pass --skip-corrupt to build from the readable messages"
        )
    for item in corrupt:
        log(f"warning: GRIB input {shown}: skipped {item} ({item.reason})")
    for reason in [] if corrupt else skipped:
        log(f"warning: GRIB input {shown}: skipped a message cfgrib could not read ({reason})")
    if corrupt or skipped:
        log(f"warning: GRIB input {shown}: built from its {good} readable message(s)")
    return ds


@contextlib.contextmanager
def _cfgrib_skips() -> Iterator[list[str]]:
    """Collect cfgrib's "skipping corrupted Message" records instead of printing them."""
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            err = record.exc_info[1] if record.exc_info else None
            records.append(_reason(err) if err is not None else record.getMessage())

    logger = logging.getLogger(_CFGRIB_LOGGER)
    handler, propagate = _Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if "End of resource" in text or "Premature" in type(err).__name__:
        return "the file ends inside it: truncated"
    return text[:80]


def _has_data(path: str, start: int, length: int | None = None) -> bool:
    """Whether bytes ``start`` .. ``start+length`` hold more than zero/space padding."""
    with open(path, "rb") as fh:
        fh.seek(start)
        chunk = fh.read(min(length or 1 << 20, 1 << 20))
    return bool(chunk.strip(b"\0 \n\r\t"))

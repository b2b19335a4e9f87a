"""The error types of the store layer; messages name the store (redacted) and the key."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class StoreError(ValueError):
    """A store is missing, malformed, unreadable or holds bad values.

    The message always names the store by its redacted URL (never credentials) and,
    where it applies, the variable and chunk key or signal index.
    """


class DiskFull(OSError):
    """A write failed for lack of space; the message names the folder and the space needed.

    Raised by every writer (checkpoints, stores, codes, decoded files) in place of the
    library's own error, after whatever was written last and completely is kept.
    """

    def __init__(
        self, where: str | os.PathLike[str], needed: int | None = None, what: str = ""
    ) -> None:
        folder = Path(where)
        free = _free_bytes(folder)
        need = f"; needs about {_size(needed)}" if needed else ""
        have = f", {_size(free)} free" if free is not None else ""
        what = f" writing {what}" if what else ""
        super().__init__(
            errno.ENOSPC,
            f"no space left on device{what} in {folder}{have}{need}; free space or choose "
            "another output, then rerun",
        )

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple:
        # the message as it was (a Ray worker's error reaches the driver pickled)
        return (_disk_full_from_message, (str(self.strerror),))


def _disk_full_from_message(message: str) -> DiskFull:
    err = DiskFull.__new__(DiskFull, errno.ENOSPC, message)
    OSError.__init__(err, errno.ENOSPC, message)
    return err


def is_disk_full(err: BaseException) -> bool:
    """True when ``err`` (or one it was raised from) means the device is full or over quota."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):  # torch's zip writer, some C libraries
            return True
        err = err.__cause__ or err.__context__
    return False


def _free_bytes(folder: Path) -> int | None:
    for p in (folder, *folder.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

"""Output guard: a writer never destroys what it did not create, and replaces atomically.

Every command that writes (``build``, ``encode``, ``decode``) names the *kind* of output it
writes: ``signals`` or ``fields`` (data stores), ``codes`` (code stores), ``decoded``
(decoded Zarr) or ``netcdf`` (a decoded netCDF file). :func:`check_output` looks at what
is at the destination and refuses anything of another kind (a folder with a user's files,
another Zarr store, a file where a folder is written and the reverse) unless
``overwrite`` is set; a missing path or an empty folder is always fine.

:func:`replacing` then writes a new local output into a hidden sibling
(``.<name>.tmp-<pid>``) and swaps it in only once complete (old output renamed aside,
new one renamed in, old one deleted), so a failure or a full disk leaves the previous
output as it was and no temporary folder behind. Remote (``s3://``) outputs are checked
the same way (the prefix is listed) but written in place: object stores have no rename,
so a failed write there leaves a partial output to rerun.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mia_core.config.secrets import redact_text
from pipelines.data.stores.errors import DiskFull, StoreError, is_disk_full
from pipelines.data.stores.location import StoreLocation

KINDS = ("signals", "fields", "codes", "decoded", "netcdf")
# What each state is called in an error message ("exists and is <...>").
DESCRIBE = {
    "signals": "a signal store",
    "fields": "a field store",
    "codes": "a code store",
    "decoded": "a decoded Zarr store",
    "netcdf": "a netCDF file",
    "zarr": "a Zarr store of another program",
    "folder": "a folder with other files",
    "file": "a file",
}
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"\x89HDF\r\n\x1a\n")


def local_path(location: StoreLocation) -> Path:
    """The absolute local path of a non-remote location."""
    url = location.url
    return Path(os.path.abspath(url[len("file://") :] if url.startswith("file://") else url))


def _kind_of_attrs(attrs: dict) -> str:
    """Which of our outputs a Zarr group's attributes describe (``zarr``: none of them)."""
    if (attrs.get("mia_store") or {}).get("kind") == "signals":
        return "signals"
    if "mia_variables" in attrs:
        return "fields"
    if "mia_codes" in attrs or "mia_codes_creating" in attrs:
        return "codes"
    if attrs.get("mia_decoded") or str(attrs.get("source", "")).startswith("decoded from "):
        return "decoded"
    return "zarr"


def _zarr_kind(text: bytes | str) -> str:
    try:
        meta = json.loads(text)
    except ValueError:
        return "zarr"
    return _kind_of_attrs(meta.get("attributes") or {}) if isinstance(meta, dict) else "zarr"


def _local_state(path: Path) -> str:
    if not os.path.lexists(path):
        return "absent"
    if not path.is_dir():
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError:
            return "file"
        return "netcdf" if head.startswith(NETCDF_MAGIC) else "file"
    if not any(path.iterdir()):
        return "empty"
    meta = path / "zarr.json"
    return _zarr_kind(meta.read_bytes()) if meta.is_file() else "folder"


def _remote_state(location: StoreLocation) -> str:
    import fsspec

    # A private instance with few retries: a destination that does not answer a listing
    # twice fails the command in seconds (the write itself keeps the usual retries).
    opts = {**location.storage_options, "skip_instance_cache": True}
    if "config_kwargs" in opts:
        opts["config_kwargs"] = {**opts["config_kwargs"], "retries": {"max_attempts": 1}}
    fs, path = fsspec.core.url_to_fs(location.url, **opts)
    if hasattr(fs, "retries"):  # s3fs's own retries, on top of botocore's
        fs.retries = 2
    path = path.rstrip("/")
    try:
        return _zarr_kind(fs.cat_file(f"{path}/zarr.json"))
    except FileNotFoundError:
        pass
    if fs.isfile(path):
        return "file"
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return "absent"
    return "folder" if entries else "absent"


def output_state(location: StoreLocation) -> str:
    """What is at ``location``.

    One of ``absent``, ``empty``, :data:`KINDS`, ``zarr`` (another program's store),
    ``folder`` (anything else in a folder) or ``file``.

    Raises:
        StoreError: a remote destination that cannot be listed (no credentials, an
            unreachable endpoint), naming the redacted URL.
    """
    if not location.is_remote:
        return _local_state(local_path(location))
    try:
        return _remote_state(location)
    except Exception as err:  # botocore/aiohttp errors: credentials, endpoint, permissions
        raise StoreError(f"{location}: cannot reach the output: {remote_reason(err)}") from err


def remote_reason(err: BaseException) -> str:
    """``err`` as a short reason, without credentials in any URL it quotes."""
    text = redact_text(" ".join(str(err).split()))
    return f"{type(err).__name__}: {text}"[:160]


def check_output(
    location: StoreLocation,
    kinds: tuple[str, ...],
    overwrite: bool = False,
    state: str | None = None,
) -> str:
    """Refuse a destination holding anything but an output of ``kinds`` (or nothing).

    Args:
        location: the destination.
        kinds: the kinds this command writes (replacing one of them is fine).
        overwrite: accept (and later replace) whatever is there.
        state: the destination's state when the caller has looked already.

    Returns:
        The destination's state (see :func:`output_state`).

    Raises:
        StoreError: a destination of another kind without ``overwrite``.
    """
    state = output_state(location) if state is None else state
    if overwrite or state in ("absent", "empty", *kinds):
        return state
    want = " or ".join(DESCRIBE[k] for k in kinds)
    raise StoreError(
        f"{location}: exists and is {DESCRIBE[state]}, not {want}; nothing was written. "
        "Choose another output, or pass --overwrite to replace it"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove_stale_temps(dest: Path) -> None:
    """Delete ``.<name>.tmp-<pid>``/``.old-<pid>`` siblings left by killed processes."""
    for p in glob.glob(str(dest.with_name(f".{glob.escape(dest.name)}.*-*"))):
        pid = p.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            _remove(Path(p))


def _swap(tmp: Path, dest: Path) -> None:
    """Put ``tmp`` at ``dest``; whatever was there is deleted only once ``tmp`` is in."""
    if not os.path.lexists(dest):
        os.replace(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    _remove(old)
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    _remove(old)


def clear_in_place(location: StoreLocation, state: str) -> None:
    """Before writing in place with ``overwrite``: delete a local file at the path.

    A folder needs nothing (Zarr's ``mode="w"`` empties it); a file would make the
    store's ``mkdir`` fail.
    """
    if not location.is_remote and state in ("file", "netcdf"):
        local_path(location).unlink()


@contextlib.contextmanager
def disk_full_as(where: str | os.PathLike[str], what: str = "") -> Iterator[None]:
    """Turn a full-disk error raised in the block into :class:`DiskFull` naming ``where``.

    For writers that write in place (a code store resumes where it stopped), so the
    message names the output and says that a rerun resumes.
    """
    try:
        yield
    except Exception as err:
        if isinstance(err, DiskFull) or not is_disk_full(err):
            raise
        raise DiskFull(where, what=what) from err


@contextlib.contextmanager
def replacing(
    location: StoreLocation,
    kinds: tuple[str, ...],
    overwrite: bool = False,
    what: str = "",
) -> Iterator[StoreLocation]:
    """Check the destination, then yield where to write; swap it in once complete.

    Local: the block writes into a hidden sibling that replaces the destination when
    the block returns; on any failure the sibling is deleted and the destination left
    as it was (a full disk becomes :class:`DiskFull` naming the folder). Remote: the
    block writes the destination itself (see the module docstring).

    Args:
        location: the destination.
        kinds: the kinds this command writes (see :func:`check_output`).
        overwrite: replace whatever is there.
        what: what is written, for the disk-full message (``"signal store"``).

    Raises:
        StoreError: a destination of another kind without ``overwrite``.
        DiskFull: the device filled up while writing.
    """
    check_output(location, kinds, overwrite)
    if location.is_remote:
        yield location
        return
    dest = local_path(location)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(dest)
        _remove(tmp)
        yield StoreLocation(str(tmp), dict(location.storage_options))
        _swap(tmp, dest)
    except BaseException as err:
        _remove(tmp)
        if not isinstance(err, DiskFull) and is_disk_full(err):
            raise DiskFull(dest.parent, what=what) from err
        raise


__all__ = [
    "KINDS",
    "check_output",
    "clear_in_place",
    "disk_full_as",
    "local_path",
    "output_state",
    "remote_reason",
    "replacing",
]

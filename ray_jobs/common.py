"""What every entry point shares: one-line user errors with exit status 2.

A user error (a bad config or sweep file, a missing or corrupt store, variable, chunk or
checkpoint) prints ``error: <what and where>`` on stderr and exits with status 2; the
traceback is shown only with ``--traceback`` on the command line or ``MIA_TRACEBACK=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mia_core.config import ConfigError
from mia_core.config.secrets import redact_text
from mia_core.meta.codes import CodeLayoutError
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import DiskFull, StoreError, is_disk_full
from pipelines.engine.checkpoint import CheckpointError
from pipelines.engine.run_dir import CheckpointMissing
from pipelines.tracking.reach import ConnectError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    StoreError,
    EncodeError,
    CodeLayoutError,
    CheckpointMissing,
    CheckpointError,
    DiskFull,
    ConnectError,
    FileNotFoundError,
    # a results file where a folder is, or a folder path through a file (and the reverse)
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    UnicodeDecodeError,
)


def run_main(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn a user error into one line on stderr and status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    show = "--traceback" in args or os.environ.get("MIA_TRACEBACK") == "1"
    args = [a for a in args if a != "--traceback"]
    try:
        return main(args)
    except USER_ERRORS as err:
        if show:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk anywhere: one line, the last good output kept
        if show or not is_disk_full(err):
            raise
        folder = os.path.dirname(str(err.filename or "")) or os.getcwd()
        print(f"error: {_one_line(DiskFull(folder))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


MAX_CHARS = 200  # an error line past this is shortened; --traceback shows it whole


def _one_line(err: BaseException) -> str:
    """``err`` as one line of at most about :data:`MAX_CHARS` characters.

    A long message keeps its start (what failed, where) and its end (what to do), with
    the middle (library detail) elided.
    """
    if isinstance(err, UnicodeDecodeError):
        return f"not a text file ({err.reason} at byte {err.start}); pass a YAML config"
    text = redact_text(" ".join(str(err).split())) or type(err).__name__
    if len(text) <= MAX_CHARS:
        return text
    head, tail = text[: MAX_CHARS * 2 // 3], text[-(MAX_CHARS // 3 - 5) :]
    return f"{head} ... {tail}"


def add_run_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The flags every config-driven job shares (the same names in every job).

    ``--config FILE``, positional ``key=value`` overrides, ``--local`` (one process, no
    Ray), ``--address`` (Ray cluster; default ``RAY_ADDRESS`` or a local instance) and
    ``--no-resume`` (start the run afresh instead of resuming it).
    """
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--local", action="store_true", help="one process, no Ray")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh, do not resume")


def parse_job_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args`` that also takes ``key=value`` overrides after the flags.

    argparse stops filling a ``nargs="*"`` positional at the first flag, so
    ``--config F --local run.steps=2`` would be refused; leftover ``key=value`` tokens
    are appended to ``args.overrides`` in order instead. Anything else left over is an
    error as usual.
    """
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*(args.overrides or []), *extra]
    return args

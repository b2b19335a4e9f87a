"""Progress bar of the store builders: time steps written, with a rate and an ETA, on stderr.

Shown when stderr is a terminal or ``--progress`` is given, so tests, CI logs and
redirected output stay quiet unless asked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator

import xarray as xr
from tqdm import tqdm


def add_progress_argument(p: argparse.ArgumentParser) -> None:
    """The ``--progress`` flag (a bar even when stderr is not a terminal)."""
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar with an ETA on stderr (default: only on a terminal)",
    )


def progress_bar(total: int, desc: str, requested: bool = False) -> tqdm:
    """A bar over ``total`` time steps; disabled unless ``requested`` or stderr is a TTY.

    Args:
        total: time steps the build will write.
        desc: label (the builder's name).
        requested: ``--progress`` was given.
    """
    shown = requested or sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not shown)


def track(
    blocks: Iterable[xr.Dataset], total: int, desc: str, requested: bool = False
) -> Iterator[xr.Dataset]:
    """Yield ``blocks``, advancing a :func:`progress_bar` by each block's time steps once used."""
    with progress_bar(total, desc, requested) as bar:
        for block in blocks:
            yield block
            bar.update(block.sizes["time"])


__all__ = ["add_progress_argument", "progress_bar", "track"]

"""Progress bars of the store builders: work done, with a rate and an ETA, on stderr.

Shown when stderr is a terminal, or always with ``--progress``; ``--no-progress`` (or
stderr that is not a terminal: tests, CI logs, redirected output) keeps a build quiet.
The builders count what takes the time: time steps written (``era5``, ``volumes``),
images read or resized (``images``, the labelled-image builders), clips synthesised
(``av-digits``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import xarray as xr
from tqdm import tqdm

T = TypeVar("T")


def add_progress_argument(p: argparse.ArgumentParser) -> None:
    """``--progress`` (a bar even off a terminal) / ``--no-progress`` (never a bar)."""
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar with an ETA on stderr (default: only when stderr is a terminal)",
    )


def requested(args: argparse.Namespace) -> bool | None:
    """The build's ``--progress`` choice: ``True``, ``False``, or ``None`` (a terminal decides)."""
    return getattr(args, "progress", None)


def progress_bar(total: int, desc: str, shown: bool | None = None, unit: str = "step") -> tqdm:
    """A bar over ``total`` units of work on stderr.

    Args:
        total: units the build will do.
        desc: label (the builder's name and stage).
        shown: ``--progress`` (``True``), ``--no-progress`` (``False``), or ``None``: shown
            when stderr is a terminal.
        unit: what one unit is (``step``, ``image``, ``clip``).
    """
    on = sys.stderr.isatty() if shown is None else shown
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not on)


def track(
    blocks: Iterable[xr.Dataset], total: int, desc: str, shown: bool | None = None
) -> Iterator[xr.Dataset]:
    """Yield ``blocks``, advancing a :func:`progress_bar` by each block's time steps once used."""
    with progress_bar(total, desc, shown) as bar:
        for block in blocks:
            yield block
            bar.update(block.sizes["time"])


def each(items: Iterable[T], total: int, desc: str, shown: bool | None, unit: str) -> Iterator[T]:
    """Yield ``items``, advancing a :func:`progress_bar` by one once each is used."""
    with progress_bar(total, desc, shown, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


__all__ = ["add_progress_argument", "each", "progress_bar", "requested", "track"]

"""The decoder's selections as typed: time steps (indices, ranges, dates) and grids."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from pipelines.codecs.meta_model import EncodeError

TimeSelection = int | slice | Sequence[int] | str | None
DATE = re.compile(r"^-?\d{4}-\d\d")


def compact_ranges(idx: Sequence[int] | np.ndarray, limit: int = 8) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"`` (the first ``limit`` runs, then "...")."""
    runs: list[tuple[int, int]] = []
    for i in sorted(int(v) for v in idx):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    text = [f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:limit]]
    return ", ".join(text) + (", ..." if len(runs) > limit else "")


def parse_times(text: str | None) -> TimeSelection:
    """``"5"`` -> 5, ``"10:20"`` -> slice, ``"1,4,9"`` -> list, empty -> every encoded step.

    A date (``2006-04-16``, ``2006-04``, ``2006-04-16T12``) is kept as text: the steps whose
    time starts with it (:meth:`Decoder.decode`).
    """
    if not text:
        return None
    if DATE.match(text):  # dates: resolved against the store's time coordinate
        return text
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            return slice(int(a) if a else None, int(b) if b else None)
        if "," in text:
            return [int(t) for t in text.split(",")]
        return int(text)
    except ValueError as err:
        raise EncodeError(f"time must look like 5, 10:20 or 1,4,9, got {text!r}") from err


def parse_resolution(text: str | None) -> tuple[int, ...] | None:
    """``"64x64x64"`` -> ``(64, 64, 64)``; empty -> original grid."""
    if not text:
        return None
    try:
        return tuple(int(r) for r in text.lower().split("x"))
    except ValueError as err:
        raise EncodeError(f"resolution must look like 46x90 or 64x64x64, got {text!r}") from err


__all__ = ["DATE", "TimeSelection", "compact_ranges", "parse_resolution", "parse_times"]

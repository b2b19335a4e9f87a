"""``--patch``: build a field store for ``data.patch`` (chunks of whole patches).

``mia-inr build era5 ... --patch 32x32`` or ``mia-inr build volumes ... --patch 16x16x16``
chunks every data variable spatially in whole patches and a few time steps, about
:data:`~pipelines.data.stores.patch_chunks.CHUNK_BYTES` per chunk
(:func:`~pipelines.data.stores.patch_chunks.patch_layout`), and records the patch as the
store's ``mia_built_patch`` attribute; without it chunks hold whole time steps.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def parse_ints(text: str, sep: str, flag: str) -> tuple[int, ...]:
    """``"25x53"`` -> ``(25, 53)``; a ValueError naming ``flag`` when not integers."""
    try:
        return tuple(int(x) for x in text.lower().split(sep))
    except ValueError:
        raise ValueError(f"{flag}: cannot parse {text!r}") from None


def add_patch_argument(p: argparse.ArgumentParser, example: str) -> None:
    """The ``--patch`` option (``example``: e.g. ``32x32``)."""
    p.add_argument(
        "--patch",
        default="",
        help=f"build for data.patch, e.g. {example}: chunks of whole patches and a few time "
        "steps (about 4 MB each), recorded as mia_built_patch (default: whole-step chunks)",
    )


def parse_patch(text: str, rank: int, example: str) -> tuple[int, ...]:
    """The ``--patch`` sizes, ``()`` when not given.

    Raises:
        ValueError: not ``rank`` positive integers (one line naming ``--patch``).
    """
    if not text:
        return ()
    patch = parse_ints(text, "x", "--patch")
    if len(patch) != rank or min(patch) < 1:
        raise ValueError(
            f"--patch must be {rank} positive sizes, one per grid axis (e.g. {example}), "
            f"got {text!r}"
        )
    return patch


def patch_summary(
    patch: Sequence[int], chunk_time: int, spatial: Sequence[int]
) -> dict[str, list[int]]:
    """Build-summary entries of a store built with ``--patch`` (none without it)."""
    if not patch:
        return {}
    return {"patch": list(patch), "chunk_shape": [int(chunk_time), *map(int, spatial)]}

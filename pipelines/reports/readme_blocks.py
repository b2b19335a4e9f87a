"""Generated blocks of docs pages: text between ``<!-- NAME:begin -->`` and its end marker.

Tables whose numbers come from committed results JSON files are never edited by hand:
each job that owns a JSON (``mia-inr reproduce --readme``, ``mia-inr encode report
--readme``; the flag kept its name) renders its block into its page under ``docs/`` and
replaces only the text between its two marker lines (``<!-- NAME:end -->`` the second),
named after the JSON's stem; everything outside them is left byte for byte.
"""

from __future__ import annotations

from pathlib import Path

from mia_core.config import ConfigError


def markers(name: str) -> tuple[str, str]:
    """The begin and end marker lines of the block ``name`` (a results JSON's stem)."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_between_markers(
    text: str, block: str, where: str = "README", name: str = "mia_table1"
) -> str:
    """``text`` with everything between the markers of ``name`` replaced by ``block``.

    Raises:
        ConfigError: the markers are missing, repeated or out of order.
    """
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ConfigError(f"{where}: needs one {begin} line followed by one {end} line")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{block.rstrip()}\n{end}{tail}"


def write_block(readme: str | Path, name: str, block: str) -> Path:
    """Replace block ``name`` of the file ``readme`` with ``block``; returns the path."""
    readme = Path(readme)
    readme.write_text(replace_between_markers(readme.read_text(), block, str(readme), name))
    return readme


__all__ = ["markers", "replace_between_markers", "write_block"]

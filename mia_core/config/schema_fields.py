"""Field helpers and the validation base of the config dataclasses.

Enumerated string fields carry their allowed values in ``field(metadata={"choices": ...})``
and numeric fields their bounds (``gt``/``ge``/``le``); cross-field rules live in each
class's ``_extra_problems``. Every construction (including ``dataclasses.replace``) runs
the checks and raises :class:`ConfigError` listing all problems of that section.
Re-exported by :mod:`mia_core.config.schema`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import field, fields
from typing import Any

from mia_core.config.errors import ConfigError

Problems = Iterator[tuple[str, str]]


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


def _num(default: float, **bounds: float) -> Any:
    return field(default=default, metadata=bounds)


def _list(*default: Any) -> Any:
    return field(default_factory=lambda: list(default))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field_problems(obj: Any) -> Problems:
    for f in fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if "choices" in meta and value not in meta["choices"]:
            yield f.name, f"must be one of {list(meta['choices'])}, got {value!r}"
        if not _is_number(value):
            continue
        if "gt" in meta and not value > meta["gt"]:
            yield f.name, f"must be > {meta['gt']}, got {value!r}"
        if "ge" in meta and not value >= meta["ge"]:
            yield f.name, f"must be >= {meta['ge']}, got {value!r}"
        if "le" in meta and not value <= meta["le"]:
            yield f.name, f"must be <= {meta['le']}, got {value!r}"


MAX_NAME_CHARS = 100


def _name_problems(key: str, value: Any) -> Problems:
    """Check ``value`` is a folder name (one path component), not a path."""
    if not isinstance(value, str):
        return
    if not value.strip():
        yield key, "must not be empty"
    elif len(value) > MAX_NAME_CHARS:
        yield key, f"must be at most {MAX_NAME_CHARS} characters, got {len(value)}"
    elif "/" in value or "\\" in value:
        yield key, f"is a name, not a path: no '/' or '\\' (got {value!r})"
    elif value.startswith("."):
        yield key, f"must not start with '.' (got {value!r})"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        yield key, "must not contain control characters (newline, tab, ...)"


def _interval_problems(name: str, value: Any, low: float, high: float, open_low: bool) -> Problems:
    """Check ``value`` is ``[min, max]`` with min <= max inside (low, high] or [low, high]."""
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
        yield name, f"must be a [min, max] pair of numbers, got {value!r}"
        return
    lo, hi = value
    lo_ok = lo > low if open_low else lo >= low
    if not (lo_ok and hi <= high and lo <= hi):
        bracket = "(" if open_low else "["
        yield name, f"must satisfy min <= max within {bracket}{low}, {high}], got {value!r}"


class _Validated:
    """Mixin running field-metadata and cross-field checks after ``__init__``."""

    def __post_init__(self) -> None:
        problems = [*_field_problems(self), *self._extra_problems()]
        if problems:
            detail = "; ".join(f"{key}: {msg}" for key, msg in problems)
            raise ConfigError(f"{type(self).__name__}: {detail}", problems)

    def _extra_problems(self) -> Problems:
        return iter(())


def _divisible_problems(obj: Any, name: str, by: str) -> Problems:
    """Check ``obj.<name>`` is divisible by ``obj.<by>`` (the problem is reported on ``by``)."""
    value, div = getattr(obj, name), getattr(obj, by)
    if _is_number(value) and _is_number(div) and div > 0 and value % div:
        yield by, f"{name} ({value}) must be divisible by {by} ({div})"

"""Typed specs: any dataclass loaded from YAML + ``key=value`` overrides like a ``Config``.

A spec (a sweep, an ablation study, the settings of an encoding job) is a dataclass
whose fields carry types, ``choices`` and bounds exactly like the config schema;
:func:`load_spec` builds it with the same layered mechanism as
:func:`~mia_core.config.load_config` (:mod:`mia_core.config.layers`): includes, unknown
keys named with file, full dotted key and a did-you-mean, type errors with the expected
type and the value found, nested dataclasses (also as ``list``/``dict`` values),
enumerated values, required fields (no default) and one-line errors for unreadable files.

Every key of a spec is written ``<section>.<field>`` in overrides and messages
(``sweep.num_samples=8``). The file holds the fields under a ``<section>:`` key
(``encode:``), or at its top level for formats that predate sections (``nested=False``:
``configs/tune`` and ``configs/ablation`` files).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Job:
    ...     out: str
    ...     steps: int = 16
    >>> load_spec(Job, None, ["job.out=codes.zarr", "job.steps=4"], "job")
    Job(out='codes.zarr', steps=4)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from mia_core.config.errors import ConfigError
from mia_core.config.layers import Schema, build_from_dict, load_layers
from mia_core.config.schema_fields import Problems, _choice, _num, _Validated

__all__ = [
    "Problems",
    "Validated",
    "bounded",
    "choice",
    "load_spec",
    "spec_from_dict",
    "split_overrides",
]

T = TypeVar("T")


class Validated(_Validated):
    """Base of spec dataclasses: checks run on every construction, not only on loading.

    Field metadata (:func:`choice`, :func:`bounded`) is checked, then the subclass's
    ``_extra_problems`` (yielding ``(field, message)`` pairs) for cross-field rules; a
    :class:`ConfigError` lists them all, and the loader names the layer that set each key.
    """


def choice(default: str, choices: Sequence[str]) -> Any:
    """A ``field`` whose value must be one of ``choices``."""
    return _choice(default, tuple(choices))


def bounded(default: float, **bounds: float) -> Any:
    """A numeric ``field`` with bounds ``gt``/``ge``/``le`` (e.g. ``bounded(1, ge=1)``)."""
    return _num(default, **bounds)


def _schema(cls: type, section: str | None) -> Schema:
    if section is not None and (not section or "." in section or "=" in section):
        raise ConfigError(f"spec section must be one plain key, got {section!r}")
    return Schema(cls, f"{section}." if section else "")


def load_spec(
    cls: type[T],
    path: str | Path | None,
    overrides: Sequence[str] = (),
    section: str | None = None,
    *,
    nested: bool = True,
) -> T:
    """Load a spec file (with its ``include`` list) and apply ``key=value`` overrides.

    Args:
        cls: the spec dataclass.
        path: YAML file, or ``None`` to start from the dataclass defaults.
        overrides: ``"<section>.<field>=value"`` strings applied last, in order (values
            are YAML; dotted keys reach nested dataclasses and ``dict`` entries).
        section: the spec's name: the prefix of its keys in overrides and messages and,
            with ``nested``, the top-level key of the file that holds it. ``None``: keys
            carry no prefix and the file's top level is the spec.
        nested: whether the file holds the fields under ``<section>:`` (``False``: at
            its top level).

    Returns:
        The validated ``cls`` instance.

    Raises:
        ConfigError: naming the file or override, the dotted key and the problem.
    """
    schema = _schema(cls, section)
    return load_layers(schema, path, overrides, section if nested else None)


def spec_from_dict(
    cls: type[T], data: dict[str, Any], section: str | None = None, source: str = "<dict>"
) -> T:
    """Validate a nested dict of the spec's fields (no ``section:`` level) into ``cls``."""
    return build_from_dict(_schema(cls, section), data, source)


def split_overrides(overrides: Sequence[str], section: str) -> tuple[list[str], list[str]]:
    """Split a job's command line into ``<section>.*`` overrides and the others, in order.

    A sweep or study job passes the first list to :func:`load_spec` and the second to the
    experiment configs it builds (``run.steps=100`` goes to the base experiment).
    """
    own: list[str] = []
    rest: list[str] = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        (own if key.startswith(f"{section}.") else rest).append(item)
    return own, rest

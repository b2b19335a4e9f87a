"""Layered YAML + ``key=value`` loading of any dataclass tree (the one config mechanism).

A dataclass is built from *layers* applied in order over its defaults: each YAML file
contributes its ``include`` list (recursively, relative to that file) followed by its own
keys, and every ``key=value`` override is one more layer. Each layer is checked against
the dataclass types on its own (unknown keys with a did-you-mean, types, nested
dataclasses, also inside ``list``/``dict`` fields), so errors name the file or override
that is wrong (a float must be finite: ``.inf``, ``.nan`` and ``1e999`` are refused; files
are read by :mod:`mia_core.config.yaml_text`: no duplicate keys, no empty file); value
checks (``choices``/bounds in field metadata, ``_extra_problems``)
run on the merged result and name the layer that set the key. A :class:`Schema` names the
root dataclass and its key prefix: ``Config`` (none) in :mod:`mia_core.config.loader`,
specs (``sweep.``, ``encode.``, ...) through :func:`mia_core.config.spec.load_spec`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mia_core.config.errors import ConfigError
from mia_core.config.schema import Config
from mia_core.config.schema_fields import _field_problems, _Validated
from mia_core.config.yaml_text import load_yaml, read_yaml

__all__ = ["CONFIG", "Schema", "build_from_dict", "load_layers", "parse_override"]

Layer = tuple[str, dict[str, Any]]
DEFAULTS = "defaults"
_SCI_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")  # YAML 1.1 reads "1e-3" as str


@dataclass(frozen=True)
class Schema:
    """What a layered file format builds.

    Attributes:
        root: the dataclass built from the layers (``Config``, a sweep spec, ...).
        prefix: before every key in overrides and messages (``"sweep."``; ``Config``: none).
    """

    root: type
    prefix: str = ""


CONFIG = Schema(Config)


def _source_name(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _section_of(data: dict[str, Any], section: str, source: str) -> Any:
    """The ``section:`` mapping of a file that holds one spec under that key."""
    extra = sorted(str(k) for k in data if k != section)
    if extra:
        hint = difflib.get_close_matches(extra[0], [section], 1, 0.6)
        mean = f"; did you mean '{hint[0]}'?" if hint else ""
        raise ConfigError(
            f"{source}: unknown top-level key '{extra[0]}'{mean} (the file holds one "
            f"'{section}:' section, besides 'include')"
        )
    return data.get(section)


def _file_layers(
    path: Path, schema: Schema, section: str | None, stack: tuple[Path, ...] = ()
) -> list[Layer]:
    path = path.resolve()
    source = _source_name(path)
    if path in stack:
        chain = " -> ".join(_source_name(p) for p in (*stack, path))
        raise ConfigError(f"include cycle: {chain}")
    data = read_yaml(path, source)
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{source}: 'include' must be a path or a list of paths")
    layers: list[Layer] = []
    for inc in includes:
        target = path.parent / inc
        if not target.is_file():
            raise ConfigError(f"{source}: included file '{inc}' not found (looked at {target})")
        layers += _file_layers(target, schema, section, (*stack, path))
    if section is not None:
        data = _section_of(data, section, source)
    layers.append((source, _check_section(schema.root, data, schema.prefix, source, schema)))
    return layers


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _convert(value: Any, tp: Any, key: str, source: str, schema: Schema) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    ok, out = False, value
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _check_section(tp, value, key + ".", source, schema)
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key, source, schema)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # X | None: X's own message (it names list elements)
            raise errors[0]
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        raw = value
        if isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
            value = float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        out = float(value) if ok else value
        if ok and not math.isfinite(out):  # .inf, -.inf, .nan, 1e999
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {raw!r}")
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is list and isinstance(value, list):
        return [_convert(v, args[0], f"{key}[{i}]", source, schema) for i, v in enumerate(value)]
    elif origin is dict and isinstance(value, dict):
        return {
            _convert(k, args[0], f"{key}.{k}", source, schema): _convert(
                v, args[1], f"{key}.{k}", source, schema
            )
            for k, v in value.items()
        }
    if not ok:
        got = "null" if value is None else f"{value!r} ({type(value).__name__})"
        raise ConfigError(f"{source}: '{key}' expects {_type_name(tp)}, got {got}")
    return out


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        dotted = f"{prefix}{f.name}"
        keys += _all_keys(tp, dotted + ".") if dataclasses.is_dataclass(tp) else [dotted]
    return keys


def _unknown_key(cls: type, name: str, prefix: str, source: str, schema: Schema) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    everywhere = _all_keys(schema.root, schema.prefix)
    elsewhere = [k for k in everywhere if k.rsplit(".", 1)[-1] == name]
    close = elsewhere or [prefix + c for c in difflib.get_close_matches(name, names, 1, 0.6)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    section = f"section '{prefix[:-1]}'" if prefix else "the top level"
    return ConfigError(
        f"{source}: unknown key '{prefix}{name}'{hint} (valid keys in {section}: {names})"
    )


def _check_section(cls: type, data: Any, prefix: str, source: str, schema: Schema) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix[:-1]}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in data.items():
        if name not in hints:
            raise _unknown_key(cls, str(name), prefix, source, schema)
        out[name] = _convert(value, hints[name], f"{prefix}{name}", source, schema)
    return out


def _merge(
    base: dict[str, Any],
    over: Mapping[str, Any],
    origin: dict[str, str],
    source: str,
    prefix: str = "",
) -> None:
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        origin[dotted] = source
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, source, dotted + ".")
        else:
            base[key] = value


def _construct(tp: Any, value: Any, key: str, origin: dict[str, str]) -> Any:
    """``value`` with every (nested) mapping of a dataclass type built into that class."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.", origin)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp) and value is not None and len(args) == 1:
        return _construct(args[0], value, key, origin)
    if typing.get_origin(tp) is list and isinstance(value, list):
        return [_construct(args[0], v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if typing.get_origin(tp) is dict and isinstance(value, dict):
        return {k: _construct(args[1], v, f"{key}.{k}", origin) for k, v in value.items()}
    return value


def _where(key: str, origin: dict[str, str], fallback: str = DEFAULTS) -> str:
    """The layer that set ``key`` or its nearest parent (``fallback`` if none did)."""
    parent = key
    while parent and parent not in origin:
        parent = parent.rpartition(".")[0]
    return origin[parent] if parent else fallback


def _build(cls: type, data: dict[str, Any], prefix: str, origin: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs, errors = {}, []
    missing = [
        f"{prefix}{f.name}"
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in data
    ]
    if missing:
        where = _where(prefix[:-1], origin, origin.get("", DEFAULTS))
        keys = "key" + "s" * (len(missing) > 1) + " " + ", ".join(f"'{k}'" for k in missing)
        errors.append(f"{where}: missing required {keys} (set in the file or as {missing[0]}=...)")
    for name, value in data.items():
        try:
            kwargs[name] = _construct(hints[name], value, f"{prefix}{name}", origin)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    try:
        obj = cls(**kwargs)
        # A plain dataclass gets the field checks (choices, bounds) a _Validated one runs.
        problems = () if isinstance(obj, _Validated) else tuple(_field_problems(obj))
    except ConfigError as exc:
        if not exc.problems:
            raise
        problems = exc.problems
    if problems:
        lines = [
            f"{_where(f'{prefix}{field}', origin)}: invalid value for '{prefix}{field}': {msg}"
            for field, msg in problems
        ]
        raise ConfigError("\n".join(lines)) from None
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"section.key=value"`` into the dotted key and its YAML-parsed value.

    Args:
        text: One command line override, e.g. ``"method.sft.dim=64"``.

    Returns:
        ``(dotted_key, value)``; the value is parsed as YAML (empty -> ``""``).

    Raises:
        ConfigError: If there is no ``=`` or the key is malformed.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"command line override {text!r}: expected 'section.key=value'")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:  # DuplicateKey included
        raise ConfigError(
            f"command line override {text!r}: invalid YAML value: {_one_line(exc)}"
        ) from exc
    return key, value


def _override_path(root: type, key: str) -> tuple[list[str], Any]:
    """Split a dotted key into its path and find the type it sets (``None``: not a field).

    Inside a ``dict`` field the key of the dict may itself contain dots (a sweep's
    ``params.method.inner_lr``): it runs up to the next part that names a field of the
    dict's value dataclass, or to the end.
    """
    parts, path, tp, i = key.split("."), [], root, 0
    while i < len(parts):
        if dataclasses.is_dataclass(tp):
            path.append(parts[i])
            tp, i = typing.get_type_hints(tp).get(parts[i]), i + 1
        elif typing.get_origin(tp) is dict:
            value_tp, j = typing.get_args(tp)[1], i + 1
            fields = typing.get_type_hints(value_tp) if dataclasses.is_dataclass(value_tp) else {}
            while j < len(parts) and parts[j] not in fields:
                j += 1
            path.append(".".join(parts[i:j]))
            tp, i = value_tp, j
        else:
            return path + parts[i:], None
    return path, tp


def _override_layer(text: str, schema: Schema) -> Layer:
    key, value = parse_override(text)
    shown = text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"
    source = f"command line override {shown!r}"
    if schema.prefix:
        if not key.startswith(schema.prefix):
            raise ConfigError(f"{source}: expected '{schema.prefix}key=value'")
        key = key[len(schema.prefix) :]
    path, tp = _override_path(schema.root, key)
    if tp in (str, str | None) and not isinstance(value, str | list | dict | None):
        value = text.partition("=")[2].strip()  # run.name=2024 means the string "2024"
    nested: dict[str, Any] = {}
    *parents, leaf = path
    node = nested
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return source, _check_section(schema.root, nested, schema.prefix, source, schema)


def load_layers(
    schema: Schema,
    path: str | Path | None,
    overrides: Sequence[str] = (),
    section: str | None = None,
) -> Any:
    """Build ``schema.root`` from a file (with its includes) and command line overrides.

    Args:
        schema: the dataclass to build and the prefix of its keys.
        path: YAML file, or ``None`` to start from the dataclass defaults.
        overrides: ``"<prefix>key=value"`` strings applied last, in order.
        section: the file holds the keys under this top-level key (``encode:``);
            ``None``: at its top level.

    Raises:
        ConfigError: Naming the file or override and the dotted key on any problem.
    """
    if isinstance(overrides, str):
        raise ConfigError("overrides must be a sequence of 'key=value' strings, not one string")
    layers = _file_layers(Path(path), schema, section) if path is not None else []
    layers += [_override_layer(text, schema) for text in overrides]
    # A required key missing everywhere should have been set in the file (or on the line).
    main = _source_name(Path(path).resolve()) if path is not None else "command line"
    return _assemble(schema, layers, main)


def build_from_dict(schema: Schema, data: dict[str, Any], source: str = "<dict>") -> Any:
    """Validate a nested dict against ``schema`` and build its root dataclass."""
    checked = _check_section(schema.root, data, schema.prefix, source, schema)
    return _assemble(schema, [(source, checked)], source)


def _assemble(schema: Schema, layers: list[Layer], main: str) -> Any:
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {"": main}  # "": where a missing required key belongs
    for source, data in layers:
        _merge(merged, data, origin, source, schema.prefix)
    return _build(schema.root, merged, schema.prefix, origin)

"""Load, layer, check, save and flatten :class:`~mia_core.config.schema.Config` objects.

A config is built from *layers* applied in order over the dataclass defaults: each YAML
file contributes its ``include`` list (recursively, relative to that file) followed by its
own keys, and every ``section.key=value`` override is one more layer. Each layer is checked
against the schema on its own (unknown keys, types), so errors name the file or override
that is wrong; value checks run on the merged result and name the layer that set the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mia_core.config.errors import ConfigError
from mia_core.config.schema import Config
from mia_core.config.secrets import is_secret_key, redact

__all__ = [
    "ConfigError",
    "config_to_dict",
    "flatten_config",
    "is_secret_key",
    "load_config",
    "parse_override",
    "redact",
    "save_config",
]

Layer = tuple[str, dict[str, Any]]
DEFAULTS = "defaults"
_SCI_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")  # YAML 1.1 reads "1e-3" as str


def _source_name(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _read_yaml(path: Path, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    return data


def _file_layers(path: Path, stack: tuple[Path, ...] = ()) -> list[Layer]:
    path = path.resolve()
    source = _source_name(path)
    if path in stack:
        chain = " -> ".join(_source_name(p) for p in (*stack, path))
        raise ConfigError(f"include cycle: {chain}")
    data = _read_yaml(path, source)
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
        layers += _file_layers(target, (*stack, path))
    layers.append((source, _check_section(Config, data, "", source)))
    return layers


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    ok, out = False, value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        if isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
            value = float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        out = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is list and isinstance(value, list):
        return [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif origin is dict and isinstance(value, dict):
        return {
            _convert(k, args[0], f"{key}.{k}", source): _convert(v, args[1], f"{key}.{k}", source)
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


def _unknown_key(cls: type, name: str, prefix: str, source: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    elsewhere = [k for k in _all_keys(Config) if k.rsplit(".", 1)[-1] == name]
    close = elsewhere or [prefix + c for c in difflib.get_close_matches(name, names, 1, 0.6)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    section = f"section '{prefix[:-1]}'" if prefix else "the top level"
    return ConfigError(
        f"{source}: unknown key '{prefix}{name}'{hint} (valid keys in {section}: {names})"
    )


def _check_section(cls: type, data: Any, prefix: str, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix[:-1]}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in data.items():
        if name not in hints:
            raise _unknown_key(cls, str(name), prefix, source)
        tp, dotted = hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            out[name] = _check_section(tp, value, dotted + ".", source)
        else:
            out[name] = _convert(value, tp, dotted, source)
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


def _build(cls: type, data: dict[str, Any], prefix: str, origin: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs, section_errors = {}, []
    for name, value in data.items():
        if not dataclasses.is_dataclass(hints[name]):
            kwargs[name] = value
            continue
        try:
            kwargs[name] = _build(hints[name], value, f"{prefix}{name}.", origin)
        except ConfigError as exc:
            section_errors.append(str(exc))
    if section_errors:
        raise ConfigError("\n".join(section_errors))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if not exc.problems:
            raise
        lines = []
        for field, msg in exc.problems:
            key = parent = f"{prefix}{field}"
            while parent and parent not in origin:
                parent = parent.rpartition(".")[0]
            lines.append(f"{origin.get(parent, DEFAULTS)}: invalid value for '{key}': {msg}")
        raise ConfigError("\n".join(lines)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"section.key=value"`` into the dotted key and its YAML-parsed value.

    Args:
        text: One command line override, e.g. ``"method.sft.dim=64"``.

    Returns:
        ``(dotted_key, value)``; the value is parsed with ``yaml.safe_load`` (empty -> ``""``).

    Raises:
        ConfigError: If there is no ``=`` or the key is malformed.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"command line override {text!r}: expected 'section.key=value'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"command line override {text!r}: invalid YAML value: {exc}") from exc
    return key, value


def _field_type(key: str) -> Any:
    """Schema type of a dotted key, or ``None`` if the key does not name a field."""
    tp: Any = Config
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def _override_layer(text: str) -> Layer:
    key, value = parse_override(text)
    source = f"command line override {text!r}"
    if _field_type(key) is str and not isinstance(value, str | list | dict):
        value = text.partition("=")[2].strip()  # run.name=2024 means the string "2024"
    nested: dict[str, Any] = {}
    *parents, leaf = key.split(".")
    node = nested
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return source, _check_section(Config, nested, "", source)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Load a config file (with its includes) and apply command line overrides.

    Args:
        path: YAML file, or ``None`` to start from the schema defaults.
        overrides: ``"section.key=value"`` strings applied last, in order.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: Naming the file or override and the dotted key on any problem.
    """
    if isinstance(overrides, str):
        raise ConfigError("overrides must be a sequence of 'key=value' strings, not one string")
    layers = _file_layers(Path(path)) if path is not None else []
    layers += [_override_layer(text) for text in overrides]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, data in layers:
        _merge(merged, data, origin, source)
    return _build(Config, merged, "", origin)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a nested dict (e.g. :func:`config_to_dict` output sent to a worker)."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    _merge(merged, _check_section(Config, data, "", source), origin, source)
    return _build(Config, merged, "", origin)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of ``cfg`` (deep copy; lists and dicts are new objects)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved (redacted) config as YAML; ``load_config`` on it reproduces ``cfg``.

    Args:
        cfg: Config to save.
        path: Destination file; parent directories are created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(redact(config_to_dict(cfg)), sort_keys=False, default_flow_style=None)
    path.write_text("# Resolved config written by mia_core.config.save_config\n" + text)
    return path


def flatten_config(cfg: Config | Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """Flatten to ``{"method.sft.dim": 64, ...}`` (lists as JSON strings), secrets redacted.

    Args:
        cfg: A :class:`Config` or an already nested dict.

    Returns:
        Dotted keys mapped to scalars, e.g. for experiment-tracking parameters.
    """
    nested = config_to_dict(cfg) if isinstance(cfg, Config) else dict(cfg)
    flat: dict[str, str | int | float | bool] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        if not node and prefix:
            flat[prefix[:-1]] = "{}"
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, list | tuple) or value is None:
                flat[f"{prefix}{key}"] = json.dumps(value)
            else:
                flat[f"{prefix}{key}"] = value

    walk(redact(nested), "")
    return flat

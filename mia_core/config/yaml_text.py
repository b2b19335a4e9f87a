"""Reading config YAML strictly: no duplicate keys, no empty files, no binary data.

PyYAML's ``safe_load`` keeps the last of two equal keys of a mapping without a word
and reads an empty file (or one of comments only) as ``None``; a config that says one
thing twice, or nothing at all, is almost always a mistake (a bad merge, the wrong file),
so both are a :class:`ConfigError` naming the file (and the key and line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mia_core.config.errors import ConfigError

__all__ = ["DuplicateKey", "load_yaml", "read_yaml"]


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice."""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate mapping keys (YAML 1.2 requires unique keys)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it below
                break
            if repeated:
                line = key_node.start_mark.line + 1
                raise DuplicateKey(f"key '{key}' appears twice in one mapping (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKey` on a repeated mapping key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_yaml(path: Path, source: str) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (``source``: its name in messages).

    Raises:
        ConfigError: the file is missing, a directory, binary, invalid or duplicated
            YAML, empty (or only comments), or not a mapping at its top level.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{source}: is a directory, not a YAML file") from exc
    text, bad = "", raw.find(b"\x00")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start if bad < 0 else min(bad, exc.start)
    if bad >= 0:
        raise ConfigError(f"{source}: not a text file (binary data at byte {bad}); expected YAML")
    try:
        data = load_yaml(text)
    except DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}; keep one") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {_one_line(exc)}") from exc
    if data is None:
        raise ConfigError(
            f"{source}: the file is empty (no keys, only comments or blanks); "
            "pass a config with at least one key"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    return data

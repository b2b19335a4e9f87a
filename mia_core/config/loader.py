"""Load, layer, check, save and flatten :class:`~mia_core.config.schema.Config` objects.

A config is built from *layers* applied in order over the dataclass defaults: each YAML
file contributes its ``include`` list (recursively, relative to that file) followed by its
own keys, and every ``section.key=value`` override is one more layer. Each layer is checked
against the schema on its own (unknown keys, types), so errors name the file or override
that is wrong; value checks run on the merged result and name the layer that set the key.
The mechanism is :mod:`mia_core.config.layers` (shared with the specs of
:mod:`mia_core.config.spec`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mia_core.config.errors import ConfigError
from mia_core.config.layers import CONFIG, build_from_dict, load_layers, parse_override
from mia_core.config.schema import Config
from mia_core.config.secrets import is_secret_key, redact

__all__ = [
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "flatten_config",
    "is_secret_key",
    "load_config",
    "parse_override",
    "redact",
    "save_config",
]


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
    return load_layers(CONFIG, path, overrides)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a nested dict (e.g. :func:`config_to_dict` output sent to a worker)."""
    return build_from_dict(CONFIG, data, source)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of ``cfg`` (deep copy; lists and dicts are new objects)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved (redacted) config as YAML; ``load_config`` on it reproduces ``cfg``.

    The file is replaced atomically (a reader sees the old one or the new one).

    Redacted (:func:`~mia_core.config.secrets.redact`): the values of secret-looking keys
    and the user info and query values of URLs (``data.endpoint_url``,
    ``run.tracking_uri``), which the run must then take from the environment.

    Args:
        cfg: Config to save.
        path: Destination file; parent directories are created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(redact(config_to_dict(cfg)), sort_keys=False, default_flow_style=None)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:  # atomically: a full disk never leaves a run with half a config
        tmp.write_text("# Resolved config written by mia_core.config.save_config\n" + text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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

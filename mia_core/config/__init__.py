"""Typed, validated experiment configuration (pure Python + YAML).

Example:
    >>> from mia_core.config import load_config
    >>> cfg = load_config("configs/experiments/default.yaml", ["run.steps=10"])
    >>> cfg.run.steps
    10
"""

from mia_core.config.errors import ConfigError
from mia_core.config.loader import (
    config_from_dict,
    config_to_dict,
    flatten_config,
    load_config,
    parse_override,
    redact,
    save_config,
)
from mia_core.config.schema import (
    Config,
    DataConfig,
    MethodConfig,
    ModelConfig,
    PruningConfig,
    RunConfig,
    SFTConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "PruningConfig",
    "RunConfig",
    "SFTConfig",
    "config_from_dict",
    "config_to_dict",
    "flatten_config",
    "load_config",
    "parse_override",
    "redact",
    "save_config",
]

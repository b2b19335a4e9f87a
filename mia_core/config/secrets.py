"""Redaction of credential-looking keys before configs are written or logged."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "token", "credential", "credentials"}
_SECRET_PARTS = ("key_id", "api_key", "access_key", "private_key")


def is_secret_key(key: str) -> bool:
    """Whether a (possibly dotted) key names a credential: ``password``, ``auth_token``...

    Whole ``_``/``-``/``.``-separated words are matched, so ``context_tokens`` is not secret.
    """
    lowered = key.lower()
    words = set(re.split(r"[._\-\s]+", lowered))
    return bool(words & _SECRET_WORDS) or any(part in lowered for part in _SECRET_PARTS)


def redact(data: Any) -> Any:
    """Return a copy of nested dicts/lists with the values of secret-looking keys -> ``"***"``."""
    if isinstance(data, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v) for v in data]
    return data

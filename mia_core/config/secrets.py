"""Redaction of credentials before configs, URLs and parameters are written or logged.

:func:`redact_url` is the one URL redaction of the project (store locations, tracking
URIs, endpoints forwarded to Ray): user info becomes ``***@`` and every query value
``***``. :func:`redact` applies it to every URL-valued string of a config, besides
replacing the values of secret-looking keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "token", "credential", "credentials"}
_SECRET_PARTS = ("key_id", "api_key", "access_key", "private_key")
# scheme:// then user info up to the last "@" before the path (a password may hold "@").
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/]*@")


def is_secret_key(key: str) -> bool:
    """Whether a (possibly dotted) key names a credential: ``password``, ``auth_token``...

    Whole ``_``/``-``/``.``-separated words are matched, so ``context_tokens`` is not secret.
    """
    lowered = key.lower()
    words = set(re.split(r"[._\-\s]+", lowered))
    return bool(words & _SECRET_WORDS) or any(part in lowered for part in _SECRET_PARTS)


def redact_url(url: str) -> str:
    """``url`` as it may be printed, saved or forwarded: no user info, no query values.

    ``https://u:p@host:5000/x?token=abc#f`` -> ``https://***@host:5000/x?token=***``. A
    query value may be a token or signature under any name, so all are hidden; the
    fragment is dropped. A string without ``://`` (a local path) is returned as is.
    """
    if "://" not in url:
        return url
    url = _USERINFO.sub(rf"\1{REDACTED}@", url.split("#", 1)[0])
    base, sep, query = url.partition("?")
    if not sep:
        return base
    parts = [f"{p.split('=', 1)[0]}={REDACTED}" if "=" in p else REDACTED for p in query.split("&")]
    return f"{base}?{'&'.join(parts)}"


# scheme:// then user info, inside free text (an error message quoting an endpoint).
_USERINFO_IN_TEXT = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"']*@")


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with the user info of every URL in it hidden."""
    return _USERINFO_IN_TEXT.sub(rf"\1{REDACTED}@", text)


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` carries user info (``user:password@``), a query string or a fragment."""
    return redact_url(url) != url


def redact(data: Any) -> Any:
    """A copy of nested dicts/lists with secrets hidden.

    The values of secret-looking keys become ``"***"`` and URL strings go through
    :func:`redact_url` (``data.endpoint_url: http://user:pass@host`` included).
    """
    if isinstance(data, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v) for v in data]
    if isinstance(data, str):
        return redact_url(data)
    return data

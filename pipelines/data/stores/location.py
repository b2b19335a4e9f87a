"""Store locations: a URL plus fsspec storage options, printable without secrets.

Local paths and any fsspec URL are accepted. For ``s3://`` the endpoint and credentials
come from the options or, when absent, from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``), exactly as boto does. Remote access is
bounded: connection and read timeouts and a fixed number of retries, so an unreachable
endpoint fails with an error naming the URL instead of hanging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import zarr
from zarr.storage import FsspecStore, LocalStore

from mia_core.config.secrets import redact_url
from pipelines.data.stores.s3_cleanup import quiet_s3_shutdown

__all__ = ["StoreLocation", "make_location", "redact_url"]


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives.

    Attributes:
        url: local path or fsspec URL.
        storage_options: fsspec options (may hold credentials: never printed; excluded
            from ``repr`` and equality).
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display(self) -> str:
        """The URL as it may appear in logs and errors."""
        return redact_url(self.url)

    @property
    def is_remote(self) -> bool:
        """True for URLs with a protocol other than ``file``."""
        return "://" in self.url and not self.url.startswith("file://")

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:  # the URL itself may carry user info or a token
        return f"StoreLocation(url={self.display!r})"

    def zarr_store(self, mode: str = "r") -> zarr.abc.store.Store:
        """A Zarr v3 store object for this location."""
        if not self.is_remote:
            path = self.url[len("file://") :] if self.url.startswith("file://") else self.url
            return LocalStore(os.path.abspath(path), read_only=mode == "r")
        return FsspecStore.from_url(
            self.url, storage_options=dict(self.storage_options), read_only=mode == "r"
        )


def make_location(
    url: str,
    storage_options: dict[str, Any] | None = None,
    endpoint_url: str | None = None,
    retries: int = 3,
    timeout_s: float = 10.0,
) -> StoreLocation:
    """Build a :class:`StoreLocation`, adding bounded-retry settings for S3.

    Args:
        url: local path or fsspec URL.
        storage_options: fsspec options (``key``/``secret``/``endpoint_url`` ...).
        endpoint_url: S3-compatible endpoint; falls back to ``AWS_ENDPOINT_URL``.
        retries: attempts per request for S3 before giving up.
        timeout_s: connect and read timeout per attempt for S3.
    """
    opts = dict(storage_options or {})
    if url.startswith("s3://"):
        quiet_s3_shutdown()  # a failed request must not end in 100 lines of asyncio noise
        endpoint = (
            endpoint_url or opts.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL")
        )
        client = dict(opts.pop("client_kwargs", {}) or {})
        if endpoint:
            client.setdefault("endpoint_url", endpoint)
        client.setdefault("region_name", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        opts["client_kwargs"] = client
        cfg = dict(opts.pop("config_kwargs", {}) or {})
        cfg.setdefault("connect_timeout", timeout_s)
        cfg.setdefault("read_timeout", timeout_s)
        cfg.setdefault("retries", {"max_attempts": retries, "mode": "standard"})
        opts["config_kwargs"] = cfg
    return StoreLocation(url, opts)

"""Bounded reachability checks of the servers a job talks to: MLflow, and Ray (via cluster).

Client libraries retry a server that does not answer for minutes in silence (MLflow's HTTP
client backs off for about four minutes, Ray's GCS client prints warnings for as long):
a probe with a timeout first turns that into one line naming the (redacted) address.
The timeout is ``MIA_CONNECT_TIMEOUT`` seconds (default 30). Any answer counts as reachable
(an HTTP error status, a TLS handshake): the probe checks that something listens and
talks, the client library then reports what it says. :mod:`pipelines.cluster.connect`
uses :func:`probe_tcp` for Ray addresses (``cluster`` may import ``tracking``).
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from mia_core.config.secrets import redact_url

TIMEOUT_ENV = "MIA_CONNECT_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
# Default ports of the database URIs MLflow takes as a tracking store.
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_TRACKING_HINT = "start it or fix run.tracking_uri / MLFLOW_TRACKING_URI"
_REACHED: set[str] = set()


class ConnectError(RuntimeError):
    """A server (Ray cluster, MLflow tracking server) did not answer in the connect timeout."""


def connect_timeout() -> float:
    """Seconds to wait for a server: ``MIA_CONNECT_TIMEOUT``, default 30."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConnectError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def probe_tcp(
    host: str, port: int, what: str, shown: str, hint: str, hello: bytes | None = None
) -> None:
    """Connect to ``host:port`` (and, with ``hello``, get a reply) within the timeout.

    Args:
        host: host name or address.
        port: TCP port.
        what: the server, for the message (``"Ray cluster"``).
        shown: its address as it may be printed (redacted).
        hint: what to do, for the message.
        hello: bytes to send, after which the server must send something (or close):
            a port that accepts and never answers is refused too.

    Raises:
        ConnectError: refused, unresolvable or no answer in time.
    """
    timeout = connect_timeout()
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if hello is not None:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.sendall(hello)
                sock.recv(1)
    except (ConnectionResetError, BrokenPipeError):  # something there answered: a refusal
        return
    except OSError as err:
        raise _unreachable(err, what, shown, hint, timeout) from err


def probe_http(url: str, what: str, shown: str, hint: str) -> None:
    """One GET of ``url`` (no credentials) that must get any answer within the timeout.

    Raises:
        ConnectError: refused, unresolvable, or no response in time.
    """
    timeout = connect_timeout()
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except urllib.error.HTTPError:  # an answer: the server is there
        return
    except urllib.error.URLError as err:
        if isinstance(err.reason, ssl.SSLError):  # it talks TLS: MLflow checks certificates
            return
        reason = err.reason if isinstance(err.reason, OSError) else OSError(str(err.reason))
        raise _unreachable(reason, what, shown, hint, timeout) from err
    except OSError as err:  # timeouts while reading, resets
        raise _unreachable(err, what, shown, hint, timeout) from err


def check_tracking(uri: str) -> None:
    """Fail fast when the MLflow tracking server (or database) of ``uri`` does not answer.

    Local stores (``sqlite:``, ``file:``, paths) and URIs without a host (``databricks``)
    are not probed; a URI that answered once in this process is not probed again.

    Raises:
        ConnectError: one line naming the redacted URI and ``MIA_CONNECT_TIMEOUT``.
    """
    if uri in _REACHED or "://" not in uri or uri.startswith(("sqlite:", "file:")):
        return
    parts = urlsplit(uri)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port: MLflow's own error says it
        return
    scheme = parts.scheme.split("+", 1)[0]
    shown = redact_url(uri)
    if scheme in ("http", "https") and host:
        netloc = parts.netloc.rpartition("@")[2]
        health = f"{scheme}://{netloc}{parts.path.rstrip('/')}/health"
        probe_http(health, "MLflow tracking server", shown, _TRACKING_HINT)
    elif host and (port or scheme in _DB_PORTS):
        probe_tcp(host, port or _DB_PORTS[scheme], "MLflow tracking store", shown, _TRACKING_HINT)
    _REACHED.add(uri)


def _unreachable(err: OSError, what: str, shown: str, hint: str, timeout: float) -> ConnectError:
    if isinstance(err, TimeoutError | socket.timeout) or "timed out" in str(err):
        why = f"did not answer within {timeout:g} s ({TIMEOUT_ENV})"
    else:
        why = f"is not reachable ({err.strerror or err})"
    return ConnectError(f"{what} at {shown} {why}; {hint}")

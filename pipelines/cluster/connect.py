"""Connecting a driver to Ray without putting credentials into its runtime_env.

:func:`init_ray` attaches to ``address`` (default ``RAY_ADDRESS``) or starts a local
instance, and forwards only non-secret settings to Ray's workers through
``runtime_env={"env_vars": ...}``: the names in :data:`FORWARDED_ENV` (S3 endpoint and
region, an MLflow tracking URI that carries no user info or query string, the runs'
command and git commit in ``MLFLOW_RUN_CONTEXT``, ``RAY_AUTH_MODE``, ``"disabled"``
unless set, and ``RAY_DATA_LOG_LEVEL``, ``"WARNING"`` unless set). It also asks Ray for
quiet output (:mod:`pipelines.cluster.ray_output`: Ray Data's per-epoch lines, the driver's
connection lines, colour codes off a terminal, Ray's warnings about its own deprecated
calls). A URL among them that carries credentials
(``http://user:pass@host``, a query string) is not forwarded at all: workers then need the
setting from their node's environment, like the credentials below.

An address that no Ray answers fails within ``MIA_CONNECT_TIMEOUT`` seconds (default 30)
with one :class:`ClusterError` line naming it, instead of minutes of Ray's GCS warnings:
the GCS port (``host:port``) or Ray Client port (``ray://host[:10001]``) is probed first
and must answer a gRPC (HTTP/2) hello.

Credentials (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``, ...) are never forwarded: Ray shows
a runtime_env in plain text in ``ray list actors/jobs/tasks --detail``, the dashboard's
``/api/jobs/`` and ``runtime_env_agent.log``. They reach workers through the environment
of the node they run on instead, which every Ray process inherits from its ``ray start``:

- local multi-node cluster (:mod:`pipelines.cluster.local`): exported into the environment
  of every ``ray start`` (head and worker nodes);
- cloud clusters: the instance role / instance profile (``infra/ray/aws-cluster.yaml``);
- KubeRay: a Kubernetes Secret in the pod spec (``mia-s3`` in ``infra/k8s/raycluster.yaml``).

A ``ray.init()`` that starts a local instance in this process launches its workers with the
driver's environment, so credentials exported in the driver's shell still work there.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from mia_core.config.secrets import redact_url, url_has_credentials
from pipelines.cluster.ray_output import QUIET_ENV, SETUP_HOOK, driver_init_kwargs
from pipelines.tracking.provenance import install_run_context
from pipelines.tracking.reach import ConnectError, probe_tcp

# Settings that reach every Ray worker of the job through runtime_env env_vars: none is a
# credential. A job's own runtime_env (infra/ray/runtime_env.yaml) must not set these.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_CONTEXT",  # provenance tags of new runs (pipelines.tracking.provenance)
    "RAY_AUTH_MODE",
    "RAY_DATA_LOG_LEVEL",  # Ray Data's console and file logs (ray_output.QUIET_ENV)
)

_DEFAULTS = {"RAY_AUTH_MODE": "disabled", **QUIET_ENV}
RAY_CLIENT_PORT = 10001
# HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, Ray Client)
# answers with its SETTINGS, a port that accepts and never answers stays silent.
GRPC_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HINT = "start one (scripts/local_cluster.sh) or fix --address / RAY_ADDRESS"


class ClusterError(ConnectError):
    """No Ray cluster answers at the given address (a user error: one line, status 2)."""


def uri_has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries user info (``user:password@``) or a query string (tokens)."""
    return url_has_credentials(uri)


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``env_vars`` :func:`init_ray` puts into the runtime_env for ``environ``.

    Only the names of :data:`FORWARDED_ENV` that are set (``RAY_AUTH_MODE`` defaults to
    ``"disabled"``, ``RAY_DATA_LOG_LEVEL`` to ``"WARNING"``); a value that carries
    credentials (``AWS_ENDPOINT_URL`` or ``MLFLOW_TRACKING_URI`` with user info or a query
    string) is left out.

    Args:
        environ: the driver's environment (``os.environ``).

    Returns:
        Variable name to value; never a credential.
    """
    env = {k: environ[k] for k in FORWARDED_ENV if k in environ}
    env = {k: v for k, v in env.items() if not url_has_credentials(v)}
    for key, value in _DEFAULTS.items():
        env.setdefault(key, value)
    return env


def init_ray(address: str | None = None, log: Callable[[str], None] = print) -> None:
    """Connect to Ray (no-op when already initialised) with :func:`forwarded_env`.

    The driver's own ``RAY_AUTH_MODE`` defaults to ``disabled`` too: a local instance it
    starts would otherwise write a token that makes later untokened drivers hang. Ray's
    own output is kept short (:mod:`pipelines.cluster.ray_output`: every worker runs its
    setup hook). Prints the dashboard address (or that there is none) once connected.

    Args:
        address: Ray address; default ``RAY_ADDRESS``, else a new local instance (without
            dashboard, worker logs printed by this driver).
        log: line printer of the dashboard line.
    """
    import ray

    if ray.is_initialized():
        return
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    install_run_context()  # the command and git commit of the runs the workers start
    env = forwarded_env(os.environ)
    for name in FORWARDED_ENV:
        if name in os.environ and name not in env:
            warnings.warn(
                f"{name} ({redact_url(os.environ[name])}) carries credentials and is not "
                "forwarded to Ray workers; set it in the nodes' environment (before ray start)",
                stacklevel=2,
            )
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": env, "worker_process_setup_hook": SETUP_HOOK},
        **driver_init_kwargs(sys.stdout),
    }
    if not address:
        kwargs.update(include_dashboard=False, log_to_driver=True)
    else:
        probe_address(address)
    try:
        context = ray.init(address=address, **kwargs)
    except ConnectionError as err:  # "auto" without a cluster, a Ray Client timeout
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterError(f"cannot connect to Ray at {redact_url(address)}: {first}") from err
    url = getattr(context, "dashboard_url", "") or ""
    if url:
        log(f"Ray dashboard: {url if '://' in url else 'http://' + url}")
    else:
        log(
            "Ray dashboard: none (a local Ray instance inside this job; start a cluster "
            "with scripts/local_cluster.sh and pass --address to get one)"
        )


def probe_address(address: str) -> None:
    """Fail fast when nothing listens at a Ray ``address``.

    ``host:port`` is the GCS port of a cluster (``ray start --head`` prints it; 6379 by
    default), ``ray://host[:port]`` a Ray Client server (port 10001 by default). ``auto``
    and ``local`` (Ray finds or starts an instance itself) and other schemes are left to Ray.

    Raises:
        ClusterError: refused, unresolvable, or no answer within ``MIA_CONNECT_TIMEOUT``.
    """
    target, default, what = address.strip(), None, "Ray cluster (GCS)"
    if target.startswith("ray://"):
        target, default, what = target[len("ray://") :], RAY_CLIENT_PORT, "Ray Client server"
    elif "://" in target or target in ("auto", "local", ""):
        return
    target = target.split("/", 1)[0].rpartition("@")[2]
    host, sep, port = target.rpartition(":")
    if not sep or "]" in port:  # no port (or a bare IPv6 address)
        host, port = target, str(default or "")
    host = host.strip("[]")
    if not host or not port.isdigit():
        return  # Ray's own error names the malformed address
    try:
        probe_tcp(host, int(port), what, redact_url(address), _HINT, GRPC_HELLO)
    except ConnectError as err:
        raise ClusterError(str(err)) from err

"""Connecting a driver to Ray without putting credentials into its runtime_env.

:func:`init_ray` attaches to ``address`` (default ``RAY_ADDRESS``) or starts a local
instance, and forwards only non-secret settings to Ray's workers through
``runtime_env={"env_vars": ...}``: the names in :data:`FORWARDED_ENV` (S3 endpoint and
region, an MLflow tracking URI that carries no user info or query string, and
``RAY_AUTH_MODE``, ``"disabled"`` unless set).

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
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.data.stores.location import redact_url

# Settings that reach every Ray worker of the job through runtime_env env_vars: none is a
# credential. A job's own runtime_env (infra/ray/runtime_env.yaml) must not set these.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "MLFLOW_TRACKING_URI",
    "RAY_AUTH_MODE",
)

_DEFAULTS = {"RAY_AUTH_MODE": "disabled"}


def uri_has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries user info (``user:password@``) or a query string (tokens)."""
    return redact_url(uri) != uri


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``env_vars`` :func:`init_ray` puts into the runtime_env for ``environ``.

    Only the names of :data:`FORWARDED_ENV` that are set (``RAY_AUTH_MODE`` defaults to
    ``"disabled"``); ``MLFLOW_TRACKING_URI`` is left out when it carries credentials.

    Args:
        environ: the driver's environment (``os.environ``).

    Returns:
        Variable name to value; never a credential.
    """
    env = {k: environ[k] for k in FORWARDED_ENV if k in environ}
    uri = env.get("MLFLOW_TRACKING_URI")
    if uri is not None and uri_has_credentials(uri):
        del env["MLFLOW_TRACKING_URI"]
    for key, value in _DEFAULTS.items():
        env.setdefault(key, value)
    return env


def init_ray(address: str | None = None, log: Callable[[str], None] = print) -> None:
    """Connect to Ray (no-op when already initialised) with :func:`forwarded_env`.

    The driver's own ``RAY_AUTH_MODE`` defaults to ``disabled`` too: a local instance it
    starts would otherwise write a token that makes later untokened drivers hang. Prints
    the dashboard address (or that there is none) once connected.

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
    env = forwarded_env(os.environ)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is not None and "MLFLOW_TRACKING_URI" not in env:
        warnings.warn(
            f"MLFLOW_TRACKING_URI ({redact_url(uri)}) carries credentials and is not "
            "forwarded to Ray workers; set it in the nodes' environment",
            stacklevel=2,
        )
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}}
    if not address:
        kwargs.update(include_dashboard=False, log_to_driver=True)
    context = ray.init(address=address, **kwargs)
    url = getattr(context, "dashboard_url", "") or ""
    if url:
        log(f"Ray dashboard: {url if '://' in url else 'http://' + url}")
    else:
        log(
            "Ray dashboard: none (a local Ray instance inside this job; start a cluster "
            "with scripts/local_cluster.sh and pass --address to get one)"
        )

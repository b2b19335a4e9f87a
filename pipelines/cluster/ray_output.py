"""What Ray itself prints in a job's output, set through Ray's own switches.

A default ``ray job submit`` run printed about 120 lines, some 30 of them the job's own:
Ray Data's three INFO lines per dataset execution (one per epoch), Ray Train's controller
and checkpoint lines, each ``ray.train.report`` once per rank, Ray's own deprecation
warnings about its internal calls, the driver's "Connecting to / Connected to Ray cluster"
lines and colour codes in files. The settings here keep Ray's warnings and errors and
leave every full log in Ray's session folder:

- Ray Data: ``RAY_DATA_LOG_LEVEL`` (:data:`QUIET_ENV`, forwarded to every worker by
  :func:`pipelines.cluster.connect.init_ray`) is ``WARNING`` unless the driver's
  environment sets it (``RAY_DATA_LOG_LEVEL=INFO`` brings the execution lines back, in the
  output and in ``logs/ray-data``). Its progress bars are off inside Train
  (``DataContext.enable_progress_bars``, :mod:`pipelines.engine.ray_train`).
- Ray Train: its console log level is :data:`TRAIN_LOG_LEVEL` (``RunConfig(logging_config=
  LoggingConfig(...))``; Ray Train's system log files keep every level), and the ranks
  other than 0 log warnings only (:func:`quiet_rank`), so each report shows once.
- Ray Core: the driver's ``ray`` logger logs warnings only (:func:`driver_init_kwargs`;
  the job prints the dashboard address itself), and the ``(Actor pid=...)`` prefixes of
  worker lines carry no colour codes when the driver's stdout is not a terminal
  (``RAY_COLOR_PREFIX=0``, unless set).
- Every worker process ignores Ray's deprecation warnings raised inside Ray itself (e.g.
  Ray Train's DatasetManager using a deprecated Ray Data option): :func:`quiet_worker`,
  the runtime_env's ``worker_process_setup_hook`` (:data:`SETUP_HOOK`). Deprecations
  that the user's code triggers are shown as before.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import MutableMapping
from typing import Any, TextIO

# Forwarded to every Ray worker through runtime_env env_vars (the driver's value wins).
QUIET_ENV = {"RAY_DATA_LOG_LEVEL": "WARNING"}
TRAIN_LOG_LEVEL = "WARNING"
SETUP_HOOK = "pipelines.cluster.ray_output.quiet_worker"
RAY_MODULES = r"ray(\.|$)"  # warnings attributed to Ray's own modules


def quiet_worker() -> None:
    """Ray's ``worker_process_setup_hook``: no warnings about Ray's own deprecated calls.

    Runs in every worker process of the job once Ray is imported there (Ray's own
    ``filterwarnings("module", RayDeprecationWarning)`` comes first, so this filter,
    inserted in front of it, wins).
    """
    from ray.util.annotations import RayDeprecationWarning

    warnings.filterwarnings("ignore", category=RayDeprecationWarning, module=RAY_MODULES)


def driver_init_kwargs(
    stdout: TextIO, environ: MutableMapping[str, str] = os.environ
) -> dict[str, Any]:
    """The ``ray.init`` settings of a job's driver; sets ``RAY_COLOR_PREFIX`` off a terminal.

    Args:
        stdout: the driver's standard output (a file under ``ray job submit``).
        environ: the environment to set ``RAY_COLOR_PREFIX=0`` in when ``stdout`` is
            not a terminal (a value already there is kept).

    Returns:
        ``logging_level`` of the driver's ``ray`` logger (warnings only).
    """
    isatty = getattr(stdout, "isatty", None)
    if not (callable(isatty) and isatty()):
        environ.setdefault("RAY_COLOR_PREFIX", "0")
    return {"logging_level": logging.WARNING}


def quiet_rank(rank: int) -> None:
    """Inside a Ray Train worker: ranks other than 0 log warnings only.

    Ray Train V2 configures the workers' root logger (INFO, to the console and its
    application log file); its ``Reporting training result ...`` line is logged there by
    every rank at each ``ray.train.report``. Rank 0 keeps it; the others log warnings and
    errors only.
    """
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)


__all__ = [
    "QUIET_ENV",
    "SETUP_HOOK",
    "TRAIN_LOG_LEVEL",
    "driver_init_kwargs",
    "quiet_rank",
    "quiet_worker",
]

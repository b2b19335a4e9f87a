"""The task registry: every ``method.name`` mapped to the task that trains it.

The engine never names a task; entry points look the config's method up here and hand
the class to the engine (:mod:`pipelines.jobs`). A new workflow registers its method
names with :func:`register` instead of adding a branch anywhere.
"""

from __future__ import annotations

from mia_core.config import ConfigError
from mia_core.config.methods import CONTINUAL, META, MWT, method_names
from pipelines.engine.task import Task
from pipelines.tasks.continual import ContinualTask
from pipelines.tasks.meta import MetaLearningTask
from pipelines.tasks.mwt import MWTTask

_REGISTRY: dict[str, type[Task]] = {}


def register(names: tuple[str, ...] | list[str], task: type[Task]) -> None:
    """Map each of ``names`` to ``task`` (a name registered twice is an error)."""
    for name in names:
        if name in _REGISTRY and _REGISTRY[name] is not task:
            raise ValueError(f"method {name!r} is already registered to {_REGISTRY[name]}")
        _REGISTRY[name] = task


def get_task(name: str) -> type[Task]:
    """The task of ``method.name`` ``name``.

    Raises:
        ConfigError: no task is registered under ``name`` (lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"method.name={name!r} has no registered task; registered: {sorted(_REGISTRY)}"
        ) from None


def registered() -> dict[str, type[Task]]:
    """A copy of the registry (method name -> task)."""
    return dict(_REGISTRY)


# One task per kind of the method registry (mia_core/config/methods.py).
register(method_names(META), MetaLearningTask)
register(method_names(MWT), MWTTask)
register(method_names(CONTINUAL), ContinualTask)

"""Run directories: where a run keeps its config, checkpoints, results and MLflow run id.

Layout of ``<run.out_dir>/<run.name>``: ``config.yaml`` (the resolved config),
``checkpoints/best.pt`` (chosen on the validation split) and ``checkpoints/last.pt``,
``mlflow_run_id``, then whatever the task's evaluation writes (``results.md``,
``metrics.json``, ``figures/``). On Ray Train the checkpoints live in Ray's storage and
the driver copies the best and the latest into ``checkpoints/`` after training.

A run directory is a record: ``config.yaml`` always describes its checkpoints.

- A resume (the same ``run.name`` again, without ``--no-resume``) whose config differs
  from the saved one in anything that changes what the run learns is refused with the
  differing keys (:func:`refuse_changed_resume`). It may change only the keys of
  :data:`RESUME_NEUTRAL` (where the run lives and is tracked, how often it logs and
  checkpoints, what it runs on, testing aids) and ``run.steps``, which may grow to
  continue training or shrink to no fewer than the steps already trained.
- The saved config is (re)written only once the checkpoint is known to load into the
  model of the config, so a refused or failed resume leaves the record as it was.
- A run directory may be moved: ``evaluate --run-dir`` takes ``run.out_dir`` and
  ``run.name`` from where it is now (:func:`load_run_config`), and a resume under another
  ``run.out_dir`` continues it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mia_core.config import Config, ConfigError, flatten_config, load_config

# Keys a resume may change: they never change what the run learns.
RESUME_NEUTRAL = (
    "run.name",
    "run.out_dir",
    "run.storage_path",
    "run.tracking_uri",
    "run.experiment",
    "run.log_model",
    "run.registered_model",
    "run.system_metrics",
    "run.log_every",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.snapshot_steps",
    "run.max_failures",
    "run.fault_injection_",
    "run.cpus_per_worker",
    "run.read_cpus",
    "run.placement_strategy",
    "run.device",
    "run.use_gpu",
    "data.endpoint_url",
)
RESUME_HINT = "pass --no-resume or another run.name to start afresh"


class CheckpointMissing(FileNotFoundError):
    """A run directory (or checkpoint path) holds no usable checkpoint."""


def run_dir_of(cfg: Config) -> Path:
    """``<run.out_dir>/<run.name>`` as an absolute path."""
    return Path(cfg.run.out_dir).resolve() / cfg.run.name


def shown_path(path: str | Path) -> str:
    """``path`` for a message: relative to the working directory when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """``<run_dir>/checkpoints/step_<step>.pt``: the state kept at ``run.snapshot_steps``."""
    return checkpoint_dir(run_dir) / f"step_{step}.pt"


def selected_checkpoint(path: str | Path) -> Path:
    """The checkpoint a run stands for: ``best.pt`` (validation-selected), else ``last.pt``.

    Args:
        path: a run directory, its ``checkpoints/`` folder, or a ``.pt`` file.

    Raises:
        CheckpointMissing: neither file exists (the message names both paths).
    """
    path = Path(path)
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointMissing(f"checkpoint {path} does not exist")
        return path
    folder = path if path.name == "checkpoints" else checkpoint_dir(path)
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointMissing(
        f"{path}: no checkpoints/best.pt or checkpoints/last.pt (not a finished run directory)"
    )


def config_diff(old: Config, new: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ (secrets compared redacted), minus ``ignore`` prefixes."""
    a, b = flatten_config(old), flatten_config(new)
    keys = (k for k in a.keys() | b.keys() if not k.startswith(ignore))
    return sorted(k for k in keys if a.get(k) != b.get(k))


def refuse_changed_config(cfg: Config, hint: str, ignore: tuple[str, ...] = ()) -> None:
    """Raise a one-line ``ConfigError`` if ``cfg``'s run directory holds another config.

    Studies reuse finished run directories by name; a budget or setting changed under
    the same name would otherwise mix two experiments in one table.

    Args:
        cfg: the config about to run.
        hint: what to change instead (e.g. "change reproduce.name to run the new budget").
        ignore: key prefixes that may differ (a resume's :data:`RESUME_NEUTRAL`).
    """
    saved = run_dir_of(cfg) / "config.yaml"
    if not saved.exists():
        return
    diff = config_diff(load_config(saved), cfg, ignore)
    if diff:
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise ConfigError(
            f"{run_dir_of(cfg)} was made with another config (differs in {diff[:5]}{more}); {hint}"
        )


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir/checkpoints`` holds a state to resume or evaluate."""
    names = ("last.pt", "previous.pt", "best.pt")
    return any((checkpoint_dir(run_dir) / n).is_file() for n in names)


def refuse_changed_resume(cfg: Config, trained_steps: int | None = None) -> None:
    """Refuse to resume ``cfg``'s run with a config that changes what it learns.

    Args:
        cfg: the config of the resume.
        trained_steps: the steps the checkpoint to resume has trained, when known.

    Raises:
        ConfigError: the saved ``config.yaml`` differs outside :data:`RESUME_NEUTRAL` and
            ``run.steps``, or ``run.steps`` is below ``trained_steps``.
    """
    refuse_changed_config(cfg, RESUME_HINT, (*RESUME_NEUTRAL, "run.steps"))
    refuse_fewer_steps(cfg, trained_steps)


def refuse_fewer_steps(cfg: Config, trained_steps: int | None) -> None:
    """Raise ``ConfigError`` if ``run.steps`` is below the ``trained_steps`` of its checkpoint."""
    if trained_steps is not None and cfg.run.steps < trained_steps:
        raise ConfigError(
            f"run {cfg.run.name} has already trained {trained_steps} steps, more than "
            f"run.steps={cfg.run.steps}; set run.steps >= {trained_steps} or {RESUME_HINT}"
        )


def load_run_config(run_dir: str | Path) -> Config:
    """The config of run directory ``run_dir``, wherever it has been moved to.

    ``run.out_dir`` and ``run.name`` are taken from where the folder is now (they never
    change what the run learned), so its store cache, MLflow store and outputs are looked
    up beside it rather than where it was trained.
    """
    run_dir = Path(run_dir).resolve()
    cfg = load_config(run_dir / "config.yaml")
    if run_dir_of(cfg) == run_dir:
        return cfg
    run = dataclasses.replace(cfg.run, out_dir=str(run_dir.parent), name=run_dir.name)
    return dataclasses.replace(cfg, run=run)

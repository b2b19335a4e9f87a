"""Run directories: where a run keeps its config, checkpoints, results and MLflow run id.

Layout of ``<run.out_dir>/<run.name>``: ``config.yaml`` (the resolved config),
``checkpoints/best.pt`` (chosen on the validation split) and ``checkpoints/last.pt``,
``mlflow_run_id``, then whatever the task's evaluation writes (``results.md``,
``metrics.json``, ``figures/``). On Ray Train the checkpoints live in Ray's storage and
the driver copies the best and the latest into ``checkpoints/`` after training.
"""

from __future__ import annotations

from pathlib import Path

from mia_core.config import Config, ConfigError, flatten_config, load_config


class CheckpointMissing(FileNotFoundError):
    """A run directory (or checkpoint path) holds no usable checkpoint."""


def run_dir_of(cfg: Config) -> Path:
    """``<run.out_dir>/<run.name>`` as an absolute path."""
    return Path(cfg.run.out_dir).resolve() / cfg.run.name


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


def refuse_changed_config(cfg: Config, hint: str) -> None:
    """Raise a one-line ``ConfigError`` if ``cfg``'s run directory holds another config.

    Studies reuse finished run directories by name; a budget or setting changed under
    the same name would otherwise mix two experiments in one table.

    Args:
        cfg: the config about to run.
        hint: what to change instead (e.g. "change reproduce.name to run the new budget").
    """
    saved = run_dir_of(cfg) / "config.yaml"
    if not saved.exists():
        return
    old = load_config(saved)
    if old != cfg:
        a, b = flatten_config(old), flatten_config(cfg)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        raise ConfigError(
            f"{run_dir_of(cfg)} was made with another config (differs in {diff[:5]}); {hint}"
        )

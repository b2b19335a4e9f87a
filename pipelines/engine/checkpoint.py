"""Checkpoints: atomic writes, safe loads (``weights_only=True``), a fallback on corruption.

:func:`save_checkpoint` writes a temporary file and renames it over the target, so a reader
sees the old checkpoint or the new one, never half; with ``keep_previous`` the replaced
file stays as ``previous.pt`` (a hard link, else a copy), and :func:`resume_checkpoint`
falls back to it, with a warning, when the latest is unreadable (a damaged disk, a bad
copy). A write that fails (a full disk: torch's writer raises ``RuntimeError``, turned into
``OSError`` with ``ENOSPC`` when the file system has under 1 MB left) removes its temporary
file and raises ``OSError``; the training loop's sink then stops the job with a one-line
``DiskFull`` naming the folder and the size of the state (the last good checkpoint is kept).
:func:`check_model_state` turns a checkpoint of another model shape into a one-line
:class:`CheckpointError` instead of torch's size-mismatch text.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PREVIOUS = "previous.pt"
OTHER_MODEL_HINT = "the run's config.yaml describes another model"
WHY_CHARS = 100  # torch's reason in a CheckpointError is cut to this (--traceback: whole)


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, or holds more than tensors and numbers."""


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = False) -> Path:
    """Write ``state`` atomically: a reader sees the old file or the new one, never half.

    Args:
        state: tensors and plain values.
        path: the checkpoint file.
        keep_previous: keep the file it replaces as ``previous.pt`` beside it.

    Raises:
        OSError: the write failed (e.g. no space left); the temporary file is removed and
            ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # torch's zip writer reports a full disk this way
            code = errno.ENOSPC if shutil.disk_usage(path.parent).free < 2**20 else errno.EIO
            raise OSError(code, f"{os.strerror(code)} ({err})", str(tmp)) from err
        if keep_previous and path.exists():
            held = path.with_name(f".{PREVIOUS}.tmp-{os.getpid()}")
            try:
                os.link(path, held)
            except OSError:  # no hard links on this file system
                shutil.copyfile(path, held)
            os.replace(held, path.with_name(PREVIOUS))
        os.replace(tmp, path)
    except BaseException:
        for leftover in path.parent.glob(f".*.tmp-{os.getpid()}"):
            leftover.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling code."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for corrupt files
        lines = [s.strip() for s in str(err).splitlines() if s.strip()]
        # torch's weights-only refusal puts the reason after "WeightsUnpickler error:"
        text = " ".join(lines)
        why = text.partition("Unpickler error:")[2].strip() or (lines[0] if lines else "")
        why = why.split(". Check the documentation")[0].split(" Check the documentation")[0]
        why = why if len(why) <= WHY_CHARS else why[: WHY_CHARS - 3] + "..."
        raise CheckpointError(
            f"checkpoint {path} is unreadable or not a safe checkpoint "
            f"({why or type(err).__name__}); "
            "delete it to start afresh or point to another run"
        ) from err


def resume_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    warn: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """The state to resume from: ``path``, else ``previous.pt`` beside it; ``None`` if neither.

    An unreadable ``path`` with a readable ``previous.pt`` resumes from the latter and says
    so through ``warn``; a missing ``path`` with a ``previous.pt`` (a stop between the two
    renames of :func:`save_checkpoint`) too.

    Raises:
        CheckpointError: ``path`` is unreadable and there is no readable previous one.
    """
    path = Path(path)
    previous = path.with_name(PREVIOUS)
    try:
        if path.exists():
            return load_checkpoint(path, map_location)
        problem = f"{path} is missing"
    except CheckpointError as err:
        if not previous.exists():
            raise
        problem = str(err).split(";")[0]
    if not previous.exists():
        return None
    state = load_checkpoint(previous, map_location)
    warn(f"warning: {problem}; resuming from {previous} (step {state.get('step', '?')})")
    return state


def state_nbytes(state: Any) -> int:
    """Bytes of the tensors in ``state`` (nested dicts and lists): about its file's size."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_nbytes(v) for v in state)
    return 8


def _shape(t: Any) -> list[int] | str:
    return list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_model_state(model: torch.nn.Module, saved: dict[str, Any], where: str, hint: str) -> None:
    """Raise a one-line :class:`CheckpointError` if ``saved`` does not fit ``model``.

    The message names the first differing key and both shapes, e.g. ``model of another
    shape (inr.w: saved [16, 1] vs config [8, 1]) in checkpoint runs/x/checkpoints/best.pt;
    ...``.

    Args:
        model: the model built from the config.
        saved: a checkpoint's ``"model"`` state dict.
        where: what holds ``saved`` (e.g. ``"checkpoint runs/x/checkpoints/last.pt"``).
        hint: what to do (start afresh, fix the config).
    """
    own = model.state_dict()
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} holds no model state; {hint}")
    missing = [k for k in own if k not in saved]
    extra = [k for k in saved if k not in own]
    odd = [k for k in own if k in saved and _shape(saved[k]) != _shape(own[k])]
    if odd:
        k = odd[0]
        detail = f"{k}: saved {_shape(saved[k])} vs config {_shape(own[k])}"
    elif missing or extra:
        k = (missing or extra)[0]
        detail = f"{k} {'missing' if missing else 'not in the model'}"
    else:
        return
    # the detail first: a long path is what the one-line error shortens
    raise CheckpointError(f"model of another shape ({detail}) in {where}; {hint}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

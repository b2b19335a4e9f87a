"""Checkpoints: atomic writes, safe loads (``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, or holds more than tensors and numbers."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
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
        raise CheckpointError(
            f"checkpoint {path} is unreadable or not a safe checkpoint "
            f"({why or type(err).__name__}); "
            "delete it to start afresh or point to another run"
        ) from err

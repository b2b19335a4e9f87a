"""Process-level numeric settings: device and float32 matmul precision."""

from __future__ import annotations

import torch

PRECISIONS = ("highest", "high", "medium")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is visible")
    return torch.device(name)


def set_matmul_precision(name: str) -> None:
    """Set torch's float32 matmul precision.

    On this project's reference CPU (AMD EPYC, AVX-512, no AMX), ``medium`` routes
    fp32 matmuls to a kernel that is ~2x faster with meta-gradients within ~1e-6 of a
    float64 reference (see ``tests/test_precision.py``). On GPUs and AMX CPUs the same
    setting means TF32/bf16: re-check accuracy there before relying on it.
    """
    if name not in PRECISIONS:
        raise ValueError(f"matmul precision must be one of {PRECISIONS}, got {name!r}")
    torch.set_float32_matmul_precision(name)

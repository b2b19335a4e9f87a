"""Process-level numeric settings: device, float32 matmul precision, device sync."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from mia_core.config.errors import ConfigError

PRECISIONS = ("highest", "high", "medium")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # A user error (one line): e.g. evaluating a GPU run on a CPU-only machine.
        raise ConfigError(
            "run.device=cuda but this process sees no CUDA device; pass run.device=auto "
            "(or cpu) to run here on the CPU"
        )
    return torch.device(name)


def synchronize(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on CPU and other devices.

    CUDA kernels run asynchronously, so a wall-clock read right after launching them
    measures the launch, not the work: call this before reading a timer around device work.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """``tensor`` on ``device``; a CPU tensor goes to CUDA pinned and without blocking.

    A plain ``.to("cuda")`` of pageable memory waits for the device's queued work (a
    host sync); a copy from pinned memory is queued behind it instead. Elsewhere this is
    ``tensor.to(device)`` (a no-op where it is already there).
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def autocast_off(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context with ``device``'s autocast disabled (a no-op where it is not enabled).

    The inner loops of second-order meta-learning run under it: under bf16 autocast their
    ``autograd.grad(create_graph=True)`` differentiates bf16 matmuls twice. Measured on
    CPU (``tests/test_amp_parity.py``), the meta-gradients of small CAVIA/MIA Composers
    learners are 3.4e-2 (relative) off float64 with the inner loop under bf16 autocast
    and 1.3e-2 with only the outer (query) forward under it; float32 is 4e-7 off.
    """
    kind = torch.device(device).type
    if kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def _cpuinfo(key: str) -> str | None:
    """The first ``key : value`` of ``/proc/cpuinfo`` (``None`` where it is absent)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies in bfloat16 in hardware (AMX-BF16 or AVX512-BF16).

    On such CPUs ``medium`` makes oneDNN run float32 matmuls in bf16 (Linux; ``False``
    where ``/proc/cpuinfo`` cannot be read).
    """
    return bool(set((_cpuinfo("flags") or "").split()) & {"amx_bf16", "avx512_bf16"})


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``unknown`` where it cannot be read)."""
    return _cpuinfo("model name") or "unknown"


def set_matmul_precision(name: str) -> None:
    """Set torch's float32 matmul precision.

    On CPUs without bf16 hardware (AMD EPYC with AVX-512, Zen 3 with AVX2) ``medium``
    keeps float32 accuracy: meta-gradients within ~1e-6 of a float64 reference (see
    ``tests/test_precision.py``). On GPUs it means TF32, and on CPUs with AMX-BF16 /
    AVX512-BF16 (:func:`cpu_has_bf16_matmul`) bf16 matmuls: measured on an Intel Xeon
    with AMX, the meta-training loss of a small Composers learner is 1.1% off float64
    and the ERA5 CPU preset trains 1.12x faster than with ``highest``. Use
    ``run.matmul_precision=highest`` there when float32 accuracy matters.
    """
    if name not in PRECISIONS:
        raise ValueError(f"matmul precision must be one of {PRECISIONS}, got {name!r}")
    torch.set_float32_matmul_precision(name)

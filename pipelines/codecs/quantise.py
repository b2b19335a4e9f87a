"""How codes are stored: float32, float16, or 8-bit integers with one scale per tensor.

``int8`` codes are symmetric linear quantisations: every adapted tensor (a segment of the
code, in the order of the meta-model's code layout) of every time step gets its own
scale ``max |c| / 127``, stored as float32 in the code store's ``code_scale (time,
segment)`` array, and ``c ~ q * scale`` with ``q`` in ``[-127, 127]``. A tensor per scale
matters for weight deltas: the first layer's deltas are often 10x the last layer's, and
one scale per time step would spend most levels on the largest. The encoder measures PSNR
on the dequantised codes, so the reported quality is that of what is stored.

With ``encode.code_bits`` the codes are instead quantised per channel at that bit depth and
entropy coded (:mod:`pipelines.codecs.entropy`): :func:`quantise` then returns the float32
values the store gives back (its quantiser's grid) and no scales; the store's codec
turns them into symbols and bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipelines.codecs.entropy import Quantiser

CODE_DTYPES = ("float32", "float16", "int8")
LEVELS = 127


def num_scales(dtype: str, sizes: Sequence[int]) -> int:
    """Scale values stored per time step: one per segment for ``int8``, else none."""
    return len(sizes) if dtype == "int8" else 0


def bytes_per_step(dim: int, dtype: str, scales: int, patches: int = 0) -> int:
    """Stored bytes of one time step's code (values and float32 scales).

    ``patches``: codes per time step of a patch meta-model (0 or 1: one code).
    """
    return max(1, patches) * (dim * np.dtype(dtype).itemsize + 4 * scales)


def quantise(
    code: Tensor, dtype: str, sizes: Sequence[int], quantiser: Quantiser | None = None
) -> tuple[Tensor, Tensor | None]:
    """The stored form of ``(B, D)`` float codes; returns ``(values, scales or None)``.

    Args:
        code: float codes, segments of ``sizes`` along the last axis.
        dtype: one of ``CODE_DTYPES`` (unused with ``quantiser``).
        sizes: the segment lengths (the code layout's tensor sizes; sum ``D``).
        quantiser: the store's per-channel quantiser (``encode.code_bits``): the values
            are then the float32 codes the store reads back.
    """
    if quantiser is not None:
        back = quantiser.roundtrip(code.detach().float().cpu().numpy())
        return torch.from_numpy(back).to(code.device), None
    if dtype != "int8":
        return code.to(getattr(torch, dtype)), None
    parts = code.float().split(list(sizes), dim=1)
    scales = torch.stack([p.abs().amax(1) for p in parts], 1) / LEVELS
    # An all-zero tensor quantises to zeros whatever its scale.
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(code.float() / _expand(scales, sizes)).clamp(-LEVELS, LEVELS)
    return q.to(torch.int8), scales


def dequantise(values: Tensor, scales: Tensor | None, sizes: Sequence[int]) -> Tensor:
    """Float32 ``(B, D)`` codes from their stored form (inverse of :func:`quantise`)."""
    if scales is None:
        return values.float()
    return values.float() * _expand(scales.float(), sizes)


def spec_quantiser(spec: Mapping[str, Any]) -> Quantiser | None:
    """The quantiser an encoder's settings carry (``quantiser``: its JSON), if any."""
    q = spec.get("quantiser")
    return Quantiser.from_json(q) if q else None


def _expand(scales: Tensor, sizes: Sequence[int]) -> Tensor:
    reps = torch.as_tensor(list(sizes), device=scales.device)
    return torch.repeat_interleave(scales, reps, dim=1)


__all__ = [
    "CODE_DTYPES",
    "LEVELS",
    "bytes_per_step",
    "dequantise",
    "num_scales",
    "quantise",
    "spec_quantiser",
]

"""A meta-learner's codes: the adapted tensors of one signal as one flat vector.

A code is what adaptation changes, flattened in a fixed order (:func:`code_layout`): the
contexts themselves for context methods (CAVIA, MIA, ...), the deltas from the
meta-learned values for weight methods (MAML, Meta-INR) and closed-form heads. The code
store, the encoder, the decoder and the MLflow model all use these functions, so a code
means the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mia_core.meta.learner import MetaLearner


class CodeLayoutError(ValueError):
    """Codes that do not fit a meta-model's layout (the message says which lengths)."""


@dataclass
class Layout:
    """How the adapted tensors of one time step are flattened into its code.

    Attributes:
        keys: adapted tensor names (``<var>`` for contexts, ``<var>/<weight>``).
        shapes: unbatched shape of each.
    """

    keys: list[str]
    shapes: list[tuple[int, ...]]

    @property
    def sizes(self) -> list[int]:
        """Elements per tensor."""
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        """Code length per time step."""
        return sum(self.sizes)

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-able description (stored with the codes)."""
        return [{"key": k, "shape": list(s)} for k, s in zip(self.keys, self.shapes, strict=True)]


def code_layout(learner: MetaLearner) -> Layout:
    """The layout of ``learner``'s adapted tensors (fixed order)."""
    init = learner.initial_params(1)
    return Layout(list(init), [tuple(v.shape[1:]) for v in init.values()])


def base_params(learner: MetaLearner) -> dict[str, Tensor]:
    """Unbatched meta-learned values of the adapted tensors.

    Weight codes are deltas from these; context codes are the contexts themselves.
    """
    return {k: v[0].detach() for k, v in learner.initial_params(1).items()}


def params_to_codes(learner: MetaLearner, params: Mapping[str, Tensor]) -> Tensor:
    """``(B, D)`` codes: weight deltas (weights mode) or contexts (context mode)."""
    base = base_params(learner)
    parts = []
    for k in code_layout(learner).keys:
        v = params[k].detach()
        if learner.adapt_mode != "context":
            v = v - base[k]
        parts.append(v.reshape(v.shape[0], -1))
    return torch.cat(parts, 1)


def codes_to_params(learner: MetaLearner, codes: Tensor) -> dict[str, Tensor]:
    """Inverse of :func:`params_to_codes` (``codes``: ``(B, D)``)."""
    layout, base = code_layout(learner), base_params(learner)
    if codes.shape[-1] != layout.dim:
        raise CodeLayoutError(
            f"codes have length {codes.shape[-1]}, the meta-model's code {layout.dim}"
        )
    out, off = {}, 0
    for k, shape, n in zip(layout.keys, layout.shapes, layout.sizes, strict=True):
        v = codes[:, off : off + n].reshape(codes.shape[0], *shape).to(base[k].dtype)
        out[k] = v + base[k] if learner.adapt_mode != "context" else v
        off += n
    return out


__all__ = [
    "CodeLayoutError",
    "Layout",
    "base_params",
    "code_layout",
    "codes_to_params",
    "params_to_codes",
]

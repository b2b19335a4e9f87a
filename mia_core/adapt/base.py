"""One interface for inner-loop update rules (in the spirit of optax/torchopt).

The inner loop hands a rule the per-signal adapted tensors and their support-loss
gradients, keyed by name. Every tensor has a leading batch dimension ``B``; the
``groups`` mapping says which modality each key belongs to, so a rule can fuse states
across modalities (the State Fusion Transformer) or keep them apart (all others).
A rule is an ``nn.Module``: its parameters are meta-learned by the outer loop.

The inner loop also puts the support sizes in the rule's state under ``SUPPORT_KEY``
(:func:`with_support`): modality -> ``(n, P)``, the ``(B,)`` support point counts and
valid point counts of the signals. Rules that condition on them (the SFT's
``support_state``) read them there; the others pass the state through untouched.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Self

from torch import Tensor, nn

Params = dict[str, Tensor]
SUPPORT_KEY = "support"


class UpdateRule(nn.Module, abc.ABC):
    """Base class of inner-loop update rules.

    Args:
        shapes: key -> unbatched shape of the adapted tensor (e.g. ``(S, D)``).
        groups: key -> modality name.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], groups: Mapping[str, str]) -> None:
        super().__init__()
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.groups = dict(groups)
        missing = set(self.shapes) - set(self.groups)
        if missing:
            raise ValueError(f"no modality group for adapted tensors {sorted(missing)}")

    @classmethod
    def for_params(
        cls, params: Params, groups: Mapping[str, str] | None = None, **kwargs: object
    ) -> Self:
        """The rule for the batched tensors ``params`` (key -> ``(B, *shape)``).

        Args:
            params: the tensors the rule will update; their shapes minus ``B`` are used.
            groups: key -> modality; by default every key is its own group.
            **kwargs: the rule's own settings (e.g. ``lr``).
        """
        shapes = {k: tuple(v.shape[1:]) for k, v in params.items()}
        return cls(shapes, dict(groups) if groups is not None else {k: k for k in params}, **kwargs)

    def init_state(self, params: Params) -> dict:
        """Per-episode state carried across inner steps (empty for stateless rules)."""
        return {}

    @abc.abstractmethod
    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """One inner step.

        Args:
            params: key -> ``(B, *shape)`` current adapted tensors.
            grads: key -> ``(B, *shape)`` support-loss gradients (detached in
                first-order mode).
            state: the rule's state from the previous step.
            step: inner step index ``k`` (0-based).

        Returns:
            ``(new_params, new_state, aux)``; ``aux`` holds optional analysis tensors
            (e.g. attention maps) and is empty for most rules.
        """

    def forward(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """Alias of :meth:`update` so hooks and ``nn.Module`` tooling see the call."""
        return self.update(params, grads, state, step)


def safe_key(key: str) -> str:
    """Module-dict-safe version of a tensor key (``.`` and ``/`` are not allowed)."""
    return key.replace(".", "__").replace("/", "--")


def with_support(
    state: dict, counts: Mapping[str, Tensor], totals: Mapping[str, Tensor] | None = None
) -> dict:
    """``state`` plus the signals' support sizes under ``SUPPORT_KEY`` (a new dict).

    Args:
        state: a rule state.
        counts: modality -> ``(B,)`` number of support points of each signal.
        totals: modality -> ``(B,)`` number of valid points of each signal (the density's
            denominator); ``counts`` when omitted (a field fitted on every valid point).
    """
    totals = counts if totals is None else totals
    return {**state, SUPPORT_KEY: {m: (counts[m], totals[m]) for m in counts}}

"""Plain gradient descent with a fixed learning rate (CAVIA / MAML inner loop)."""

from __future__ import annotations

from collections.abc import Mapping

from mia_core.adapt.base import Params, UpdateRule


class SGD(UpdateRule):
    """``phi <- phi - lr * g`` with a fixed, not meta-learned, ``lr``."""

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], groups: Mapping[str, str], lr: float = 1.0
    ) -> None:
        super().__init__(shapes, groups)
        self.lr = float(lr)

    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """See :meth:`UpdateRule.update`."""
        return {k: p - self.lr * grads[k] for k, p in params.items()}, state, {}

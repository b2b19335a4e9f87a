"""GAP (Kang et al., 2023): a meta-learned preconditioner on the gradient's spectrum.

For a gradient matrix ``g = U diag(s) V^T`` (batched SVD, one per signal), the update
is ``lr * U diag(M * s) V^T`` with ``M = softplus(m)`` a meta-learned positive diagonal
of size ``min(rows, cols)``. The *approximate* variant skips the SVD and scales the
gradient's rows (or columns, for tall matrices) by ``M`` directly, as MIA's appendix
D.2 describes. Non-matrix tensors are viewed as ``(shape[0], -1)``.

Exact variant, as computed here: ``U diag(M * s) V^T = U diag(M) U^T g`` (rows <= cols;
the column-side form otherwise), with the singular basis ``U`` taken from an SVD that
is *not* differentiated. The backward of an SVD divides by differences of singular
values and turns into NaN whenever two coincide (zero gradient rows, e.g. latent cells
without support points), which killed meta-training in practice. With the basis held
constant, the update is exact, ``M`` gets its exact gradient, and the meta-gradient
through ``g`` omits only the basis-rotation term (it is exact when ``M = I``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from mia_core.adapt.base import Params, UpdateRule, safe_key

VARIANTS = ("exact", "approx")


def _as_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if shape else 1
    return rows, max(1, math.prod(shape) // max(rows, 1))


class GAP(UpdateRule):
    """Geometry-adaptive preconditioning of the inner gradient.

    Args:
        shapes: key -> unbatched shape.
        groups: key -> modality.
        lr: fixed step size multiplying the preconditioned gradient.
        variant: ``exact`` (SVD) or ``approx`` (diagonal on rows/columns).
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        groups: Mapping[str, str],
        lr: float = 1.0,
        variant: str = "exact",
    ) -> None:
        super().__init__(shapes, groups)
        if variant not in VARIANTS:
            raise ValueError(f"GAP variant must be one of {VARIANTS}, got {variant!r}")
        self.lr, self.variant = float(lr), variant
        inv_softplus_one = math.log(math.e - 1.0)
        self.diag = nn.ParameterDict(
            {
                safe_key(k): nn.Parameter(torch.full((min(_as_matrix(s)),), inv_softplus_one))
                for k, s in self.shapes.items()
            }
        )

    def precondition(self, key: str, g: Tensor) -> Tensor:
        """Preconditioned gradient, same shape as ``g`` ``(B, *shape)``."""
        rows, cols = _as_matrix(self.shapes[key])
        mat = g.reshape(g.shape[0], rows, cols)
        m = softplus(self.diag[safe_key(key)])
        if self.variant == "exact":
            with torch.no_grad():
                u, _, vh = torch.linalg.svd(mat, full_matrices=False)
            if rows <= cols:
                out = torch.matmul(u * m, torch.matmul(u.transpose(1, 2), mat))
            else:
                v = vh.transpose(1, 2)
                out = torch.matmul(torch.matmul(mat, v) * m, vh)
        elif rows <= cols:
            out = mat * m[:, None]
        else:
            out = mat * m[None, :]
        return out.reshape(g.shape)

    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """See :meth:`UpdateRule.update`."""
        return (
            {k: p - self.lr * self.precondition(k, grads[k]) for k, p in params.items()},
            state,
            {},
        )

"""Functa-style modulated SIREN (Dupont et al., 2022; as used by MIA, appendix B).

The context is either a latent vector (``grid`` empty: the flattened ``(S, D)`` context)
or a spatial latent grid (``S == prod(grid)`` tokens of width ``D``) interpolated at the
coordinates. A linear map turns the (interpolated) latent into per-layer scale and/or
shift modulations of the hidden sine layers; the first and last layers are unmodulated.
Because the map is linear, interpolating the latent first and mapping afterwards equals
mapping the grid and interpolating (interpolation weights sum to one), and is cheaper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.inr.functional import linear, siren_bounds, uniform_
from mia_core.inr.interp import interpolate_grid

MODULATIONS = ("scale", "shift", "scale_shift")


class FunctaINR(INR):
    """SIREN whose hidden layers ``1 .. depth-1`` are modulated by the context.

    Args:
        d_in: coordinate dimension.
        d_out: output channels.
        width: hidden units.
        depth: number of sine layers (the first is unmodulated).
        omega0: SIREN frequency factor.
        context_shape: ``(S, D)`` context tokens.
        modulation: ``scale`` (MIA's choice), ``shift`` (Functa's) or ``scale_shift``.
        grid: latent grid shape (``prod(grid) == S``); empty for a latent vector.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        width: int = 128,
        depth: int = 5,
        omega0: float = 30.0,
        context_shape: tuple[int, int] = (1, 64),
        modulation: str = "scale",
        grid: tuple[int, ...] = (),
    ) -> None:
        super().__init__(d_in, d_out, context_shape)
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}")
        if depth < 2:
            raise ValueError("Functa needs depth >= 2 (first layer is unmodulated)")
        s, d = self.context_shape
        if grid and math.prod(grid) != s:
            raise ValueError(
                f"latent grid {tuple(grid)} has {math.prod(grid)} cells, context has S={s}"
            )
        self.width, self.depth, self.omega0 = width, depth, omega0
        self.modulation, self.grid = modulation, tuple(grid)
        self.n_kinds = 2 if modulation == "scale_shift" else 1
        n_mod = (depth - 1) * width * self.n_kinds
        latent_dim = d if self.grid else s * d
        self.mod_w = torch.nn.Parameter(torch.randn(n_mod, latent_dim) / math.sqrt(latent_dim))
        self.mod_b = torch.nn.Parameter(torch.zeros(n_mod))
        b0 = siren_bounds(d_in, omega0, first=True)
        self.w0, self.b0 = uniform_((width, d_in), b0), uniform_((width,), b0)
        bh = siren_bounds(width, omega0, first=False)
        for i in range(1, depth):
            setattr(self, f"w{i}", uniform_((width, width), bh))
            setattr(self, f"b{i}", uniform_((width,), 1.0 / width))
        self.out_weight = uniform_((d_out, width), bh)
        self.out_bias = uniform_((d_out,), 1.0 / width)

    def modulations(
        self, coords: Tensor, context: Tensor, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """``(B, P or 1, depth-1, kinds, width)`` modulations from the context."""
        bsz = context.shape[0]
        if self.grid:
            latent = interpolate_grid(context, self.grid, coords)
        else:
            latent = context.reshape(bsz, 1, -1)
        psi = linear(latent, self._w(weights, "mod_w"), self._w(weights, "mod_b"))
        return psi.reshape(bsz, psi.shape[1], self.depth - 1, self.n_kinds, self.width)

    def features(
        self, coords: Tensor, context: Tensor | None, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """Modulated sine features ``(B, P, width)``; see :meth:`INR.forward`."""
        h = torch.sin(self.omega0 * linear(coords, self._w(weights, "w0"), self._w(weights, "b0")))
        psi = None if context is None else self.modulations(coords, context, weights)
        for i in range(1, self.depth):
            pre = linear(h, self._w(weights, f"w{i}"), self._w(weights, f"b{i}"))
            if psi is not None:
                if self.modulation in ("scale", "scale_shift"):
                    pre = pre * (1.0 + psi[:, :, i - 1, 0])
                if self.modulation in ("shift", "scale_shift"):
                    pre = pre + psi[:, :, i - 1, self.n_kinds - 1]
            h = torch.sin(self.omega0 * pre)
        return h

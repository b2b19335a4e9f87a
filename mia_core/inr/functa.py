"""Functa-style modulated INR (Dupont et al., 2022; as used by MIA, appendix B).

The context is either a latent vector (``grid`` empty: the flattened ``(S, D)`` context)
or a spatial latent grid (``S == prod(grid)`` tokens of width ``D``, row-major) whose
map is interpolated at the coordinates. The map turns the latent into per-layer scale
and/or shift modulations of the hidden layers; the first layer and the linear head are
unmodulated. A scale ``psi`` multiplies the pre-activation by ``1 + psi`` (the official
code multiplies by ``psi``: the same family, with the map's bias offset by one).

Options, each defaulting to this project's earlier form:

- ``backbone``: ``siren`` (sine layers, SIREN init) or ``relu`` (App. B: the ReLU MLP
  shared with Composers, He init, optional Fourier features of the input).
- ``latent_map``: ``linear`` maps each (interpolated) latent by one linear layer; being
  linear, interpolating first and mapping afterwards equals mapping the grid and
  interpolating (interpolation weights sum to one), and is cheaper. ``conv`` is the
  official code's ``LayerNorm(D)`` + convolution over the grid (kernel 3 per axis, zero
  padding 1, ``D -> modulations`` channels), applied to the grid *before* interpolation;
  it is written as a gather (im2col) plus :func:`linear`, so per-signal weights and
  second-order gradients work as for every other layer.
- ``layout``: ``legacy`` has ``depth`` activation layers plus the head (``depth - 1``
  modulated); ``paper`` counts the head in ``depth`` (5 linear layers, 3 modulated), as
  the official ``num_layers``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.inr.functional import kaiming_bound, linear, siren_bounds, uniform_
from mia_core.inr.interp import interpolate_grid
from mia_core.inr.relu_ff import FourierFeatures

MODULATIONS = ("scale", "shift", "scale_shift")
BACKBONES = ("siren", "relu")
LATENT_MAPS = ("linear", "conv")
LAYOUTS = ("legacy", "paper")


def grid_neighbours(latent: Tensor, grid: tuple[int, ...]) -> Tensor:
    """im2col of a latent grid for a kernel-3, padding-1 convolution.

    Args:
        latent: ``(B, S, D)`` with ``S == prod(grid)``, row-major over ``grid``.
        grid: spatial grid shape ``(n_1, ..., n_d)``.

    Returns:
        ``(B, S, 3^d * D)``: for every cell its ``3^d`` neighbours (offsets ``-1, 0, 1``
        per axis, last axis fastest; zeros outside the grid), each ``D`` wide.
    """
    bsz, _, dim = latent.shape
    x = latent.reshape(bsz, *grid, dim)
    pad: list[int] = [0, 0]  # the channel axis
    for _ in grid:
        pad += [1, 1]
    x = F.pad(x, pad)
    slices = []
    for offset in itertools.product(range(3), repeat=len(grid)):
        idx = (slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, grid, strict=True))
        slices.append(x[idx])
    return torch.stack(slices, dim=-2).reshape(bsz, math.prod(grid), -1)


class FunctaINR(INR):
    """MLP whose hidden layers after the first are modulated by the context.

    Args:
        d_in: coordinate dimension.
        d_out: output channels.
        width: hidden units.
        depth: see ``layout`` in the module docstring.
        omega0: SIREN frequency factor (``siren`` backbone only).
        context_shape: ``(S, D)`` context tokens.
        modulation: ``scale`` (MIA's choice), ``shift`` (Functa's) or ``scale_shift``.
        grid: latent grid shape (``prod(grid) == S``); empty for a latent vector.
        backbone: one of ``BACKBONES``.
        latent_map: one of ``LATENT_MAPS``; ``conv`` needs a grid.
        layout: one of ``LAYOUTS``.
        ff_sigma: Fourier feature scale of the ``relu`` backbone's input (0 = raw).
        ff_features: number of random frequencies.
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
        backbone: str = "siren",
        latent_map: str = "linear",
        layout: str = "legacy",
        ff_sigma: float = 0.0,
        ff_features: int = 64,
    ) -> None:
        super().__init__(d_in, d_out, context_shape)
        for name, value, allowed in (
            ("modulation", modulation, MODULATIONS),
            ("backbone", backbone, BACKBONES),
            ("latent_map", latent_map, LATENT_MAPS),
            ("layout", layout, LAYOUTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.n_act = depth - 1 if layout == "paper" else depth  # activation layers
        if self.n_act < 2:
            raise ValueError(
                f"Functa ({layout} layout) needs depth >= {3 if layout == 'paper' else 2}: "
                "the first layer is unmodulated"
            )
        s, d = self.context_shape
        if grid and math.prod(grid) != s:
            raise ValueError(
                f"latent grid {tuple(grid)} has {math.prod(grid)} cells, context has S={s}"
            )
        if latent_map == "conv" and not grid:
            raise ValueError("the conv latent map needs a latent grid (model.functa_grid)")
        self.width, self.depth, self.omega0 = width, depth, omega0
        self.modulation, self.grid = modulation, tuple(grid)
        self.backbone, self.latent_map, self.layout = backbone, latent_map, layout
        self.n_kinds = 2 if modulation == "scale_shift" else 1
        n_mod = (self.n_act - 1) * width * self.n_kinds
        if latent_map == "conv":
            self.map_ln_w = torch.nn.Parameter(torch.ones(d))
            self.map_ln_b = torch.nn.Parameter(torch.zeros(d))
            fan = d * 3 ** len(self.grid)
            self.mod_w = uniform_((n_mod, fan), 1.0 / math.sqrt(fan))
        else:
            fan = d if self.grid else s * d
            self.mod_w = torch.nn.Parameter(torch.randn(n_mod, fan) / math.sqrt(fan))
        self.mod_b = torch.nn.Parameter(torch.zeros(n_mod))
        if backbone == "siren":
            self.encoding = None
            b0 = siren_bounds(d_in, omega0, first=True)
            self.w0, self.b0 = uniform_((width, d_in), b0), uniform_((width,), b0)
            bh = siren_bounds(width, omega0, first=False)
            w_bound, b_bound, out_bound = bh, 1.0 / width, bh
        else:
            self.encoding = FourierFeatures(d_in, ff_features, ff_sigma)
            fan0 = self.encoding.d_out
            self.w0 = uniform_((width, fan0), kaiming_bound(fan0))
            self.b0 = uniform_((width,), 1.0 / math.sqrt(fan0))
            w_bound, b_bound = kaiming_bound(width), 1.0 / math.sqrt(width)
            out_bound = 1.0 / math.sqrt(width)
        for i in range(1, self.n_act):
            setattr(self, f"w{i}", uniform_((width, width), w_bound))
            setattr(self, f"b{i}", uniform_((width,), b_bound))
        self.out_weight = uniform_((d_out, width), out_bound)
        self.out_bias = uniform_((d_out,), b_bound)

    def _act(self, pre: Tensor) -> Tensor:
        return torch.sin(self.omega0 * pre) if self.backbone == "siren" else torch.relu(pre)

    def map_grid(self, context: Tensor, weights: Mapping[str, Tensor] | None) -> Tensor:
        """Conv latent map on the grid, ``(B, S, D) -> (B, S, n_mod)`` (before interpolation)."""
        g, b = self._w(weights, "map_ln_w"), self._w(weights, "map_ln_b")
        mean = context.mean(-1, keepdim=True)
        var = context.var(-1, unbiased=False, keepdim=True)
        normed = (context - mean) * torch.rsqrt(var + 1e-5)
        normed = normed * (g if g.dim() == 1 else g.unsqueeze(1))
        normed = normed + (b if b.dim() == 1 else b.unsqueeze(1))
        cols = grid_neighbours(normed, self.grid)
        return linear(cols, self._w(weights, "mod_w"), self._w(weights, "mod_b"))

    def modulations(
        self, coords: Tensor, context: Tensor, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """``(B, P or 1, n_act-1, kinds, width)`` modulations from the context."""
        bsz = context.shape[0]
        if self.latent_map == "conv":
            psi = interpolate_grid(self.map_grid(context, weights), self.grid, coords)
        else:
            if self.grid:
                latent = interpolate_grid(context, self.grid, coords)
            else:
                latent = context.reshape(bsz, 1, -1)
            psi = linear(latent, self._w(weights, "mod_w"), self._w(weights, "mod_b"))
        return psi.reshape(bsz, psi.shape[1], self.n_act - 1, self.n_kinds, self.width)

    def features(
        self, coords: Tensor, context: Tensor | None, weights: Mapping[str, Tensor] | None
    ) -> Tensor:
        """Modulated features ``(B, P, width)``; see :meth:`INR.forward`."""

        def first() -> Tensor:
            x = coords if self.encoding is None else self.encoding(coords)
            return self._act(linear(x, self._w(weights, "w0"), self._w(weights, "b0")))

        h = self._coordinate_layers(coords, weights, first)
        psi = None if context is None else self.modulations(coords, context, weights)
        for i in range(1, self.n_act):
            pre = linear(h, self._w(weights, f"w{i}"), self._w(weights, f"b{i}"))
            if psi is not None:
                if self.modulation in ("scale", "scale_shift"):
                    pre = pre * (1.0 + psi[:, :, i - 1, 0])
                if self.modulation in ("shift", "scale_shift"):
                    pre = pre + psi[:, :, i - 1, self.n_kinds - 1]
            h = self._act(pre)
        return h

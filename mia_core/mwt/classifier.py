"""Weight-space Transformer classifier of adapted SIREN weights (MWT, Sec. 3.2).

Each output neuron of a hidden SIREN layer becomes one token: its ``width`` input
weights and its bias (the bias folded in as the weight of a constant-1 input). A
SIREN with ``L`` hidden layers of width ``d`` gives ``L d`` tokens of ``d + 1``
features. The classifier sees ``lambda (phi - theta + beta)``: the change from the
shared initialisation (small numbers, hence the scale ``lambda`` ~ 500, or a
LayerNorm instead) plus a learned per-weight positional term ``beta``, which tells
the otherwise permutation-blind Transformer which neuron a token is. Pre-LN blocks
with LayerScale, mean pooling over tokens, linear head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mia_core.adapt.transformer import Attention

INPUT_NORMS = ("scale", "layernorm")


class LayerScaleBlock(nn.Module):
    """``x + g1 * Attn(LN(x))`` then ``x + g2 * MLP(LN(x))`` with per-channel ``g`` (CaiT)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, layerscale_init: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.gamma1 = nn.Parameter(torch.full((dim,), layerscale_init))
        self.gamma2 = nn.Parameter(torch.full((dim,), layerscale_init))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, dim) -> (B, T, dim)``."""
        x = x + self.gamma1 * self.attn(self.norm1(x))[0]
        return x + self.gamma2 * self.mlp(self.norm2(x))


class WeightTransformer(nn.Module):
    """Classify per-image hidden-layer weights.

    Args:
        width: SIREN width ``d`` (tokens have ``d + 1`` features).
        hidden_layers: number of hidden SIREN layers ``L`` (``L d`` tokens).
        num_classes: output classes.
        dim: token width inside the Transformer.
        depth: Transformer blocks.
        heads: attention heads (``dim`` divisible by ``heads``).
        mlp_dim: hidden width of each block's MLP.
        input_scale: ``lambda`` in ``lambda (phi - theta + beta)``.
        input_norm: ``scale`` (multiply by ``lambda``) or ``layernorm`` (a LayerNorm over
            each token's features instead of the fixed scale).
        layerscale_init: initial LayerScale value.
        beta_std: std of the initial positional term ``beta``.
    """

    def __init__(
        self,
        width: int,
        hidden_layers: int,
        num_classes: int,
        dim: int = 64,
        depth: int = 4,
        heads: int = 2,
        mlp_dim: int = 128,
        input_scale: float = 500.0,
        input_norm: str = "scale",
        layerscale_init: float = 0.1,
        beta_std: float = 2e-3,
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        self.input_scale, self.input_norm = input_scale, input_norm
        self.beta = nn.Parameter(torch.randn(hidden_layers * width, width + 1) * beta_std)
        self.norm_in = nn.LayerNorm(width + 1) if input_norm == "layernorm" else nn.Identity()
        self.embed = nn.Linear(width + 1, dim)
        self.blocks = nn.ModuleList(
            LayerScaleBlock(dim, heads, mlp_dim, layerscale_init) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @staticmethod
    def tokens(layers: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Neuron tokens ``(B, L d, d + 1)`` from ``[(weight (B, d, d), bias (B, d)), ...]``."""
        return torch.cat([torch.cat([w, b.unsqueeze(-1)], -1) for w, b in layers], 1)

    def forward(
        self, phi: list[tuple[Tensor, Tensor]], theta: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """Logits ``(B, num_classes)``.

        Args:
            phi: adapted hidden layers, per image (``(B, d, d)``, ``(B, d)``).
            theta: the shared initial hidden layers (``(d, d)``, ``(d,)``).
        """
        delta = self.tokens(phi) - self.tokens([(w[None], b[None]) for w, b in theta])
        x = delta + self.beta
        x = self.norm_in(x) if self.input_norm == "layernorm" else x * self.input_scale
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x).mean(1))

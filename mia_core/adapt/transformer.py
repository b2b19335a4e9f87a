"""Pre-LN transformer blocks (ViT style) with residual connections.

Attention is written out (not ``scaled_dot_product_attention``) so that its weights can
be returned for analysis and so that it is twice differentiable on every backend.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, T, D)`` tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the attended tokens ``(B, T, D)`` and head-averaged weights ``(B, T, T)``."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.heads), -1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(out), attn.mean(1)


class Block(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the new tokens and this block's attention weights."""
        a, w = self.attn(self.norm1(x))
        x = x + a
        return x + self.mlp(self.norm2(x)), w


class Blocks(nn.Module):
    """A stack of :class:`Block`; returns the attention of every block."""

    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim) for _ in range(depth))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Apply every block in order."""
        maps = []
        for blk in self.blocks:
            x, w = blk(x)
            maps.append(w)
        return x, maps

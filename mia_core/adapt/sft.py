"""MIA's State Fusion Transformers (Lee et al., 2024, Sec. 4.3, appendix C).

Per modality ``m`` and inner step: the gradient is scaled by ``exp(eta_m)``; parameters
and scaled gradients are layer-normalised separately, concatenated and projected by a
2-layer MLP to tokens ``z`` of width ``D_z`` (one token per context row); a learnable
positional embedding is added; the USFT (``L1`` blocks, per modality) gives ``z_uni``;
the MSFT (``L2`` blocks, shared) runs over the tokens of all modalities together and
gives ``z_multi``; the per-modality Fusion MLP maps ``[z || z_uni || z_multi]`` to the
update, and ``phi <- phi - update``.

Every component and every state input can be switched off, so the paper's ablations
are configurations. Without the MSFT no information crosses modalities. Without the
Fusion MLP a linear head reads the last computed tokens. ``residual_sgd`` adds
``lr * g`` to the predicted update and zero-initialises the predictor's last layer, so
an untrained SFT starts exactly as CAVIA (an engineering choice for stable early
meta-training; turn it off for the paper's pure form).

``support_state`` (not in the paper; off by default) adds how much a signal sees to
its state: a per-modality learned embedding of ``log(1 + n)`` (``log_count``) or of
``n / P`` (``density``), with ``n`` the signal's support points and ``P`` its valid
points, is added to every token ``z`` of that modality. The layer-normalised parameter
and gradient states look alike for 2 support points and for 2,000; this lets the
learned update tell them apart. The sizes come from the rule state
(:data:`~mia_core.adapt.base.SUPPORT_KEY`, set by the inner loop).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mia_core.adapt.base import SUPPORT_KEY, Params, UpdateRule, safe_key
from mia_core.adapt.transformer import Blocks

SUPPORT_STATES = ("none", "log_count", "density")


class FusionMLP(nn.Sequential):
    """3-layer MLP with LayerNorm after the first and penultimate linear layers."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__(
            nn.Linear(d_in, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, d_out),
        )


class StateFusionTransformer(UpdateRule):
    """The SFT update rule over the contexts of all modalities.

    Args:
        shapes: modality key -> ``(S_m, D_m)`` context shape (2-D only).
        groups: key -> modality (one key per modality).
        dim: token width ``D_z``.
        heads: attention heads.
        mlp_dim: transformer MLP width (also the Fusion MLP's hidden width).
        usft_layers: ``L1``; 0 behaves like ``use_usft=False``.
        msft_layers: ``L2``; 0 behaves like ``use_msft=False``.
        use_usft, use_msft, use_fusion: component switches.
        state_params, state_grads, state_scaling: which states feed the projection
            (``state_scaling`` applies ``exp(eta_m)`` to the gradients).
        eta_init: initial log gradient scale.
        lr: step size of the residual SGD term.
        residual_sgd: see the module docstring.
        support_state: one of ``SUPPORT_STATES`` (see the module docstring).
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        groups: Mapping[str, str],
        dim: int = 192,
        heads: int = 3,
        mlp_dim: int = 192,
        usft_layers: int = 1,
        msft_layers: int = 1,
        use_usft: bool = True,
        use_msft: bool = True,
        use_fusion: bool = True,
        state_params: bool = True,
        state_grads: bool = True,
        state_scaling: bool = True,
        eta_init: float = 0.0,
        lr: float = 1.0,
        residual_sgd: bool = True,
        support_state: str = "none",
    ) -> None:
        super().__init__(shapes, groups)
        bad = {k: s for k, s in self.shapes.items() if len(s) != 2}
        if bad:
            raise ValueError(f"the SFT adapts 2-D contexts (S, D); got {bad}")
        if not (state_params or state_grads):
            raise ValueError("the SFT needs at least one state input (params or grads)")
        if support_state not in SUPPORT_STATES:
            raise ValueError(
                f"support_state must be one of {SUPPORT_STATES}, not {support_state!r}"
            )
        self.support_state = support_state
        self.use_usft = use_usft and usft_layers > 0
        self.use_msft = use_msft and msft_layers > 0
        self.use_fusion, self.residual_sgd, self.lr = use_fusion, residual_sgd, float(lr)
        self.state_params, self.state_grads, self.state_scaling = (
            state_params,
            state_grads,
            state_scaling,
        )
        self.keys = list(self.shapes)
        self.eta = nn.ParameterDict(
            {safe_key(k): nn.Parameter(torch.tensor(float(eta_init))) for k in self.keys}
        )
        self.norm_p, self.norm_g = nn.ModuleDict(), nn.ModuleDict()
        self.proj, self.pos, self.usft, self.head = (
            nn.ModuleDict(),
            nn.ParameterDict(),
            nn.ModuleDict(),
            nn.ModuleDict(),
        )
        n_states = 1 + int(self.use_usft) + int(self.use_msft)
        for k in self.keys:
            s, d = self.shapes[k]
            sk = safe_key(k)
            self.norm_p[sk], self.norm_g[sk] = nn.LayerNorm(d), nn.LayerNorm(d)
            d_state = d * (int(state_params) + int(state_grads))
            self.proj[sk] = nn.Sequential(nn.Linear(d_state, dim), nn.ReLU(), nn.Linear(dim, dim))
            self.pos[sk] = nn.Parameter(torch.randn(s, dim) * 0.02)
            if self.use_usft:
                self.usft[sk] = Blocks(usft_layers, dim, heads, mlp_dim)
            head = FusionMLP(n_states * dim, mlp_dim, d) if use_fusion else nn.Linear(dim, d)
            last = head[-1] if use_fusion else head
            if residual_sgd:
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
            self.head[sk] = head
        self.msft = Blocks(msft_layers, dim, heads, mlp_dim) if self.use_msft else None
        # Built last: with it off, every other module draws the same initial values.
        self.support_embed = (
            nn.ModuleDict(
                {
                    safe_key(k): nn.Sequential(nn.Linear(1, dim), nn.ReLU(), nn.Linear(dim, dim))
                    for k in self.keys
                }
            )
            if support_state != "none"
            else None
        )

    def support_feature(self, key: str, state: dict) -> Tensor:
        """``(B, 1)`` support feature of modality ``key``: ``log(1 + n)`` or ``n / P``.

        Raises:
            ValueError: the state carries no support sizes for ``key``.
        """
        sizes = state.get(SUPPORT_KEY, {})
        if key not in sizes:
            raise ValueError(
                f"SFT support_state={self.support_state!r} needs the support sizes of "
                f"modality {key!r} in the rule state (mia_core.adapt.base.with_support)"
            )
        n, total = (t.float() for t in sizes[key])
        feat = torch.log1p(n) if self.support_state == "log_count" else n / total.clamp(min=1.0)
        return feat.reshape(-1, 1)

    def update(
        self, params: Params, grads: Params, state: dict, step: int
    ) -> tuple[Params, dict, dict]:
        """See :meth:`UpdateRule.update`; ``aux['msft_attention']`` holds ``(B, T, T)`` maps."""
        z, z_uni = {}, {}
        for k in self.keys:
            sk = safe_key(k)
            g = grads[k] * torch.exp(self.eta[sk]) if self.state_scaling else grads[k]
            parts = []
            if self.state_params:
                parts.append(self.norm_p[sk](params[k]))
            if self.state_grads:
                parts.append(self.norm_g[sk](g))
            z[k] = self.proj[sk](torch.cat(parts, -1) if len(parts) > 1 else parts[0])
            if self.support_embed is not None:
                feat = self.support_feature(k, state).to(z[k].dtype)
                z[k] = z[k] + self.support_embed[sk](feat).unsqueeze(1)
            tok = z[k] + self.pos[sk]
            z_uni[k] = self.usft[sk](tok)[0] if self.use_usft else tok
        aux: dict = {}
        z_multi: dict[str, Tensor] = {}
        if self.msft is not None:
            joint, maps = self.msft(torch.cat([z_uni[k] for k in self.keys], dim=1))
            sizes = [self.shapes[k][0] for k in self.keys]
            z_multi = dict(zip(self.keys, joint.split(sizes, dim=1), strict=True))
            aux["msft_attention"] = maps
            aux["msft_tokens"] = dict(zip(self.keys, sizes, strict=True))
        new = {}
        for k in self.keys:
            sk = safe_key(k)
            if self.use_fusion:
                states = (
                    [z[k]]
                    + ([z_uni[k]] if self.use_usft else [])
                    + ([z_multi[k]] if z_multi else [])
                )
                upd = self.head[sk](torch.cat(states, -1))
            else:
                upd = self.head[sk](z_multi[k] if z_multi else z_uni[k])
            if self.residual_sgd:
                upd = upd + self.lr * grads[k]
            new[k] = params[k] - upd
        return new, state, aux

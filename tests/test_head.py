"""Closed-form INR heads (method.head_ridge): the ridge solve, the learner, meta-gradients."""

from __future__ import annotations

import pytest
import torch

from mia_core.builders import build_learner
from mia_core.config import ConfigError, load_config
from mia_core.data.episode import ModalityBatch
from mia_core.meta.head import ridge_head


def test_ridge_head_recovers_a_linear_head_and_ignores_masked_points():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 200, 8, generator=g)
    w, b = torch.randn(3, 2, 8, generator=g), torch.randn(3, 2, generator=g)
    y = feats @ w.transpose(1, 2) + b[:, None]
    mask = torch.ones(3, 200)
    y[:, :50] += 100.0  # corrupted points, masked out
    mask[:, :50] = 0.0
    got_w, got_b = ridge_head(feats, y, mask, 1e-9)
    torch.testing.assert_close(got_w, w, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(got_b, b, atol=1e-3, rtol=1e-3)
    # shared features (1, P, W) serve a batch; an empty mask gives a zero head, no NaN
    mask[2] = 0.0
    sw, sb = ridge_head(feats[:1], y, mask, 1e-9)
    assert sw.shape == (3, 2, 8) and torch.isfinite(sw).all() and sb[2].abs().max() == 0
    # fully valid signals on shared features take one shared solve: same heads
    mask[1] = 1.0
    fast = ridge_head(feats[:1], y, mask, 1e-3)
    slow = ridge_head(feats[:1].expand(3, -1, -1), y, mask, 1e-3)
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, atol=1e-4, rtol=1e-4)


def _learner(*extra: str):
    cfg = load_config(
        "configs/experiments/meta_inr_patch_era5.yaml",
        ["method.head_ridge=1e-4", "method.inner_steps=0", "method.meta_gradient=maml",
         "model.width=16", *extra],
    )  # fmt: skip
    return build_learner(cfg.model, cfg.method, {"a": (2, 1), "b": (2, 2)})


def _episode(batch: int = 4, points: int = 64) -> dict[str, ModalityBatch]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for m, c in (("a", 1), ("b", 2)):
        x = torch.rand(1, points, 2, generator=g) * 2 - 1
        y = torch.sin(3 * x[..., :1] + torch.rand(batch, 1, 1, generator=g)).expand(-1, -1, c)
        mask = torch.ones(batch, points)
        xs = x.expand(batch, -1, -1)
        out[m] = ModalityBatch(
            xs, y, mask, xs, y, mask, torch.ones(batch, points), torch.ones(batch)
        )
    return out


def test_head_mode_adapts_only_the_heads_and_meta_learns_the_trunk_through_the_solve():
    learner = _learner()
    assert learner.adapt_mode == "head"
    init = learner.initial_params(2)
    assert sorted(init) == ["a/out_bias", "a/out_weight", "b/out_bias", "b/out_weight"]
    ep = _episode()
    out = learner(ep)
    out.loss.backward()
    trunk = learner.inrs["a"].w0
    assert trunk.grad is not None and trunk.grad.abs().sum() > 0  # through the solve
    # the solved heads fit the support better than the initial ones
    with torch.no_grad():
        params, _ = learner.adapt(ep, create_graph=False)
        before = learner.query_losses(ep, learner.initial_params(4))
        after = learner.query_losses(ep, params)
    assert all(after[m] < before[m] for m in ("a", "b"))


def test_head_ridge_needs_weight_adaptation_with_maml_meta_gradients():
    with pytest.raises(ConfigError, match="head_ridge"):
        load_config("configs/experiments/default.yaml", ["method.head_ridge=1e-3"])
    with pytest.raises(ConfigError, match="head_ridge"):
        load_config(
            "configs/experiments/meta_inr_patch_era5_reptile.yaml", ["method.head_ridge=1e-3"]
        )

"""Update rules: reductions to SGD at their neutral settings, and GAP against an SVD reference."""

import math

import pytest
import torch

from mia_core.adapt import ALFA, GAP, SGD, Adam, MetaSGD, StateFusionTransformer
from mia_core.adapt.base import safe_key
from mia_core.builders import build_rule
from mia_core.config import ConfigError, load_config

SHAPES = {"a": (3, 5), "b": (5, 3), "c": (4,), "d": (2, 3, 4)}
SHAPES_2D = {"a": (3, 5), "b": (5, 3), "c": (2, 6)}
B = 4


@pytest.fixture(autouse=True)
def _float64(float64_default):
    """Rules are built in float64, so their neutral initial values are exact."""


def random_state(shapes, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(B, *s, generator=gen, dtype=dtype) for k, s in shapes.items()}
    grads = {k: torch.randn(B, *s, generator=gen, dtype=dtype) for k, s in shapes.items()}
    return params, grads


def groups(shapes):
    return {k: f"mod_{k}" for k in shapes}


def sgd_step(params, grads, lr):
    return {k: p - lr * grads[k] for k, p in params.items()}


def assert_dicts_close(a, b, rtol=1e-12, atol=1e-12):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol)


# --- 3. neutral settings reduce to SGD, on random tensors ----------------------------------


def test_sgd_is_plain_gradient_descent():
    params, grads = random_state(SHAPES)
    new, state, aux = SGD(SHAPES, groups(SHAPES), lr=0.3).update(params, grads, {}, 0)
    assert_dicts_close(new, {k: params[k] - 0.3 * grads[k] for k in params})
    assert state == {} and aux == {}


def test_metasgd_with_constant_rates_equals_sgd():
    params, grads = random_state(SHAPES)
    rule = MetaSGD(SHAPES, groups(SHAPES), lr=0.37)
    new, _, _ = rule.update(params, grads, {}, 0)
    assert_dicts_close(new, sgd_step(params, grads, 0.37))


def test_metasgd_rates_are_per_element_and_clamped():
    params, grads = random_state({"a": (2, 3)})
    rule = MetaSGD({"a": (2, 3)}, {"a": "m"}, lr=1.0, clamp=(0.0, 2.0))
    with torch.no_grad():
        rule.rates["a"].copy_(torch.tensor([[0.5, 5.0, -1.0], [1.0, 2.0, 0.1]]))
    new, _, _ = rule.update(params, grads, {}, 0)
    eff = torch.tensor([[0.5, 2.0, 0.0], [1.0, 2.0, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(new["a"], params["a"] - eff * grads["a"], rtol=1e-12, atol=1e-12)


def test_metasgd_per_step_rates_index_the_step_and_reuse_the_last():
    params, grads = random_state({"a": (2, 3)})
    rule = MetaSGD({"a": (2, 3)}, {"a": "m"}, lr=1.0, steps=2)
    assert rule.rates["a"].shape == (2, 2, 3)
    with torch.no_grad():
        rule.rates["a"][0].fill_(0.25)
        rule.rates["a"][1].fill_(0.5)
    for step, lr in [(0, 0.25), (1, 0.5), (7, 0.5)]:
        new, _, _ = rule.update(params, grads, {}, step)
        assert_dicts_close(new, sgd_step(params, grads, lr))


def test_weight_rates_build_metasgd_for_weight_adaptation_only():
    shapes, grps = {"m/w": (2, 3)}, {"m/w": "m"}
    over = ["method.name=meta_inr", "method.inner_steps=3", "method.weight_rates=param_step"]
    rule = build_rule(load_config(None, over).method, shapes, grps)
    assert isinstance(rule, MetaSGD) and rule.rates[safe_key("m/w")].shape[0] == 3
    fixed = build_rule(load_config(None, over[:2]).method, shapes, grps)
    assert isinstance(fixed, SGD)
    with pytest.raises(ConfigError, match="weight_rates"):
        load_config(None, ["method.name=cavia", "method.weight_rates=param"])


@pytest.mark.parametrize("variant", ["exact", "approx"])
def test_gap_with_identity_diagonal_equals_sgd(variant):
    params, grads = random_state(SHAPES)
    rule = GAP(SHAPES, groups(SHAPES), lr=0.7, variant=variant)
    for d in rule.diag.values():
        torch.testing.assert_close(
            torch.nn.functional.softplus(d), torch.ones_like(d), rtol=1e-12, atol=1e-12
        )
    new, _, _ = rule.update(params, grads, {}, 0)
    assert_dicts_close(new, sgd_step(params, grads, 0.7), rtol=1e-10, atol=1e-12)


def test_alfa_untrained_equals_sgd():
    params, grads = random_state(SHAPES)
    new, _, _ = ALFA(SHAPES, groups(SHAPES), lr=0.45, hidden=8).update(params, grads, {}, 0)
    assert_dicts_close(new, sgd_step(params, grads, 0.45))


def test_alfa_formula_with_trained_bases():
    shapes = {"a": (3, 4)}
    params, grads = random_state(shapes)
    rule = ALFA(shapes, {"a": "m"}, lr=0.5, hidden=8)
    with torch.no_grad():
        rule.alpha0["a"].copy_(torch.tensor([1.0, 2.0, 0.0]))
        rule.beta0["a"].copy_(torch.tensor([0.5, 1.0, 0.0]))
    new, _, _ = rule.update(params, grads, {}, 0)
    alpha = 0.5 * torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)[None, :, None]
    beta = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)[None, :, None]
    torch.testing.assert_close(new["a"], beta * params["a"] - alpha * grads["a"])


def test_sft_residual_untrained_equals_sgd():
    params, grads = random_state(SHAPES_2D)
    rule = StateFusionTransformer(
        SHAPES_2D, groups(SHAPES_2D), dim=8, heads=2, mlp_dim=8, lr=0.6, residual_sgd=True
    )
    new, _, aux = rule.update(params, grads, {}, 0)
    assert_dicts_close(new, sgd_step(params, grads, 0.6))
    assert "msft_attention" in aux


# --- GAP against an independent SVD reference ---------------------------------------------


def as_matrix(t, shape):
    rows = shape[0] if shape else 1
    return t.reshape(t.shape[0], rows, -1)


@pytest.mark.parametrize("variant", ["exact", "approx"])
def test_gap_preconditioner_matches_reference(variant):
    params, grads = random_state(SHAPES)
    rule = GAP(SHAPES, groups(SHAPES), lr=0.5, variant=variant)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for d in rule.diag.values():
            d.copy_(torch.randn(d.shape, generator=gen, dtype=d.dtype))
    new, _, _ = rule.update(params, grads, {}, 0)
    for k, shape in SHAPES.items():
        m = torch.nn.functional.softplus(rule.diag[k].detach())
        g = as_matrix(grads[k], shape)
        if variant == "exact":
            u, s, vh = torch.linalg.svd(g, full_matrices=False)
            pre = u @ torch.diag_embed(m * s) @ vh
        elif g.shape[1] <= g.shape[2]:
            pre = g * m[:, None]
        else:
            pre = g * m[None, :]
        ref = params[k] - 0.5 * pre.reshape(grads[k].shape)
        torch.testing.assert_close(new[k], ref, rtol=1e-10, atol=1e-12)


def test_gap_exact_is_finite_for_rank_deficient_gradients():
    shapes = {"a": (4, 6)}
    params, grads = random_state(shapes)
    grads["a"][:, 1:3] = 0.0  # repeated zero singular values: SVD backward would be NaN
    rule = GAP(shapes, {"a": "m"}, lr=1.0, variant="exact")
    grads["a"].requires_grad_(True)
    new, _, _ = rule.update(params, grads, {}, 0)
    d_g, d_m = torch.autograd.grad(new["a"].square().sum(), [grads["a"], rule.diag["a"]])
    assert torch.isfinite(d_g).all() and torch.isfinite(d_m).all()
    assert d_m.abs().sum() > 0


# --- batched Adam against torch.optim.Adam on every slice --------------------------------


def test_batched_adam_equals_torch_adam_per_signal():
    params, _ = random_state(SHAPES)
    gen = torch.Generator().manual_seed(3)
    grads = [
        {k: torch.randn(B, *s, generator=gen, dtype=torch.float64) for k, s in SHAPES.items()}
        for _ in range(5)
    ]
    rule = Adam.for_params(params, lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    state, new = rule.init_state(params), params
    for k, g in enumerate(grads):
        new, state, aux = rule.update(new, g, state, k)
    assert state["step"] == len(grads) and aux == {}
    for b in range(B):
        ref = {k: params[k][b].clone().requires_grad_(True) for k in SHAPES}
        opt = torch.optim.Adam(ref.values(), lr=0.05, betas=(0.8, 0.99), eps=1e-6)
        for g in grads:
            for k, p in ref.items():
                p.grad = g[k][b].clone()
            opt.step()
        for k in SHAPES:
            torch.testing.assert_close(new[k][b], ref[k].detach(), rtol=1e-6, atol=1e-6)


def test_batched_adam_is_differentiable():
    params, grads = random_state({"a": (2, 3)})
    grads["a"].requires_grad_(True)
    rule = Adam.for_params(params, lr=0.1)
    new, _, _ = rule.update(params, grads, rule.init_state(params), 0)
    (d_g,) = torch.autograd.grad(new["a"].sum(), [grads["a"]])
    assert torch.isfinite(d_g).all()


def test_rule_rejects_unknown_variant_and_missing_group():
    with pytest.raises(ValueError):
        GAP({"a": (2, 2)}, {"a": "m"}, variant="svd")
    with pytest.raises(ValueError, match="no modality group"):
        SGD({"a": (2, 2)}, {})


# --- 3. neutral settings reduce to SGD through a full MetaLearner ----------------------------

NEUTRAL = {
    "metasgd": [],
    "gap_exact": ["method.gap_variant=exact"],
    "gap_approx": ["method.gap_variant=approx"],
    "alfa": [],
    "mia": ["method.sft.residual_sgd=true"],
}


@pytest.mark.parametrize("case", list(NEUTRAL))
def test_neutral_rule_equals_sgd_through_learner(case, make_learner, make_ep):
    method = case.split("_")[0]
    overrides = ["method.inner_lr=0.8", *NEUTRAL[case]]
    sgd = make_learner("cavia", overrides=overrides)
    other = make_learner(method, overrides=overrides)
    other.inrs.load_state_dict(sgd.inrs.state_dict())
    ep = make_ep(batch=3)
    out_sgd, out = sgd(ep), other(ep)
    for k in out_sgd.params:
        torch.testing.assert_close(out.params[k], out_sgd.params[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.loss, out_sgd.loss, rtol=1e-10, atol=0)
    # Second-order meta-gradients w.r.t. the shared INR parameters agree as well.
    shared = list(sgd.inrs.parameters())
    g_sgd = torch.autograd.grad(out_sgd.loss, shared)
    g = torch.autograd.grad(out.loss, list(other.inrs.parameters()))
    for a, b in zip(g, g_sgd, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert math.isfinite(out.loss.item())


def test_reptile_moves_each_weight_towards_the_mean_adapted_weight(make_learner, make_ep):
    """The outer loss's gradient is Reptile's theta - mean_b phi_b, per meta-weight."""
    over = ["method.meta_gradient=reptile", "method.inner_steps=3", "method.inner_lr=0.05"]
    learner = make_learner("maml", "siren", ("sine",), over)
    episode = make_ep(batch=4, modalities=("sine",))
    phi, _ = learner.adapt(episode, create_graph=False, track_graph=False)
    out = learner(episode)
    out.loss.backward()
    theta = learner.initial_params(1)
    for key, w in learner.inrs["sine"].weights().items():
        want = theta[f"sine/{key}"][0] - phi[f"sine/{key}"].mean(0)
        torch.testing.assert_close(w.grad, want.detach())
    assert set(out.losses) == {"sine"} and out.losses["sine"] > 0  # query MSE, scored only
    with pytest.raises(ConfigError, match="meta_gradient"):
        load_config(None, ["method.name=meta_inr", *over[:1], "method.weight_rates=param"])
    with pytest.raises(ConfigError, match="meta_gradient"):
        load_config(None, ["method.name=cavia", *over[:1]])

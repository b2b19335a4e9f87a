"""State Fusion Transformer: each switch changes the computation the way its name says."""

from pathlib import Path

import pytest
import torch
from torch import nn

from mia_core.adapt import StateFusionTransformer
from mia_core.builders import build_learner
from mia_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {"a": (3, 6), "b": (5, 4)}  # different token counts and widths per modality
B = 2


@pytest.fixture(autouse=True)
def _float64(float64_default):
    """Build the SFTs in float64."""


def make_sft(seed=0, **kw):
    torch.manual_seed(seed)
    opts = {"dim": 8, "heads": 2, "mlp_dim": 8, "residual_sgd": False, **kw}
    return StateFusionTransformer(SHAPES, {"a": "a", "b": "b"}, **opts)


def randomize_heads(rule, seed=1):
    """Undo the residual zero-init of the predictor's last layer."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for head in rule.head.values():
            last = head[-1] if isinstance(head, nn.Sequential) else head
            nn.init.normal_(last.weight, std=0.5)
            nn.init.normal_(last.bias, std=0.1)


def random_state(seed=0, grad_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(B, *s, generator=gen) for k, s in SHAPES.items()}
    grads = {k: grad_scale * torch.randn(B, *s, generator=gen) for k, s in SHAPES.items()}
    return params, grads


def update_of(rule, params, grads):
    new, _, _ = rule.update(params, grads, {}, 0)
    return {k: (params[k] - new[k]).detach() for k in params}


def changed(a, b, tol=1e-8):
    return (a - b).abs().max().item() > tol


# --- cross-modal information flow ------------------------------------------------------------


@pytest.mark.parametrize("use_msft", [False, True])
def test_msft_is_the_only_path_between_modalities(use_msft):
    rule = make_sft(use_msft=use_msft)
    params, grads = random_state()
    base = update_of(rule, params, grads)
    grads2 = dict(grads, a=grads["a"] + torch.randn_like(grads["a"]))
    params2 = dict(params, a=params["a"] + torch.randn_like(params["a"]))
    pert = update_of(rule, params2, grads2)
    assert changed(base["a"], pert["a"])
    if use_msft:
        assert changed(base["b"], pert["b"])
    else:
        assert torch.equal(base["b"], pert["b"])


@pytest.mark.parametrize("use_msft", [False, True])
def test_msft_switch_through_learner(use_msft, make_learner, make_ep):
    learner = make_learner("mia", overrides=[f"method.sft.use_msft={str(use_msft).lower()}"])
    randomize_heads(learner.rule)
    ep = make_ep(batch=3)
    out = learner(ep)
    sine = ep["sine"]
    noisy = sine.support_y + torch.randn_like(sine.support_y)
    ep2 = dict(ep, sine=type(sine)(**{**vars(sine), "support_y": noisy}))
    out2 = learner(ep2)
    assert changed(out.params["sine"], out2.params["sine"])
    if use_msft:
        assert changed(out.params["tanh"], out2.params["tanh"], tol=1e-6)
        assert all("msft_attention" in aux for aux in out.aux)
    else:
        assert torch.equal(out.params["tanh"], out2.params["tanh"])
        assert learner.rule.msft is None
        assert all("msft_attention" not in aux for aux in out.aux)


def test_msft_attention_maps_are_row_stochastic():
    rule = make_sft(msft_layers=2, heads=2)
    params, grads = random_state()
    _, _, aux = rule.update(params, grads, {}, 0)
    maps = aux["msft_attention"]
    t = sum(s[0] for s in SHAPES.values())
    assert len(maps) == 2
    for w in maps:
        assert w.shape == (B, t, t)
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(B, t))
    assert aux["msft_tokens"] == {"a": 3, "b": 5}


def test_learner_aux_holds_attention_per_step(make_learner, make_ep):
    learner = make_learner("mia")
    out = learner(make_ep(batch=3))
    t = 2 * learner.inrs["sine"].context_shape[0]
    assert len(out.aux) == learner.inner_steps
    for aux in out.aux:
        (w,) = aux["msft_attention"]
        assert w.shape == (3, t, t)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, t))


# --- state inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("on", [False, True])
@pytest.mark.parametrize("state", ["params", "grads"])
def test_state_input_switch(state, on):
    # residual_sgd=False: no direct gradient path, so gradients reach the update only as
    # state inputs
    rule = make_sft(**{f"state_{state}": on})
    params, grads = random_state()
    perturbed = {
        k: v + torch.randn_like(v) for k, v in (params if state == "params" else grads).items()
    }
    inputs = (perturbed, grads) if state == "params" else (params, perturbed)
    base, pert = update_of(rule, params, grads), update_of(rule, *inputs)
    for k in SHAPES:
        if on:
            assert changed(base[k], pert[k])
        else:
            torch.testing.assert_close(base[k], pert[k], rtol=0, atol=1e-12)


def test_residual_sgd_adds_the_scaled_gradient():
    plain = make_sft(residual_sgd=False, lr=0.25)
    resid = make_sft(residual_sgd=False, lr=0.25)
    resid.residual_sgd = True  # same weights, only the residual term differs
    params, grads = random_state()
    a, b = update_of(plain, params, grads), update_of(resid, params, grads)
    for k in SHAPES:
        torch.testing.assert_close(b[k] - a[k], 0.25 * grads[k])


def test_need_a_state_input_and_2d_shapes():
    with pytest.raises(ValueError, match="state input"):
        make_sft(state_params=False, state_grads=False)
    with pytest.raises(ValueError, match="2-D"):
        StateFusionTransformer({"a": (2, 3, 4)}, {"a": "a"}, dim=8, heads=2, mlp_dim=8)


@pytest.mark.parametrize("state_scaling", [False, True])
def test_eta_matters_only_with_state_scaling(state_scaling):
    rule = make_sft(state_scaling=state_scaling)
    # Small gradients: the layer norm right after the scaling is scale-invariant up to its
    # eps, so exp(eta) is only visible when the gradients' variance is comparable to eps.
    params, grads = random_state(grad_scale=1e-3)
    base = update_of(rule, params, grads)
    with torch.no_grad():
        for eta in rule.eta.values():
            eta.add_(1.5)
    pert = update_of(rule, params, grads)
    for k in SHAPES:
        if state_scaling:
            assert changed(base[k], pert[k], tol=1e-4)
        else:
            torch.testing.assert_close(base[k], pert[k], rtol=0, atol=1e-12)


# --- components ------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"use_usft": False}, {"usft_layers": 0}])
def test_usft_off_removes_modules(kw):
    rule = make_sft(**kw)
    assert not rule.use_usft and len(rule.usft) == 0
    assert not any(n.startswith("usft.") for n, _ in rule.named_parameters())
    with_usft = make_sft()
    assert any(n.startswith("usft.") for n, _ in with_usft.named_parameters())
    params, grads = random_state()
    assert rule.update(params, grads, {}, 0)[0]["a"].shape == (B, *SHAPES["a"])


@pytest.mark.parametrize("kw", [{"use_msft": False}, {"msft_layers": 0}])
def test_msft_off_removes_modules(kw):
    rule = make_sft(**kw)
    assert rule.msft is None
    assert not any(n.startswith("msft.") for n, _ in rule.named_parameters())


def test_fusion_off_uses_linear_head():
    rule = make_sft(use_fusion=False)
    for k, (_, d) in SHAPES.items():
        head = rule.head[k]
        assert isinstance(head, nn.Linear)
        assert (head.in_features, head.out_features) == (8, d)
    fused = make_sft()
    for k in SHAPES:
        assert isinstance(fused.head[k], nn.Sequential)
        assert fused.head[k][0].in_features == 3 * 8  # [z, z_uni, z_multi]
    assert make_sft(use_usft=False).head["a"][0].in_features == 2 * 8
    params, grads = random_state()
    new, _, _ = rule.update(params, grads, {}, 0)
    assert {k: v.shape for k, v in new.items()} == {k: (B, *s) for k, s in SHAPES.items()}


def test_fusion_off_head_reads_msft_tokens():
    rule = make_sft(use_fusion=False)
    params, grads = random_state()
    captured = {}

    def hook(module, inputs, output):
        captured["joint"] = output[0]

    rule.msft.register_forward_hook(hook)
    upd = update_of(rule, params, grads)
    joint_a = captured["joint"][:, : SHAPES["a"][0]]
    torch.testing.assert_close(upd["a"], rule.head["a"](joint_a).detach())


# --- the paper's pure form trains ---------------------------------------------------------------


def test_paper_pure_form_trains_on_tiny_synthetic(make_ep):
    """Paper preset (residual_sgd off, uncertainty weighting, Adam 1e-4, no clipping), tiny."""
    tiny = ["model.width=16", "model.context_dim=16", "model.context_tokens=3"]
    tiny += ["method.sft.dim=8", "method.sft.mlp_dim=8", "method.sft.heads=2"]
    cfg = load_config(ROOT / "configs/experiments/paper_synthetic_mia.yaml", tiny)
    assert not cfg.method.sft.residual_sgd and cfg.method.uncertainty_weighting
    assert (cfg.run.outer_lr, cfg.run.weight_decay, cfg.run.grad_clip) == (1e-4, 0.0, 0.0)
    mods = tuple(cfg.data.modalities)
    torch.manual_seed(0)
    learner = build_learner(cfg.model, cfg.method, {m: (1, 1) for m in mods})
    heads = [h[-1] if isinstance(h, nn.Sequential) else h for h in learner.rule.head.values()]
    assert all(h.weight.abs().sum() > 0 for h in heads)  # no zero-initialised head
    opt = torch.optim.AdamW(learner.parameters(), lr=1e-3, weight_decay=cfg.run.weight_decay)
    ep = make_ep(batch=4, num_points=40, modalities=mods, ratio=(0.05, 0.2))
    losses = []
    for _ in range(4):
        out = learner(ep)
        opt.zero_grad()
        out.loss.backward()
        grads = [p.grad for p in learner.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        opt.step()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses

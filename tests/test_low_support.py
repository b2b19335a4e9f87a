"""Low-support variants: the SFT's support state and the prior pull (docs/low_support.md)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_configs import TINY_META_MODEL

from mia_core.adapt import StateFusionTransformer, with_support
from mia_core.adapt.sft import SUPPORT_STATES
from mia_core.builders import build_learner
from mia_core.config import ConfigError, load_config
from mia_core.config.schema_method import SUPPORT_STATES as CONFIG_SUPPORT_STATES
from mia_core.meta import PriorPull
from mia_core.meta.metrics import masked_mse
from pipelines.codecs.fitting import fit_batch
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.jobs import train

PURE = ["method.sft.residual_sgd=false"]  # a random predictor head: the tokens matter
PULL = ["method.prior_pull=2.0", "method.prior_pull_n0=10.0"]
LEARNED = [*PULL, "method.prior_pull_learned=true"]


def hand_adapt(learner, episode):
    """The inner loop as it was before the options: support MSE, one grad, the rule."""
    params = learner.initial_params(episode[learner.modalities[0]].batch_size)
    state = learner.rule.init_state(params)
    for k in range(learner.inner_steps):
        loss = sum(
            masked_mse(
                learner.predict(m, mb.support_x, params), mb.support_y, mb.support_mask
            ).sum()
            for m, mb in episode.items()
        )
        keys = list(params)
        grads = torch.autograd.grad(loss, [params[key] for key in keys], create_graph=True)
        params, state, _ = learner.rule(params, dict(zip(keys, grads, strict=True)), state, k)
    return params


def dist_to_init(learner, params):
    init = learner.initial_params(1)
    return sum((params[k] - init[k]).square().sum() for k in params)


# --- options off: the learner is the one from before ------------------------------------


@pytest.mark.parametrize(("method", "extra"), [("cavia", []), ("mia", PURE), ("metasgd", [])])
def test_options_off_equal_the_plain_inner_loop(method, extra, make_learner, make_ep):
    learner = make_learner(method, overrides=extra)
    assert learner.prior is None
    assert not any("support_embed" in k or "prior" in k for k in learner.state_dict())
    ep = make_ep(batch=3)
    with torch.enable_grad():
        params, _ = learner.adapt(ep)
        ref = hand_adapt(learner, ep)
    for k in params:
        assert torch.equal(params[k], ref[k]), k


# --- options on change the adapted prediction ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("mia", [*PURE, "method.sft.support_state=log_count"]),
        ("mia", [*PURE, "method.sft.support_state=density"]),
        ("cavia", PULL),
        ("maml", [*PULL, "model.family=siren", "method.inner_lr=0.01"]),
        ("mia", PULL),
        ("gap", PULL),
        ("alfa", PULL),
    ],
)
def test_options_on_change_the_prediction(method, extra, make_learner, make_ep):
    base = [e for e in extra if "support_state" not in e and "prior_pull" not in e]
    off, on = make_learner(method, overrides=base), make_learner(method, overrides=extra)
    ep = make_ep(batch=3)
    _, p_off = off.evaluate(ep)
    _, p_on = on.evaluate(ep)
    for m in p_off:
        assert torch.isfinite(p_on[m]).all()
        assert not torch.allclose(p_off[m], p_on[m], rtol=1e-6, atol=1e-9), m


# --- the prior pull ---------------------------------------------------------------------------


def test_pull_strength_falls_with_the_support_count():
    prior = PriorPull(["a"], strength=3.0, n0=10.0)
    w = prior.weight("a", torch.tensor([0.0, 2.0, 20.0, 2000.0, 1e7]))
    assert w[0] == pytest.approx(3.0)
    assert (w[1:] < w[:-1]).all()
    assert w[3] == pytest.approx(3.0 / 201.0)
    assert w[-1] < 1e-5
    assert not list(prior.parameters()) and not prior.state_dict()  # fixed: config-held


def test_pull_gradient_is_the_penalty_gradient(float64_default):
    prior = PriorPull(["a", "b"], strength=0.7, n0=5.0, learned=True)
    params = {"a/w": torch.randn(3, 4, 2), "a/b": torch.randn(3, 5), "b": torch.randn(3, 2, 3)}
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    anchor = {k: torch.randn(1, *v.shape[1:]) for k, v in params.items()}
    counts = {"a": torch.tensor([2.0, 50.0, 900.0]), "b": torch.tensor([1.0, 1.0, 3.0])}
    groups = {"a/w": "a", "a/b": "a", "b": "b"}
    penalty, grads = prior(params, anchor, counts, groups)
    auto = torch.autograd.grad(penalty, list(params.values()))
    for k, g in zip(params, auto, strict=True):
        torch.testing.assert_close(grads[k], g)


def test_pull_acts_at_two_points_and_vanishes_at_thousands(make_learner, make_ep):
    off, on = make_learner("cavia"), make_learner("cavia", overrides=["method.prior_pull=20.0"])
    tiny = make_ep(batch=3, num_points=400, ratio=(0.005, 0.005))  # 2 support points
    dense = make_ep(batch=3, num_points=4000, ratio=(1.0, 1.0))  # every one of 4,000
    assert tiny["sine"].support_mask.sum(1).max() == 2
    with torch.enable_grad():
        p_off, _ = off.adapt(tiny, create_graph=False)
        p_on, _ = on.adapt(tiny, create_graph=False)
        assert dist_to_init(on, p_on) < 0.6 * dist_to_init(off, p_off)
        d_off, _ = off.adapt(dense, create_graph=False)
        d_on, _ = on.adapt(dense, create_graph=False)
    step = sum((d_off[k] - off.initial_params(1)[k]).abs().max() for k in d_off)
    gap = sum((d_off[k] - d_on[k]).abs().max() for k in d_off)
    assert gap < 1e-2 * step


@pytest.mark.parametrize("first_order", [False, True])
def test_gradients_reach_the_learned_strength(first_order, make_learner, make_ep):
    extra = [*LEARNED, f"method.first_order={str(first_order).lower()}"]
    learner = make_learner("metasgd", overrides=extra)
    owned = {id(p) for p in learner.parameters() if p.requires_grad}
    prior = learner.prior
    assert id(prior.log_strength) in owned and id(prior.log_n0) in owned
    assert {"prior.log_strength", "prior.log_n0"} <= set(learner.state_dict())
    out = learner(make_ep(batch=3, ratio=(0.05, 0.2)))
    out.loss.backward()
    for p in (prior.log_strength, prior.log_n0):
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all()


# --- the SFT's support state ----------------------------------------------------------------


def sft_pair(support_state: str) -> tuple[StateFusionTransformer, dict, dict]:
    torch.manual_seed(0)
    shapes, groups = {"a": (3, 4), "b": (2, 4)}, {"a": "a", "b": "b"}
    sft = StateFusionTransformer(
        shapes, groups, dim=8, heads=2, mlp_dim=8, residual_sgd=False, support_state=support_state
    )
    params = {k: torch.randn(1, *s).expand(2, *s) for k, s in shapes.items()}
    grads = {k: torch.randn(1, *s).expand(2, *s) for k, s in shapes.items()}
    return sft, params, grads


@pytest.mark.parametrize("support_state", SUPPORT_STATES)
def test_support_state_tells_2_from_200_points(support_state):
    sft, params, grads = sft_pair(support_state)
    counts = {m: torch.tensor([2.0, 200.0]) for m in params}
    totals = {m: torch.tensor([2000.0, 2000.0]) for m in params}
    new, _, _ = sft(params, grads, with_support({}, counts, totals), 0)
    for k, v in new.items():
        same = torch.allclose(v[0], v[1])
        assert same == (support_state == "none"), (k, support_state)


def test_support_state_needs_the_sizes():
    sft, params, grads = sft_pair("log_count")
    with pytest.raises(ValueError, match="support sizes of modality 'a'"):
        sft(params, grads, {}, 0)
    assert CONFIG_SUPPORT_STATES == SUPPORT_STATES


def test_support_embedding_is_meta_learned(make_learner, make_ep):
    learner = make_learner("mia", overrides=[*PURE, "method.sft.support_state=log_count"])
    learner(make_ep(batch=3)).loss.backward()
    for p in learner.rule.support_embed.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_encoder_hands_the_rule_the_field_size(make_learner):
    learner = make_learner(
        "mia", overrides=[*PURE, "method.sft.support_state=density"], dtype=torch.float32
    )
    coords = {m: torch.linspace(-1, 1, 30)[:, None] for m in learner.modalities}
    values = {m: torch.sin(3 * coords[m]).T[..., None].expand(2, 30, 1) for m in learner.modalities}
    valid = {m: torch.ones(2, 30) for m in learner.modalities}
    res = fit_batch(learner, coords, values, valid, steps=2, lr=0.0, optimizer="rule")
    assert all(torch.isfinite(v).all() for v in res.params.values())


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["method.name=mia", "method.sft.support_state=count"], "support_state"),
        (["method.name=cavia", "method.sft.support_state=log_count"], "support_state"),
        (["method.prior_pull=-1"], "prior_pull"),
        (["method.prior_pull=1", "method.prior_pull_n0=0"], "prior_pull_n0"),
        (["method.prior_pull_learned=true"], "prior_pull_learned"),
        (["method.prior_pull=1", "method.fim_lambda=0.1"], "prior_pull"),
        (["method.name=maml", "method.head_ridge=0.1", "method.prior_pull=1"], "prior_pull"),
        (
            ["method.name=maml", "method.meta_gradient=reptile", *LEARNED],
            "prior_pull_learned",
        ),
        (
            ["method.name=mia", "method.sft.support_state=density", "data.query_points=64"],
            "query_points",
        ),
    ],
)
def test_config_errors_are_one_line(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert "\n" not in msg and key in msg, msg


# --- 30 training steps with each option on ------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [["method.sft.support_state=log_count"], LEARNED],
)
def test_tiny_training_with_the_option_on(option, tmp_path):
    cfg = load_config(
        "configs/experiments/synthetic_mia.yaml",
        [
            "data.num_functions=40",
            "data.num_train=30",
            "data.num_points=50",
            *TINY_META_MODEL,
            "run.steps=30",
            "run.batch_size=4",
            "run.log_every=10",
            "run.eval_every=30",
            "run.checkpoint_every=30",
            "run.eval_repeats=1",
            "run.eval_bins=[[0.01,0.05],[0.05,0.1]]",
            "run.eval_batch_size=16",
            f"run.out_dir={tmp_path}",
            *option,
        ],
    )
    res = train(cfg, local=True, log=lambda s: None)
    run_dir = tmp_path / "synthetic_mia"
    assert res.step == 30 and (run_dir / "results_val.md").exists()
    rows = json.loads((run_dir / "metrics_val.json").read_text())["val"]
    assert all(r["n_signals"] == 0 or math.isfinite(r["nmse_all"]) for r in rows)
    state = load_checkpoint(run_dir / "checkpoints/last.pt")
    learner = build_learner(cfg.model, cfg.method, {m: (1, 1) for m in cfg.data.modalities})
    learner.load_state_dict(state["model"])  # strict: the option's modules are saved

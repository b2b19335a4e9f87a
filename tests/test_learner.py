"""MetaLearner: batching, padding, meta-gradients against references, and a training smoke."""

import pytest
import torch

from mia_core.adapt import SGD
from mia_core.data import ModalityBatch
from mia_core.meta import MetaLearner

PRUNE = [
    "method.pruning.enabled=true",
    "method.pruning.keep_ratio=0.5",
    "method.pruning.bootstrap_steps=2",
    "method.pruning.bootstrap_weight=1.0",
]
FUNCTA_PAPER = [
    "model.context_dim=4",
    "model.functa_grid=[3]",
    "model.functa_backbone=relu",
    "model.functa_latent_map=conv",
    "model.functa_layout=paper",
]
CASES = {
    "cavia": ("cavia", "composers", []),
    "maml": ("maml", "siren", ["method.inner_lr=0.01"]),
    "metasgd": ("metasgd", "composers", []),
    "alfa": ("alfa", "composers", []),
    "gap_exact": ("gap", "composers", ["method.gap_variant=exact"]),
    "gap_approx": ("gap", "composers", ["method.gap_variant=approx"]),
    "mia": ("mia", "composers", []),
    "cavia_uncertainty": ("cavia", "composers", ["method.uncertainty_weighting=true"]),
    "cavia_pruned": ("cavia", "composers", PRUNE),
    "functa_mia": ("mia", "functa", ["model.context_dim=4"]),
    "mia_pure": ("mia", "composers", ["method.sft.residual_sgd=false"]),
    "composers_paper": ("cavia", "composers", ["model.composers_layout=paper"]),
    "functa_paper_mia": ("mia", "functa", [*FUNCTA_PAPER, "method.sft.residual_sgd=false"]),
}


@torch.no_grad()
def perturb(module, scale=0.1, seed=1):
    """Move meta-parameters off their special initial values (zeros, ones)."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def shake_rule(learner, seed=1):
    perturb(learner.rule, 0.1, seed)
    if learner.log_vars is not None:
        perturb(torch.nn.ParameterList([learner.log_vars]), 0.5, seed)


def meta_grads(learner, loss):
    params = [p for p in learner.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def assert_lists_close(a, b, rtol=1e-9, atol=1e-11):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def sub_episode(ep, b):
    return {m: mb.select(slice(b, b + 1)) for m, mb in ep.items()}


# --- 1. batched == per-signal loop ---------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_batched_equals_per_signal_loop(case, make_learner, make_ep):
    method, family, overrides = CASES[case]
    learner = make_learner(method, family, overrides=overrides)
    shake_rule(learner)
    ep = make_ep(batch=3)
    assert any((mb.support_mask == 0).any() for mb in ep.values()), "want padded supports"

    out = learner(ep)
    grads = meta_grads(learner, out.loss)

    loop_loss, loop_grads, loop_params = 0.0, None, {k: [] for k in out.params}
    loop_losses = {m: 0.0 for m in ep}
    loop_boot = 0.0
    for b in range(3):
        o = learner(sub_episode(ep, b))
        loop_loss = loop_loss + o.loss.detach() / 3
        for m in ep:
            loop_losses[m] = loop_losses[m] + o.losses[m] / 3
        g = meta_grads(learner, o.loss)
        loop_grads = (
            g if loop_grads is None else [x + y for x, y in zip(loop_grads, g, strict=True)]
        )
        for k, v in o.params.items():
            loop_params[k].append(v.detach())
        if o.bootstrap is not None:
            loop_boot = loop_boot + o.bootstrap / 3
    loop_grads = [g / 3 for g in loop_grads]

    torch.testing.assert_close(out.loss.detach(), loop_loss, rtol=1e-10, atol=0)
    for m in ep:
        torch.testing.assert_close(out.losses[m], loop_losses[m], rtol=1e-10, atol=0)
    for k, v in out.params.items():
        torch.testing.assert_close(v.detach(), torch.cat(loop_params[k]), rtol=1e-9, atol=1e-11)
    assert_lists_close(grads, loop_grads)
    assert sum(g.abs().sum() for g in grads) > 0
    if case == "cavia_pruned":
        torch.testing.assert_close(out.bootstrap, loop_boot, rtol=1e-9, atol=0)


def pad_support(mb: ModalityBatch, extra: int, seed: int = 3) -> ModalityBatch:
    """Append ``extra`` padded support points holding finite garbage."""
    gen = torch.Generator().manual_seed(seed)
    b, _, d = mb.support_x.shape
    c = mb.support_y.shape[-1]
    dt = mb.support_x.dtype
    junk_x = torch.rand(b, extra, d, generator=gen, dtype=dt) * 2 - 1
    junk_y = torch.randn(b, extra, c, generator=gen, dtype=dt) * 100
    return ModalityBatch(
        support_x=torch.cat([mb.support_x, junk_x], 1),
        support_y=torch.cat([mb.support_y, junk_y], 1),
        support_mask=torch.cat([mb.support_mask, torch.zeros(b, extra, dtype=dt)], 1),
        query_x=mb.query_x,
        query_y=mb.query_y,
        query_mask=mb.query_mask,
        query_support=mb.query_support,
        scale=mb.scale,
    )


@pytest.mark.parametrize("case", ["cavia", "maml", "mia", "alfa", "cavia_pruned"])
def test_padding_does_not_change_results(case, make_learner, make_ep):
    method, family, overrides = CASES[case]
    learner = make_learner(method, family, overrides=overrides)
    shake_rule(learner)
    ep = make_ep(batch=3)
    padded = {m: pad_support(mb, 5 + i) for i, (m, mb) in enumerate(ep.items())}
    out, out_pad = learner(ep), learner(padded)
    torch.testing.assert_close(out.loss, out_pad.loss, rtol=1e-10, atol=0)
    for k in out.params:
        torch.testing.assert_close(out.params[k], out_pad.params[k], rtol=1e-9, atol=1e-11)
    assert_lists_close(meta_grads(learner, out.loss), meta_grads(learner, out_pad.loss))


# --- 2. meta-gradients against finite differences and hand-built references ---------------

FD_MODEL = ["model.width=8", "model.context_dim=8", "model.depth=2", "model.context_tokens=2"]


@pytest.mark.parametrize("method", ["cavia", "mia"])
def test_second_order_meta_gradients_match_finite_differences(method, make_learner, make_ep):
    learner = make_learner(method, "composers", overrides=FD_MODEL)
    if method == "mia":
        perturb(learner.rule, 0.3)
    ep = make_ep(batch=2, num_points=12)
    named = dict(learner.named_parameters())
    picks = [
        ("inrs.sine.context_init", (0, 1)),
        ("inrs.tanh.context_init", (1, 5)),
        ("inrs.sine.u", (2, 0)),
        ("inrs.tanh.w0", (3, 0)),
        ("inrs.sine.out_weight", (0, 4)),
    ]
    if method == "mia":
        picks += [("rule.head.tanh.6.weight", (2, 1)), ("rule.proj.sine.0.bias", (3,))]
    out = learner(ep)
    analytic = dict(zip(named, meta_grads(learner, out.loss), strict=True))
    learner.first_order = True
    first = dict(zip(named, meta_grads(learner, learner(ep).loss), strict=True))
    learner.first_order = False

    eps, max_fo_gap = 1e-6, 0.0
    for name, idx in picks:
        p = named[name]
        with torch.no_grad():
            orig = p[idx].item()
            p[idx] = orig + eps
            up = learner(ep).loss.item()
            p[idx] = orig - eps
            down = learner(ep).loss.item()
            p[idx] = orig
        fd = (up - down) / (2 * eps)
        ad = analytic[name][idx].item()
        assert abs(ad - fd) <= 1e-6 * max(abs(fd), 1e-3), (name, idx, ad, fd)
        max_fo_gap = max(max_fo_gap, abs(first[name][idx].item() - fd) / max(abs(fd), 1e-3))
    # The first-order gradient is a different quantity: the check above can tell them apart.
    assert max_fo_gap > 1e-3


def hand_query_loss(learner, ep, params):
    total = 0.0
    for m, mb in ep.items():
        pred = learner.inrs[m](mb.query_x, params[m])
        per = ((pred - mb.query_y) ** 2).mean(-1).mul(mb.query_mask).sum(1) / mb.query_mask.sum(1)
        total = total + per.mean()
    return total


def hand_inner_loop(learner, ep, rates):
    """First-order inner loop by hand: ``phi <- phi - rate * g`` with detached ``g``."""
    b = next(iter(ep.values())).batch_size
    phi = {m: learner.inrs[m].context_init.detach().expand(b, -1, -1) for m in ep}
    grads = {m: [] for m in ep}
    for _ in range(learner.inner_steps):
        phi = {m: v.detach().requires_grad_(True) for m, v in phi.items()}
        loss = 0.0
        for m, mb in ep.items():
            pred = learner.inrs[m](mb.support_x, phi[m])
            se = ((pred - mb.support_y) ** 2).mean(-1) * mb.support_mask
            loss = loss + (se.sum(1) / mb.support_mask.sum(1)).sum()
        g = dict(zip(ep, torch.autograd.grad(loss, [phi[m] for m in ep]), strict=True))
        for m in ep:
            grads[m].append(g[m])
        phi = {m: (phi[m] - rates[m] * g[m]).detach() for m in ep}
    return phi, grads


def test_first_order_cavia_matches_hand_reference(make_learner, make_ep):
    learner = make_learner("cavia", overrides=["method.first_order=true"])
    ep = make_ep(batch=3)
    out = learner(ep)
    ctx = [learner.inrs[m].context_init for m in ep]
    theta = [w for m in ep for w in learner.inrs[m].weights().values()]
    got = torch.autograd.grad(out.loss, ctx + theta)

    lr = learner.rule.lr
    phi_k, _ = hand_inner_loop(learner, ep, {m: lr for m in ep})
    for m in ep:
        torch.testing.assert_close(out.params[m].detach(), phi_k[m], rtol=1e-10, atol=1e-12)
    phi_k = {m: v.requires_grad_(True) for m, v in phi_k.items()}
    ref = torch.autograd.grad(hand_query_loss(learner, ep, phi_k), [phi_k[m] for m in ep] + theta)
    for i in range(len(ctx)):  # d phi_K / d phi_0 = I for every signal
        torch.testing.assert_close(got[i], ref[i].sum(0), rtol=1e-9, atol=1e-12)
    assert_lists_close(got[len(ctx) :], ref[len(ctx) :])


def test_first_order_metasgd_rate_gradient_matches_hand_reference(make_learner, make_ep):
    learner = make_learner("metasgd", overrides=["method.first_order=true"])
    with torch.no_grad():
        for r in learner.rule.rates.values():
            r.uniform_(0.5, 1.5)
    ep = make_ep(batch=3)
    out = learner(ep)
    rates = {m: learner.rule.rates[m] for m in ep}
    got = torch.autograd.grad(out.loss, [rates[m] for m in ep])

    phi_k, gs = hand_inner_loop(learner, ep, {m: rates[m].detach() for m in ep})
    for m in ep:
        torch.testing.assert_close(out.params[m].detach(), phi_k[m], rtol=1e-10, atol=1e-12)
    phi_k = {m: v.requires_grad_(True) for m, v in phi_k.items()}
    dl = torch.autograd.grad(hand_query_loss(learner, ep, phi_k), [phi_k[m] for m in ep])
    for i, m in enumerate(ep):
        ref = (-sum(gs[m]) * dl[i]).sum(0)
        torch.testing.assert_close(got[i], ref, rtol=1e-9, atol=1e-12)
        assert ref.abs().max() > 1e-6


# --- learner plumbing ------------------------------------------------------------------------


def test_evaluate_matches_forward_adaptation(make_learner, make_ep):
    learner = make_learner("mia")
    shake_rule(learner)
    ep = make_ep(batch=3)
    out = learner(ep)
    metrics, preds = learner.evaluate(ep)
    for m, mb in ep.items():
        pred = learner.predict(m, mb.query_x, out.params).detach()
        torch.testing.assert_close(preds[m], pred, rtol=1e-10, atol=1e-12)
        assert metrics[m]["mse_all"].shape == (3,)
        se = ((pred - mb.query_y) ** 2).mean(-1)
        torch.testing.assert_close(metrics[m]["mse_all"], se.mean(1), rtol=1e-10, atol=0)
    assert all(p.grad is None for p in learner.parameters())


def test_zero_inner_steps_is_initial_context(make_learner, make_ep):
    learner = make_learner("cavia", overrides=["method.inner_steps=0"])
    ep = make_ep(batch=2)
    out = learner(ep)
    for m in ep:
        torch.testing.assert_close(
            out.params[m], learner.inrs[m].context_init.expand(2, -1, -1), rtol=0, atol=0
        )


def test_rule_for_other_tensors_is_rejected(make_learner):
    learner = make_learner("cavia")
    with pytest.raises(ValueError, match="other adapted tensors"):
        MetaLearner(dict(learner.inrs), SGD({"x": (3, 16)}, {"x": "x"}), adapt="context")


# --- 5. every method learns on the synthetic data ---------------------------------------------


@pytest.mark.parametrize("method", ["cavia", "metasgd", "gap", "alfa", "mia", "mia_pure", "maml"])
def test_every_method_lowers_outer_loss(method, make_learner, make_ep):
    mods = ("sine", "gaussian", "tanh", "relu")
    overrides = ["model.width=32", "model.context_dim=32", "model.context_tokens=4"]
    overrides += ["model.context_init_std=0", "method.sft.dim=32", "method.sft.mlp_dim=32"]
    if method == "mia_pure":  # the paper's form: no residual SGD term, no zero-init head
        method, overrides = "mia", overrides + ["method.sft.residual_sgd=false"]
    family = "composers"
    if method == "maml":
        family, overrides = "relu_ff", overrides + ["method.inner_lr=0.01"]
    learner = make_learner(method, family, mods, overrides, dtype=torch.float32)
    ep = make_ep(batch=8, num_points=64, modalities=mods, ratio=(0.1, 0.5), dtype=torch.float32)
    torch.manual_seed(0)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        out = learner(ep)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("case", ["mia", "functa_mia"])
def test_coordinate_layers_are_computed_once_per_point_set(case, make_learner, make_ep):
    """The K inner steps share the support's first layer: same loss and meta-gradients."""
    method, family, overrides = CASES[case]
    learner = make_learner(method, family, overrides=overrides)
    shake_rule(learner)
    ep = make_ep(batch=3)
    computed = dict.fromkeys(ep, 0)

    def counting(m, memoised):
        def call(coords, weights, compute):
            def counted():
                computed[m] += 1
                return compute()

            return memoised(coords, weights, counted)

        return call

    for m in ep:
        inr = learner.inrs[m]
        inr._coordinate_layers = counting(m, inr._coordinate_layers)
    out = learner(ep)
    got = meta_grads(learner, out.loss)
    k = learner.inner_steps
    assert k >= 2 and all(n == 2 for n in computed.values())  # support once, query once
    # Outside the context every forward computes it: the reference loss and gradients.
    params, _ = learner.adapt(ep)
    losses = learner.query_losses(ep, params)
    assert all(n == 2 + k + 1 for n in computed.values())
    ref = torch.stack([losses[m] for m in learner.modalities]).sum()
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-12)
    assert_lists_close(got, meta_grads(learner, ref), rtol=1e-8, atol=1e-10)
    assert all(learner.inrs[m]._coordinate_memo is None for m in ep)


def test_inner_points_draw_fresh_support_points_at_every_inner_step(make_learner, make_ep):
    """method.inner_points: each inner step sees its own random draw of support points."""
    over = ["method.inner_steps=4", "method.inner_points=3", "method.inner_lr=0.05"]
    learner = make_learner("maml", "siren", ("sine",), over)
    episode = make_ep(batch=2, num_points=40, modalities=("sine",), ratio=(0.5, 0.5))
    seen = []
    predict = learner.predict

    def recording(m, x, params, *a, **k):
        seen.append(x.detach().clone())
        return predict(m, x, params, *a, **k)

    learner.predict = recording
    torch.manual_seed(0)
    learner.adapt(episode, create_graph=False, track_graph=False)
    assert len(seen) == 4 and all(x.shape[1] == 3 for x in seen)
    assert any(not torch.equal(seen[0], x) for x in seen[1:])  # not one fixed subset
    support = episode["sine"].support_x
    for x in seen:  # every drawn point is one of the support points
        assert all(any(torch.equal(p, q) for q in support[0]) for p in x[0])

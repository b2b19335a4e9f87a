"""Context pruning: counts, top-k selection, GradNCP scores, and pruning inside the learner."""

import math
from fractions import Fraction

import pytest
import torch

from mia_core.inr import ComposersINR, Siren
from mia_core.meta import MetaLearner, PruningSpec
from mia_core.meta.pruning import default_keep, gradient_norm_scores, keep_counts, select_top

COUNTS = [1, 2, 3, 5, 7, 10, 13]


def ragged_mask(counts, width=None, shuffle_seed=None):
    """``(B, P)`` mask with ``counts[b]`` ones per row (left-aligned, or scattered)."""
    width = width or max(counts) + 2
    mask = torch.zeros(len(counts), width)
    for b, n in enumerate(counts):
        mask[b, :n] = 1.0
    if shuffle_seed is not None:
        gen = torch.Generator().manual_seed(shuffle_seed)
        for b in range(len(counts)):
            mask[b] = mask[b, torch.randperm(width, generator=gen)]
    return mask


@pytest.mark.parametrize("ratio", ["0.25", "0.3", "0.5", "0.7", "1.0", "0.01"])
def test_keep_counts_is_ceil_of_ratio(ratio):
    counts = keep_counts(ragged_mask(COUNTS), float(ratio))
    expected = [max(1, math.ceil(Fraction(ratio) * n)) for n in COUNTS]
    assert counts.tolist() == expected
    assert [default_keep(n, float(ratio)) for n in COUNTS] == expected


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_select_top_keeps_the_top_scores(ratio):
    mask = ragged_mask(COUNTS, width=16, shuffle_seed=0)
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(mask.shape, generator=gen).masked_fill(mask == 0, float("-inf"))
    index = torch.arange(16.0).expand(len(COUNTS), 16)[..., None]
    payload = torch.randn(len(COUNTS), 16, 2, generator=gen)
    new_mask, (idx, got) = select_top(scores, mask, ratio, index, payload)

    k = max(math.ceil(Fraction(str(ratio)) * n) for n in COUNTS)
    assert new_mask.shape == (len(COUNTS), k) and got.shape == (len(COUNTS), k, 2)
    for b, n in enumerate(COUNTS):
        keep = max(1, math.ceil(Fraction(str(ratio)) * n))
        assert new_mask[b].sum().item() == keep
        kept = idx[b, new_mask[b] > 0, 0].long()
        valid = torch.nonzero(mask[b]).flatten()
        best = valid[scores[b, valid].argsort(descending=True)[:keep]]
        assert set(kept.tolist()) == set(best.tolist())
        assert (mask[b, kept] == 1).all()  # never a padded point
        torch.testing.assert_close(got[b, new_mask[b] > 0], payload[b, kept])


def test_empty_support_stays_empty():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    scores = gradient_norm_scores(torch.randn(2, 4, 1), torch.randn(2, 4, 3), mask)
    new_mask, (x,) = select_top(scores, mask, 0.5, torch.randn(2, 4, 1))
    assert new_mask.tolist() == [[1.0, 1.0], [0.0, 0.0]] and x.shape == (2, 2, 1)
    assert keep_counts(mask, 0.5).tolist() == [2, 0] and default_keep(0, 0.5) == 0
    new_mask, (x,) = select_top(scores[1:], mask[1:], 0.5, torch.randn(1, 4, 1))
    assert new_mask.shape == (1, 0) and x.shape == (1, 0, 1)


def test_pruned_learner_with_an_empty_support(make_learner, make_ep):
    learner = make_learner("cavia", overrides=[*PRUNE, "method.pruning.keep_ratio=0.5"])
    ep = make_ep(batch=3)
    mb = ep["sine"]
    mask = mb.support_mask.clone()
    mask[1] = 0.0
    ep["sine"] = type(mb)(**{**vars(mb), "support_mask": mask})
    out = learner(ep)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in learner.parameters() if p.grad is not None)
    init = learner.inrs["sine"].context_init
    torch.testing.assert_close(out.params["sine"][1], init, rtol=0, atol=0)
    assert not torch.allclose(out.params["sine"][0], init)


def test_gradient_norm_scores_mask_padding():
    err = torch.randn(2, 4, 3)
    feats = torch.randn(2, 4, 5)
    mask = torch.tensor([[1.0, 1, 0, 1], [0, 1, 1, 1]])
    s = gradient_norm_scores(err, feats, mask)
    assert torch.isneginf(s[mask == 0]).all() and torch.isfinite(s[mask == 1]).all()


@pytest.mark.parametrize("family", ["siren", "composers"])
def test_gradient_norm_scores_are_half_the_last_layer_gradient_norm(family):
    torch.manual_seed(0)
    if family == "siren":
        inr = Siren(2, 3, width=8, depth=2, omega0=5.0, context_shape=(1, 4)).double()
    else:
        inr = ComposersINR(2, 3, width=8, depth=3, rank=2).double()
    b, p = 2, 5
    x = torch.rand(b, p, 2, dtype=torch.float64) * 2 - 1
    y = torch.randn(b, p, 3, dtype=torch.float64)
    ctx = torch.randn(b, *inr.context_shape, dtype=torch.float64)
    pred, feats = inr(x, ctx, return_features=True)
    scores = gradient_norm_scores(pred - y, feats, torch.ones(b, p, dtype=torch.float64))
    for i in range(b):
        for j in range(p):
            out = inr(x[i : i + 1, j : j + 1], ctx[i : i + 1])
            loss = (out - y[i, j]).square().sum()  # the point's squared error
            gw, gb = torch.autograd.grad(loss, [inr.out_weight, inr.out_bias])
            true_norm = torch.sqrt(gw.square().sum() + gb.square().sum())
            torch.testing.assert_close(2 * scores[i, j], true_norm, rtol=1e-10, atol=1e-12)


# --- pruning inside the learner ----------------------------------------------------------------

PRUNE = ["method.pruning.enabled=true", "method.pruning.bootstrap_steps=0"]


def test_keep_ratio_one_equals_no_pruning(make_learner, make_ep):
    pruned = make_learner("cavia", overrides=[*PRUNE, "method.pruning.keep_ratio=1.0"])
    plain = make_learner("cavia")
    plain.load_state_dict(pruned.state_dict())
    ep = make_ep(batch=3)
    a, b = pruned(ep), plain(ep)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-10, atol=0)
    ga = torch.autograd.grad(a.loss, list(pruned.parameters()))
    gb = torch.autograd.grad(b.loss, list(plain.parameters()))
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_one_pruned_step_trains_on_hand_selected_points(make_learner, make_ep):
    pruned = make_learner("cavia", overrides=[*PRUNE, "method.pruning.keep_ratio=0.5"])
    pruned.inner_steps = 1
    plain = make_learner("cavia")
    plain.load_state_dict(pruned.state_dict())
    plain.inner_steps = 1
    ep = make_ep(batch=3, num_points=30, ratio=(0.3, 0.7))
    manual = {}
    for m, mb in ep.items():
        inr = plain.inrs[m]
        with torch.no_grad():
            ctx = inr.context_init.expand(3, -1, -1)
            feats = inr.features(mb.support_x, ctx, None)
            pred = feats @ inr.out_weight.t() + inr.out_bias
            score = (pred - mb.support_y).abs()[..., 0] * (feats.square().sum(-1) + 1).sqrt()
            score = score.masked_fill(mb.support_mask == 0, -1.0)
        keep = torch.zeros_like(mb.support_mask)
        for b in range(3):
            n = int(mb.support_mask[b].sum())
            keep[b, score[b].argsort(descending=True)[: math.ceil(n / 2)]] = 1.0
        manual[m] = type(mb)(**{**vars(mb), "support_mask": keep})
        assert keep.sum() < mb.support_mask.sum()
    a, b = pruned(ep), plain(manual)
    for m in ep:
        torch.testing.assert_close(a.params[m], b.params[m], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-10, atol=0)


def test_pruned_learner_with_bootstrap_trains(make_learner, make_ep):
    learner = make_learner("mia")
    learner.pruning = PruningSpec(keep_ratio=0.5, bootstrap_steps=2, bootstrap_weight=1.0)
    ep = make_ep(batch=3)
    out = learner(ep)
    assert out.bootstrap is not None and out.bootstrap.dim() == 0
    assert torch.isfinite(out.bootstrap) and out.bootstrap.item() > 0
    assert not out.bootstrap.requires_grad
    query = sum(out.losses.values())
    torch.testing.assert_close(out.loss.detach(), query + out.bootstrap, rtol=1e-12, atol=0)
    out.loss.backward()
    grads = [p.grad for p in learner.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert learner.inrs["sine"].context_init.grad.abs().sum() > 0


def test_bootstrap_target_is_more_steps_on_the_full_support(make_learner, make_ep):
    learner = make_learner("cavia")
    learner.pruning = PruningSpec(keep_ratio=0.5, bootstrap_steps=2, bootstrap_weight=0.5)
    ep = make_ep(batch=3)
    out = learner(ep)
    # Reference target: the same rule run for two more unpruned steps from the adapted params.
    target = {k: v.detach() for k, v in out.params.items()}
    for _ in range(2):
        target = {k: v.requires_grad_(True) for k, v in target.items()}
        loss = 0.0
        for m, mb in ep.items():
            pred = learner.inrs[m](mb.support_x, target[m])
            se = ((pred - mb.support_y) ** 2).mean(-1) * mb.support_mask
            loss = loss + (se.sum(1) / mb.support_mask.sum(1)).sum()
        grads = torch.autograd.grad(loss, [target[m] for m in ep])
        target = {
            m: (target[m] - learner.rule.lr * g).detach() for m, g in zip(ep, grads, strict=True)
        }
    ref = sum((out.params[m].detach() - target[m]).square().mean() for m in ep)
    torch.testing.assert_close(out.bootstrap, ref, rtol=1e-9, atol=0)


def test_builder_passes_pruning_spec(make_learner):
    learner = make_learner("cavia", overrides=[*PRUNE, "method.pruning.keep_ratio=0.25"])
    assert isinstance(learner, MetaLearner)
    assert learner.pruning == PruningSpec(0.25, 0, 0.0)

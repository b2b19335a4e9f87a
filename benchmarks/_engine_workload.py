"""The engine benchmark's workload, its per-signal reference loop and FLOP counting.

Workload: ``B`` signals x ``M`` modalities x ``P`` points on a shared 1-D grid, support =
query = all points; Composers INR 5 x 128 with a rank-8 context per modality, CAVIA (plain
SGD on the context, inner lr 1.0) or MIA (State Fusion Transformer), ``K`` inner steps.
The support coordinates are stored per signal, ``(B, P, 1)``, as a real episode has them;
the query coordinates are shared, ``(1, P, 1)``. The engine only exploits shared
coordinates where a tensor has batch dimension 1, so the support side runs per signal.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from mia_core.adapt import SGD, StateFusionTransformer
from mia_core.data.episode import Episode, ModalityBatch
from mia_core.data.synthetic1d import generate_synthetic1d
from mia_core.inr import ComposersINR
from mia_core.meta.learner import MetaLearner, PruningSpec, adapted_shapes

MODALITIES = ("sine", "gaussian", "tanh", "relu")


def make_episode(batch: int, modalities: int, points: int, seed: int = 0) -> Episode:
    """Episode on a shared 1-D grid; support = query = all points (see module docstring)."""
    names = MODALITIES[:modalities]
    sig = generate_synthetic1d(num_functions=batch, num_points=points, modalities=names, seed=seed)
    x = sig.x.unsqueeze(0)  # (1, P, 1)
    ep = {}
    for m in names:
        y = sig.values[m]
        ones = torch.ones(batch, points)
        ep[m] = ModalityBatch(
            support_x=x.expand(batch, points, 1).contiguous(),  # per-signal, as in training
            support_y=y.clone(),
            support_mask=ones.clone(),
            query_x=x,  # shared by all signals
            query_y=y,
            query_mask=ones,
            query_support=ones.clone(),
            scale=sig.scale,
        )
    return ep


def make_learner(
    modalities: int,
    rule: str = "sgd",
    steps: int = 3,
    first_order: bool = False,
    keep_ratio: float | None = None,
    seed: int = 0,
) -> MetaLearner:
    """Composers 5x128 rank-8 per modality; CAVIA (``sgd``) or MIA (``sft``), inner lr 1.0."""
    torch.manual_seed(seed)
    inrs = {}
    for m in MODALITIES[:modalities]:
        inr = ComposersINR(1, 1, 128, 5, rank=8)
        with torch.no_grad():
            inr.context_init.normal_(0.0, 1.0)  # the composers config: context_init_std 1.0
        inrs[m] = inr
    shapes, groups = adapted_shapes(inrs, "context")
    if rule == "sgd":
        upd = SGD(shapes, groups, lr=1.0)
    else:  # paper defaults: D_z 192, 3 heads, MLP 192, L1 = L2 = 1
        upd = StateFusionTransformer(
            shapes, groups, dim=192, heads=3, mlp_dim=192, usft_layers=1, msft_layers=1, lr=1.0
        )
    pruning = PruningSpec(keep_ratio=keep_ratio) if keep_ratio is not None else None
    return MetaLearner(inrs, upd, steps, "context", first_order, pruning)


def engine_iteration(learner: MetaLearner, episode: Episode) -> torch.Tensor:
    """One meta-iteration without the optimizer step: forward + meta-gradient backward."""
    for p in learner.parameters():
        p.grad = None
    out = learner(episode)
    out.loss.backward()
    return out.loss.detach()


def loop_iteration(learner: MetaLearner, episode: Episode, lr: float = 1.0) -> torch.Tensor:
    """Reference: the same math, one signal and one modality at a time.

    Every (signal, modality) pair adapts its own ``(1, S, D)`` context with
    ``autograd.grad(create_graph=True)`` through the same INR modules; the outer loss is
    the mean over signals of the sum over modalities of the query MSE.
    """
    for p in learner.parameters():
        p.grad = None
    total = None
    for m in learner.modalities:
        inr, mb = learner.inrs[m], episode[m]
        for b in range(mb.batch_size):
            xs, ys = mb.support_x[b : b + 1], mb.support_y[b : b + 1]
            ctx = inr.context_init.unsqueeze(0)
            for _ in range(learner.inner_steps):
                inner = (inr(xs, ctx) - ys).square().mean()
                (g,) = torch.autograd.grad(inner, ctx, create_graph=True)
                ctx = ctx - lr * g
            xq = mb.query_x[b : b + 1] if mb.query_x.shape[0] > 1 else mb.query_x
            q = (inr(xq, ctx) - mb.query_y[b : b + 1]).square().mean()
            total = q if total is None else total + q
    loss = total / episode[learner.modalities[0]].batch_size
    loss.backward()
    return loss.detach()


def grads_of(learner: MetaLearner) -> dict[str, torch.Tensor]:
    """Copies of the meta-gradients by parameter name."""
    return {k: p.grad.clone() for k, p in learner.named_parameters() if p.grad is not None}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``max_k max|a_k - b_k| / max|b_k|`` over the union of names (missing = inf)."""
    if set(a) != set(b):
        return float("inf")
    worst = 0.0
    for k in a:
        scale = b[k].abs().max().item()
        diff = (a[k] - b[k]).abs().max().item()
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def check_same_math(learner: MetaLearner, episode: Episode, f64_batch: int) -> dict:
    """Engine vs per-signal loop: float64 on a few signals, float32 on the whole batch."""
    out: dict = {}
    small = {
        m: mb.select(slice(0, f64_batch)).to("cpu", torch.float64) for m, mb in episode.items()
    }
    l64 = copy.deepcopy(learner).double()
    le, ge = engine_iteration(l64, small), grads_of(l64)
    ll, gl = loop_iteration(l64, small), grads_of(l64)
    out["f64_batch"] = f64_batch
    out["f64_loss_rel_diff"] = abs(le.item() - ll.item()) / abs(ll.item())
    out["f64_grad_max_rel_diff"] = max_rel_diff(ge, gl)
    le, ge = engine_iteration(learner, episode), grads_of(learner)
    ll, gl = loop_iteration(learner, episode), grads_of(learner)
    out.update(
        tensors=len(ge),
        loss_engine=le.item(),
        loss_loop=ll.item(),
        loss_rel_diff=abs(le.item() - ll.item()) / abs(ll.item()),
        grad_max_rel_diff=max_rel_diff(ge, gl),
    )
    return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call as counted by torch's FlopCounterMode (matmul-like ops)."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_runs(quick: bool) -> dict[str, tuple[Callable[[], None], int]]:
    """fp32 matmul workloads (callable, FLOPs per call) under the current precision.

    Shapes: a large square GEMM and the INR's hidden layer over all points of the batch,
    ``(B*P, 128) @ (128, 128)`` for B*P = 12800 and 51200; ~2 GFLOP per call.
    """
    shapes = (
        [(512, 512, 512)] if quick else [(2048, 2048, 2048), (12800, 128, 128), (51200, 128, 128)]
    )
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        c = torch.empty(m, n)
        reps = 2 if quick else max(1, int(2e9 // (2 * m * k * n)))

        def run(a=a, b=b, c=c, reps=reps) -> None:
            for _ in range(reps):
                torch.mm(a, b, out=c)

        out[f"({m}x{k})@({k}x{n})"] = (run, 2 * m * k * n * reps)
    return out

"""Meta-Experience Replay (MER, Riemer et al., ICLR 2019) as one step of a task's loop.

MER keeps a replay buffer like ER but, instead of adding the replayed loss to the
current one, it takes *sequential* SGD steps on the current batch and on the replayed
batches and then pulls the weights back towards where the step started (Reptile):

    theta_0 = theta
    for b in shuffled(batches):            # the current task + one batch per past task
        theta = theta - alpha * grad L_b(theta)
    theta = theta_0 + beta * (theta - theta_0)

To second order this maximises the alignment of the batches' gradients (the Reptile
argument), which is what reduces interference with past tasks. Riemer et al.'s
Algorithm 1 also has within-batch steps on single examples and a second (across-batch)
interpolation; here each batch is the whole current task (or one past task's stored
points), so the two interpolations collapse into one with rate ``beta``
(``method.mcl.mer_beta``). The order of the batches is drawn from the learner's
generator, so a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.mcl.fim import weighted_mse

Params = dict[str, Tensor]


def replay_losses(
    inr: INR, params: Params, buffer: list[tuple[Tensor, Tensor, Tensor]]
) -> list[Callable[[Params], Tensor]]:
    """One loss per stored past task: the masked MSE of its ``(coords, values, mask)``.

    Each takes the adapted tensors, which override the matching entries of ``params``.
    """

    def loss(buf: tuple[Tensor, Tensor, Tensor]) -> Callable[[Params], Tensor]:
        coords, values, mask = buf
        return lambda a: weighted_mse(inr(coords, None, {**params, **a}), values, mask, None).sum()

    return [loss(b) for b in buffer]


def mer_step(
    adapted: Params,
    batch_losses: list[Callable[[Params], Tensor]],
    rule: Callable,
    rule_state: object,
    step: int,
    beta: float,
    create_graph: bool,
    detach: bool,
    generator: torch.Generator,
) -> tuple[Params, object]:
    """One MER step: sequential updates on every batch, then a Reptile interpolation.

    Args:
        adapted: the adapted tensors ``theta`` (per-signal, leading batch dimension).
        batch_losses: one scalar loss per batch (index 0 the current task); each takes
            the adapted tensors.
        rule: the update rule (``mia_core.adapt`` SGD or Adam), called as
            ``rule(params, grads, state, k)``.
        rule_state: the rule's state, threaded through the sequential sub-steps.
        step: index of this MER step in the task's loop.
        beta: Reptile rate (1 = plain sequential replay, no pull-back).
        create_graph: keep second-order terms (meta-training).
        detach: cut the graph after every sub-step (test time).
        generator: draws the order of the batches.

    Returns:
        The interpolated tensors and the rule's state after the sub-steps.
    """
    keys = list(adapted)
    start = adapted
    order = torch.randperm(len(batch_losses), generator=generator).tolist()
    for j, b in enumerate(order):
        loss = batch_losses[b](adapted)
        grads = torch.autograd.grad(loss, [adapted[n] for n in keys], create_graph=create_graph)
        sub = step * len(batch_losses) + j
        adapted, rule_state, _ = rule(adapted, dict(zip(keys, grads, strict=True)), rule_state, sub)
        if detach:
            adapted = {n: p.detach().requires_grad_(True) for n, p in adapted.items()}
    out = {n: start[n] + beta * (adapted[n] - start[n]) for n in keys}
    return out, rule_state

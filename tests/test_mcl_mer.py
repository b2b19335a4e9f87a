"""MER (Meta-Experience Replay): the step against hand-computed updates, its buffer."""

import torch
from test_mcl import _learner, _seq

from mia_core.adapt import SGD
from mia_core.mcl.mer import mer_step


def _quadratic(target: torch.Tensor):
    return lambda a: 0.5 * (a["w"] - target).square().sum()


def test_mer_step_is_sequential_sgd_then_reptile():
    targets = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]])]
    losses = [_quadratic(t) for t in targets]
    w0 = torch.tensor([[0.2, 0.4]], requires_grad=True)
    rule = SGD.for_params({"w": w0}, lr=0.3)
    gen = torch.Generator().manual_seed(5)
    order = torch.randperm(2, generator=torch.Generator().manual_seed(5)).tolist()
    out, _ = mer_step({"w": w0}, losses, rule, rule.init_state({"w": w0}), 0, 0.4, False, True, gen)
    w = w0.detach().clone()
    for b in order:  # d/dw 0.5 |w - t|^2 = w - t
        w = w - 0.3 * (w - targets[b])
    expected = w0.detach() + 0.4 * (w - w0.detach())
    torch.testing.assert_close(out["w"].detach(), expected)


def test_mer_without_replay_is_sgd_at_beta_times_the_rate():
    """On the first task the buffer is empty: one batch, so a MER step with rate lr and
    Reptile beta is an SGD step with rate beta * lr."""
    seq = _seq(batch=2, shape=(6, 6), tasks=3)
    task = seq.task(0)
    mer = _learner("mer", seq, ["method.mcl.mer_beta=0.25"])
    cl = _learner("maml_cl", seq)
    st_m = mer.learn_task(mer.start(seq, False), task, 3, False, lr=0.2)
    st_c = cl.learn_task(cl.start(seq, False), task, 3, False, lr=0.05)
    for n in st_c.params:
        torch.testing.assert_close(st_m.params[n], st_c.params[n])


def test_mer_replays_past_tasks_and_remembers_more_than_plain_sequential_learning():
    seq = _seq(batch=2, shape=(8, 8), tasks=3)
    budgets = [40]
    extra = ["method.mcl.replay_points=16", "method.mcl.mer_beta=1.0"]
    mer = _learner("mer", seq, extra).continual_eval(seq, budgets, 1.0, lr=0.05)[40]
    cl = _learner("maml_cl", seq).continual_eval(seq, budgets, 1.0, lr=0.05)[40]
    st = _learner("mer", seq, extra).run(seq, 2, meta=False)
    assert len(st.buffer) == 3 and st.buffer[0][0].shape[1] == 16
    # the first task's PSNR under the final model: replay keeps it above plain CL's
    assert (mer[-1, 0] > cl[-1, 0]).all(), (mer[-1, 0], cl[-1, 0])

"""bf16 autocast (``run.amp``) against float64: the inner loops stay out of it.

``run.amp`` wraps the training step in bf16 autocast. With the second-order inner loop
inside it, the meta-gradients of small Composers learners were 3.4e-2 (relative norm)
off float64 on CPU, ALFA on Functa 1.6e-1; with the inner loop in float32 and only the
outer (query) forward autocast: 1.3e-2 (CAVIA/MIA, Composers), 4.6e-3 (CAVIA, SIREN),
against 4e-7 for float32 throughout. CPU autocast stands in for CUDA's here (same
bf16 rounding; the kernels differ).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mia_core.mwt.siren import MetaSiren

MODEL = ["model.width=32", "model.context_dim=32", "model.context_tokens=4", "model.depth=4"]
MODS = ("sine", "tanh", "relu")
TOLERANCE = 2.5e-2  # relative norm of the meta-gradient error under bf16 autocast


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


class MatmulDtypes(TorchDispatchMode):
    """Records the dtype of every matmul (forward and backward), per phase."""

    OPS = ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear")

    def __init__(self) -> None:
        super().__init__()
        self.phase, self.seen = "outer", {"inner": set(), "outer": set()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in self.OPS:
            self.seen[self.phase].add(out.dtype)
        return out

    @contextlib.contextmanager
    def inner(self):
        self.phase = "inner"
        try:
            yield
        finally:
            self.phase = "outer"


@pytest.mark.parametrize(
    "method, family", [("cavia", "composers"), ("mia", "composers"), ("maml", "siren")]
)
def test_the_inner_loop_runs_in_float32_under_autocast(
    method, family, make_learner, make_ep, monkeypatch
):
    learner = make_learner(method, family, MODS, MODEL, dtype=torch.float32)
    ep = make_ep(batch=2, num_points=20, modalities=MODS, dtype=torch.float32)
    mode = MatmulDtypes()
    adapt = learner.adapt

    def traced(*args, **kwargs):
        with mode.inner():
            return adapt(*args, **kwargs)

    monkeypatch.setattr(learner, "adapt", traced)
    with bf16(), mode:
        out = learner(ep)
    assert mode.seen["inner"] == {torch.float32}  # support forwards and inner gradients
    assert torch.bfloat16 in mode.seen["outer"]  # the query forward is autocast
    assert out.loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in out.params.values())


@pytest.mark.parametrize(
    "method, family", [("cavia", "composers"), ("mia", "composers"), ("cavia", "siren")]
)
def test_bf16_autocast_meta_gradients_are_near_float64(method, family, make_learner, make_ep):
    """Measured: 1.3e-2 (Composers), 4.6e-3 (SIREN); the inner loop under bf16: 3.4e-2."""
    ref = make_learner(method, family, MODS, MODEL)
    ep64 = make_ep(batch=4, num_points=40, modalities=MODS)
    ep32 = {m: mb.to("cpu", torch.float32) for m, mb in ep64.items()}
    f32 = copy.deepcopy(ref).float()
    params64, params32 = list(ref.parameters()), list(f32.parameters())
    g64 = torch.autograd.grad(ref(ep64).loss, params64, allow_unused=True)
    with bf16():
        loss = f32(ep32).loss
    g16 = torch.autograd.grad(loss, params32, allow_unused=True)

    def flat(grads, params):
        return torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).double().flatten()
                for g, p in zip(grads, params, strict=True)
            ]
        )

    a, b = flat(g16, params32), flat(g64, params64)
    rel = ((a - b).norm() / b.norm()).item()
    assert rel < TOLERANCE, rel


def test_mwt_inner_fit_runs_in_float32_under_autocast():
    siren = MetaSiren(2, 1, 8, 3, 10.0, 2)
    coords, values = torch.rand(16, 2) * 2 - 1, torch.rand(3, 16, 1)
    mode = MatmulDtypes()
    with bf16(), mode:
        with mode.inner():
            params, _ = siren.adapt(coords, values)
        siren(params, coords.unsqueeze(0))
    assert mode.seen == {"inner": {torch.float32}, "outer": {torch.bfloat16}}
    assert all(p.dtype == torch.float32 for p in params)

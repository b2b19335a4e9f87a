"""float32 with ``medium`` matmul precision against a float64 reference."""

import copy

import pytest
import torch

from mia_core.runtime import cpu_has_bf16_matmul, set_matmul_precision

MODEL = ["model.width=32", "model.context_dim=32", "model.context_tokens=4", "model.depth=4"]


@pytest.fixture
def medium_precision():
    previous = torch.get_float32_matmul_precision()
    set_matmul_precision("medium")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def meta_grads(learner, episode):
    out = learner(episode)
    return out.loss, torch.autograd.grad(out.loss, list(learner.parameters()))


@pytest.mark.skipif(
    cpu_has_bf16_matmul(), reason="medium means bf16 matmuls on this CPU (AMX / AVX512-BF16)"
)
@pytest.mark.parametrize("method", ["cavia", "mia"])
def test_medium_precision_meta_gradients_match_float64(
    method, make_learner, make_ep, medium_precision
):
    assert torch.get_float32_matmul_precision() == "medium"
    check_against_float64(method, make_learner, make_ep)


@pytest.mark.parametrize("method", ["cavia", "mia"])
def test_highest_precision_meta_gradients_match_float64_on_every_cpu(method, make_learner, make_ep):
    previous = torch.get_float32_matmul_precision()
    set_matmul_precision("highest")
    try:
        check_against_float64(method, make_learner, make_ep)
    finally:
        torch.set_float32_matmul_precision(previous)


def check_against_float64(method, make_learner, make_ep):
    """float32 meta-loss and meta-gradients of a small learner within 1e-5 of float64."""
    ref_learner = make_learner(method, modalities=("sine", "tanh", "relu"), overrides=MODEL)
    ep64 = make_ep(batch=4, num_points=40, modalities=("sine", "tanh", "relu"))
    ep32 = {m: mb.to("cpu", torch.float32) for m, mb in ep64.items()}
    f32 = copy.deepcopy(ref_learner).float()
    loss32, g32 = meta_grads(f32, ep32)
    loss64, g64 = meta_grads(ref_learner, ep64)
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-5, atol=0)
    flat32 = torch.cat([g.double().flatten() for g in g32])
    flat64 = torch.cat([g.flatten() for g in g64])
    rel = ((flat32 - flat64).norm() / flat64.norm()).item()
    assert rel < 1e-5, rel
    names = [n for n, _ in ref_learner.named_parameters()]
    for name, a, b in zip(names, g32, g64, strict=True):
        if b.norm() > 1e-6 * flat64.norm():  # every tensor that carries gradient signal
            assert (a.double() - b).norm() / b.norm() < 1e-4, name


def test_set_matmul_precision_validates_and_sets():
    previous = torch.get_float32_matmul_precision()
    try:
        set_matmul_precision("high")
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(ValueError, match="matmul precision"):
            set_matmul_precision("low")
    finally:
        torch.set_float32_matmul_precision(previous)

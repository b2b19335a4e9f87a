"""Shared factories for the engine tests: tiny learners and synthetic episodes."""

import contextlib

import pytest
import torch

from mia_core.builders import build_learner
from mia_core.config import load_config
from mia_core.data import generate_synthetic1d, make_episode

# The tensors here are tiny: intra-op threads only add OpenMP spin-waiting, which turns
# into minutes when another process shares the two cores.
torch.set_num_threads(1)

TINY = [
    "model.width=16",
    "model.context_dim=16",
    "model.depth=3",
    "model.context_tokens=3",
    "model.context_init_std=0.5",
    "model.omega0=3.0",
    "method.inner_steps=2",
    "method.alfa_hidden=8",
    "method.sft.dim=8",
    "method.sft.mlp_dim=8",
    "method.sft.heads=2",
]


@contextlib.contextmanager
def default_dtype(dtype):
    """Build modules directly in ``dtype`` (no float32 rounding of their initial values)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _learner(
    method="cavia",
    family="composers",
    modalities=("sine", "tanh"),
    overrides=(),
    *,
    dtype=torch.float64,
    seed=0,
):
    cfg = load_config(None, [*TINY, f"method.name={method}", f"model.family={family}", *overrides])
    torch.manual_seed(seed)
    with default_dtype(dtype):
        return build_learner(cfg.model, cfg.method, {m: (1, 1) for m in modalities})


def _episode(
    batch=3,
    num_points=20,
    modalities=("sine", "tanh"),
    ratio=(0.2, 0.6),
    *,
    dtype=torch.float64,
    seed=0,
):
    signals = generate_synthetic1d(batch, num_points, modalities=tuple(modalities), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    episode = make_episode(signals, torch.arange(batch), {m: ratio for m in modalities}, gen)
    return {m: mb.to("cpu", dtype) for m, mb in episode.items()}


@pytest.fixture
def make_learner():
    """``make_learner(method, family, modalities, overrides, dtype=, seed=)``: tiny learner."""
    return _learner


@pytest.fixture
def make_ep():
    """``make_ep(batch, num_points, modalities, ratio, dtype=, seed=)``: synthetic episode."""
    return _episode


@pytest.fixture
def float64_default():
    """Run a test with float64 as the default dtype (restored afterwards)."""
    with default_dtype(torch.float64):
        yield

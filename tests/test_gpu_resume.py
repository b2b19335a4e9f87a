"""Resuming where the checkpoint's device is not the CPU (the GPU path, proven on CPU).

Torch's ``set_rng_state`` takes only a CPU ``ByteTensor``: a checkpoint loaded onto the
worker's device (CUDA) crashed every GPU resume. ``meta`` stands in for CUDA here: a state
mapped there holds no data, so any path that maps the checkpoint to the worker's device
fails, and only a CPU load followed by ``load_state_dict`` works.
"""

from __future__ import annotations

import torch
from test_training_smoke import tiny_config, train_local

import pipelines.engine.local as local_engine
from mia_core.config import load_config
from pipelines.engine import ray_train
from pipelines.engine.checkpoint import load_checkpoint, save_checkpoint
from pipelines.engine.task import Task, WorkerContext
from pipelines.engine.trainer import Trainer

CPU = torch.device("cpu")


class _Linear(Task):
    """The smallest task: a linear map fitted to noise drawn from torch's RNG."""

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.model = torch.nn.Linear(3, 2).to(ctx.device)

    def batches(self, epoch, skip):
        return iter(())

    def loss(self, batch, step):
        x = torch.randn(4, 3)
        return self.model(x).square().mean(), {}

    def validate(self):
        return 0.0, {}


def _trainer(steps: int = 0) -> Trainer:
    cfg = load_config("configs/experiments/default.yaml", ["run.steps=10"])
    torch.manual_seed(0)
    trainer = Trainer(_Linear(cfg, WorkerContext(CPU)), cfg)
    for _ in range(steps):
        trainer.train_step(None)
    return trainer


def test_local_resume_loads_the_checkpoint_on_cpu_whatever_the_device(tmp_path, monkeypatch):
    """The run's device is elsewhere (``meta`` for CUDA); the resume still matches exactly."""
    train_local(tiny_config(tmp_path, "run.steps=2"), log=lambda s: None)
    # The worker's "device" is meta for the checkpoint load; its model still runs on CPU.
    monkeypatch.setattr(local_engine, "resolve_device", lambda _name: torch.device("meta"))
    monkeypatch.setattr(
        local_engine, "WorkerContext", lambda _device, *a, **k: WorkerContext(CPU, *a, **k)
    )
    logs: list[str] = []
    res = train_local(tiny_config(tmp_path, "run.steps=4"), log=logs.append)
    assert res.step == 4 and any(line.startswith("resumed at step 2") for line in logs)
    monkeypatch.undo()
    straight = tmp_path / "straight"
    train_local(tiny_config(straight, "run.steps=4"), log=lambda s: None)
    a = load_checkpoint(tmp_path / "default/checkpoints/last.pt")["model"]
    b = load_checkpoint(straight / "default/checkpoints/last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_ray_worker_restores_the_checkpoint_on_cpu(tmp_path, monkeypatch):
    """A Ray Train restart: the restored state is on the CPU and resumes bit for bit."""
    import ray.train

    trainer = _trainer(steps=2)
    save_checkpoint(trainer.state_dict(), tmp_path / ray_train.STATE_FILE)
    expected = [trainer.train_step(None)["loss"] for _ in range(2)]
    ckpt = ray.train.Checkpoint.from_directory(str(tmp_path))
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ckpt)
    state = ray_train._restored_state()
    devices = {v.device.type for v in state["model"].values()} | {state["torch_rng"].device.type}
    assert devices == {"cpu"}
    resumed = _trainer()
    resumed.load_state_dict(state)
    assert [resumed.train_step(None)["loss"] for _ in range(2)] == expected


def test_load_state_dict_keeps_optimizer_steps_on_cpu_and_rng_as_cpu_bytes(monkeypatch):
    """Moments follow the parameters; step counters stay CPU tensors (no host syncs)."""
    state = _trainer(steps=1).state_dict()
    calls = []
    real = torch.set_rng_state
    monkeypatch.setattr(torch, "set_rng_state", lambda t: calls.append(t) or real(t))
    state["torch_rng"] = state["torch_rng"].to(torch.int64)  # a state given back in another dtype
    trainer = _trainer()
    trainer.load_state_dict(state)
    assert calls and calls[0].dtype == torch.uint8 and calls[0].device == CPU
    for st in trainer.opt.state.values():
        assert st["step"].device == CPU and st["exp_avg"].device == CPU


def test_cuda_rng_state_is_saved_and_restored_on_a_cuda_worker(monkeypatch):
    """``inner_points`` draws on CUDA: its generator is part of an exact resume there."""
    trainer = _trainer(steps=1)
    assert "cuda_rng" not in trainer.state_dict()  # a CPU worker has none
    saved = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": saved.clone())
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda t, device="cuda": restored.append((t, device))
    )
    trainer.device = torch.device("cuda", 0)  # what a GPU worker's trainer holds
    state = trainer.state_dict()
    assert torch.equal(state["cuda_rng"], saved)
    other = _trainer()
    other.device = torch.device("cuda", 0)
    other.load_state_dict(state)
    ((t, device),) = restored
    assert torch.equal(t, saved) and t.device == CPU and torch.device(device).type == "cuda"
    # a CUDA checkpoint resumed on a CPU-only process ignores the CUDA generator
    _trainer().load_state_dict(state)
    assert len(restored) == 1

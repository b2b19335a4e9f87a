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


# --- shared services: one Ray instance and one S3 server per test session ---------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """A local Ray instance shared by every test that needs one (2 CPUs, small store)."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's server mode) on 127.0.0.1:<free port>.

    Yields a dict with ``endpoint_url``, ``key``, ``secret`` and ``storage_options``
    (what fsspec/s3fs need), and a ``make_bucket(name)`` helper.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    key, secret = "testing-key-id", "testing-secret-value"

    def make_bucket(name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        ).create_bucket(Bucket=name)

    yield {
        "endpoint_url": endpoint,
        "key": key,
        "secret": secret,
        "storage_options": {"key": key, "secret": secret, "endpoint_url": endpoint},
        "make_bucket": make_bucket,
    }
    proc.terminate()
    proc.wait(timeout=10)

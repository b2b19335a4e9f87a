"""Episodes built ahead on a thread: same batches, same order, errors where they happened."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from mia_core.data import generate_synthetic1d, make_episode
from pipelines.data.prefetch import prefetch_episodes


def _episodes(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad batch {i}")
        sig = generate_synthetic1d(2, 16, modalities=("sine",), seed=i)
        gen = torch.Generator().manual_seed(i)
        yield make_episode(sig, torch.arange(2), {"sine": (0.2, 0.5)}, gen)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_batches_in_the_same_order(depth):
    ref = list(_episodes(5))
    got = list(prefetch_episodes(_episodes(5), "cpu", depth))
    assert len(got) == 5
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a["sine"].support_y, b["sine"].support_y)
        torch.testing.assert_close(a["sine"].query_mask, b["sine"].query_mask)


def test_batches_arrive_on_the_target_device():
    (batch,) = prefetch_episodes(_episodes(1), "meta", 2)
    assert batch["sine"].support_x.device.type == "meta"


def test_producer_errors_surface_at_their_batch():
    it = prefetch_episodes(_episodes(5, fail_at=3), "cpu", 2)
    assert len([next(it) for _ in range(3)]) == 3
    with pytest.raises(ValueError, match="bad batch 3"):
        next(it)


def test_closing_early_stops_the_thread():
    before = threading.active_count()
    it = prefetch_episodes(_episodes(50), "cpu", 1)
    next(it)
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before

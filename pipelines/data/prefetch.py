"""Episodes built ahead of the training step, on a background thread, and copied without blocking.

The training loop used to build each episode (gather, support draws, padding: NumPy in
the training process) and then copy it to the device with blocking transfers, so the
accelerator waited for the CPU every step. :func:`prefetch_episodes` runs the episode
iterator on a thread ``depth`` batches ahead (NumPy and torch release the GIL in their
kernels, so building overlaps the step), pins each batch's memory when the target is a
CUDA device and starts its copy with ``non_blocking=True``; the consumer receives batches
already on the device, in the producer's order (deterministic, as before). Ray Data's own
``prefetch_batches`` already overlaps the shard's reads; this overlaps what follows them.

Errors raised by the producer are re-raised in the consumer at the batch where they
happened; closing the generator (a finished or failed step loop) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import torch

from mia_core.data import Episode

_DONE = object()


def to_device(batch: Episode, device: torch.device, pin: bool) -> Episode:
    """``batch`` on ``device``: pinned and copied asynchronously when ``pin`` (CUDA)."""
    if pin:
        batch = {m: b.pin_memory() for m, b in batch.items()}
    return {m: b.to(device, non_blocking=pin) for m, b in batch.items()}


def prefetch_episodes(
    batches: Iterable[Episode], device: torch.device | str, depth: int = 2
) -> Iterator[Episode]:
    """Yield ``batches`` moved to ``device``, built up to ``depth`` batches ahead.

    Args:
        batches: the episode iterator (a store's or a Ray Data shard's).
        device: where the training step runs.
        depth: batches built ahead; 0 builds and copies in the caller (no thread).
    """
    device = torch.device(device)
    pin = device.type == "cuda"
    if depth <= 0:
        for batch in batches:
            yield to_device(batch, device, pin)
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                item = to_device(batch, device, pin)
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as err:  # re-raised in the consumer, at this batch
            slots.put(err)

    thread = threading.Thread(target=produce, name="episode-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)

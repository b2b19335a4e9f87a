"""mnist: MNIST / Fashion-MNIST from their IDX files (``*-idx3-ubyte``, optionally ``.gz``).

``--folder DIR`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may end in ``.gz``), as
distributed by LeCun et al. / Zalando. The ``t10k`` files are the test split; a seeded
``--val-fraction`` of the training images is validation. ``--classes`` names the
classes (digits by default; ``fashion`` for Fashion-MNIST's names). Layout:
``pipelines/data/builders/labelled.py``.

IDX format: big-endian; magic ``0x00 0x00 <type> <ndim>`` (type ``0x08`` = ubyte), then
``ndim`` int32 sizes, then the data.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np

from pipelines.data.builders.labelled import add_common_arguments, write_labelled_store
from pipelines.data.stores import StoreLocation

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    p.add_argument("--folder", type=Path, required=True, help="folder with the four IDX files")
    p.add_argument("--classes", default="digits", choices=("digits", "fashion"))
    add_common_arguments(p)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or gzip); malformed files raise ``ValueError`` naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(x) for x in np.frombuffer(raw[4:header], ">i4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header says {dims} ({expected} bytes), file has {len(raw) - header}"
        )
    return np.frombuffer(raw[header:], dtype).reshape(dims)


def find(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``."""
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: missing {stem}[.gz]")


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Read the train and t10k IDX pairs and write the labelled store."""
    t0 = time.perf_counter()
    if not args.folder.is_dir():
        raise FileNotFoundError(f"--folder {args.folder} is not a directory")
    images, labels = [], []
    for part in ("train", "t10k"):
        img = read_idx(find(args.folder, f"{part}-images-idx3-ubyte"))
        lab = read_idx(find(args.folder, f"{part}-labels-idx1-ubyte"))
        if img.ndim != 3 or lab.ndim != 1 or len(img) != len(lab):
            raise ValueError(
                f"{args.folder}: {part} images {img.shape} and labels {lab.shape} do not match"
            )
        images.append(img)
        labels.append(lab)
    is_test = np.concatenate([np.zeros(len(labels[0]), bool), np.ones(len(labels[1]), bool)])
    classes = list(FASHION) if args.classes == "fashion" else [str(i) for i in range(10)]
    summary = write_labelled_store(
        location,
        np.concatenate(images)[..., None],
        np.concatenate(labels),
        is_test,
        classes,
        args,
        {"source": f"mnist idx ({args.classes})", "input": str(args.folder)},
    )
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}

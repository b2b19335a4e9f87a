"""Rate-distortion curves of standard compressors (ZFP, SZ3, lossless) over their whole range.

Every codec is measured on the same :class:`~pipelines.codecs.rd_metrics.RDFields` (the
store's normalised values of the evaluated time steps) and scored by the same
:func:`~pipelines.codecs.rd_metrics.quality`, so an INR code's point and a compressor's
curve are comparable.

- ``zfp`` (fixed accuracy) and ``sz3`` (absolute error bound) compress each (time step,
  variable, level) on its own, in its natural dimensionality: a 2-D ``(lat, lon)`` or a 3-D
  ``(z, y, x)`` scalar array, never one array with a channel axis.
- ``sz3_series`` compresses each variable's (and level's) block of all evaluated time
  steps as one ``(time, lat, lon)`` (or ``(time, z, y, x)``) array: how a climate user
  archives a series.
- Missing points are filled with the mean of the array's valid values (a zero fill makes
  edges that cost bits) and left out of the errors; the valid mask itself is not counted
  in the bytes (a decoder knows it, as for the codes).
- Ratio = float32 bytes of all time steps, levels and variables / compressed bytes; bits
  per value = 32 / ratio.
- :func:`lossless_point`: zstd (level 19) and Blosc-zstd with byte shuffle (numcodecs) on
  each variable's raw float32 block (missing values included), roundtrip checked.

The error bound is absolute in normalised units, one bound for all variables (as the
encoder's PSNR uses one ``psnr_range``); the default sweep is ``1e-5 .. 0.5`` of
``RDFields.span``, extended by doublings while the ratio still grows. Points are plain
dicts of plain floats: ``json.dumps`` writes them (NaN / Infinity as in
``benchmarks/results/encode.json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.codecs.compressors import load_codec
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rd_metrics import RDFields
from pipelines.reports.plots import save_figure

LOSSY = ("zfp", "sz3", "sz3_series")
DEFAULT_REL_BOUNDS = tuple(float(b) for b in np.logspace(-5, math.log10(0.5), 14))
MAX_REL_BOUND = 16.0  # the extension's last doubling (bounds beyond the range)
GROWTH = 1.02  # the extension stops when a doubling gains less than 2% ratio
LOSSLESS_DASHES: tuple[Any, ...] = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


@dataclass
class Compressed:
    """One codec at one bound on a field set.

    Attributes:
        decoded: variable -> ``(T, C, *grid)`` decoded values (NaN where nothing was stored).
        nbytes: compressed bytes in all.
        shapes: the shape of each array handed to the compressor.
        blobs: the compressed arrays, in ``shapes``' order.
    """

    decoded: dict[str, np.ndarray] = field(default_factory=dict)
    nbytes: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)


def _filled(a: np.ndarray, default: float = 0.0) -> np.ndarray:
    """Contiguous float32 ``a`` with its non-finite values set to the mean of the others."""
    ok = np.isfinite(a)
    fill = float(a[ok].mean()) if ok.any() else default
    return np.ascontiguousarray(np.where(ok, a, fill), np.float32)


def compress_fields(name: str, fields: RDFields, bound: float) -> Compressed:
    """Compress and decompress every array of ``fields`` with ``name`` at absolute ``bound``.

    Raises:
        EncodeError: an unknown compressor name.
        CompressorMissing: its package is not installed.
    """
    if name not in LOSSY:
        raise EncodeError(f"compressor {name!r}: choose one of {', '.join(LOSSY)}")
    compress, decompress = load_codec("sz3" if name == "sz3_series" else name)
    out = Compressed()

    def run(a: np.ndarray) -> np.ndarray:
        blob = compress(a, float(bound))
        out.nbytes += len(blob)
        out.shapes.append(a.shape)
        out.blobs.append(blob)
        return np.asarray(decompress(blob, a)).reshape(a.shape)

    for v, arr in fields.values.items():
        back = np.full(arr.shape, np.nan, np.float32)
        for c in range(arr.shape[1]):
            if name == "sz3_series":
                block = arr[:, c]
                ok = np.isfinite(block)
                if not ok.any():
                    continue
                mean = float(block[ok].mean())
                back[:, c] = run(np.stack([_filled(s, mean) for s in block]))
                continue
            for t in range(arr.shape[0]):
                if np.isfinite(arr[t, c]).any():  # an empty array stores nothing
                    back[t, c] = run(_filled(arr[t, c]))
        out.decoded[v] = back
    return out


def measure(name: str, fields: RDFields, bound: float) -> dict[str, Any]:
    """One rate-distortion point: ``name`` at absolute ``bound`` (normalised units).

    Returns:
        ``codec``, ``bound``, ``rel_bound`` (of ``fields.span``), ``bound_physical`` per
        variable (largest over levels), ``ratio``, ``bits_per_value``,
        ``compressed_bytes`` and :func:`~pipelines.codecs.rd_metrics.quality`'s keys.
    """
    done = compress_fields(name, fields, bound)
    ratio = fields.raw_bytes / max(done.nbytes, 1)
    return {
        "codec": name,
        "bound": float(bound),
        "rel_bound": float(bound / fields.span),
        "bound_physical": {v: float(bound * np.max(g.scale)) for v, g in fields.geometry.items()},
        "ratio": float(ratio),
        "bits_per_value": float(32.0 / ratio),
        "compressed_bytes": int(done.nbytes),
        **fields.score(done.decoded),
    }


def compressor_curve(
    name: str, fields: RDFields, bounds: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """Sweep ``name``'s (``zfp``, ``sz3``, ``sz3_series``) absolute error bound.

    Args:
        name: the compressor.
        fields: the time steps to compress.
        bounds: absolute error bounds in normalised units; default ``DEFAULT_REL_BOUNDS``
            times ``fields.span``, then doubled while the ratio grows by 2% or more (up to
            ``MAX_REL_BOUND`` of the span).

    Returns:
        One :func:`measure` point per bound, in the sweep's order.

    Raises:
        EncodeError: an unknown compressor name.
        CompressorMissing: its package is not installed.
    """
    auto = bounds is None
    if auto:
        bounds = [r * fields.span for r in DEFAULT_REL_BOUNDS]
    points = [measure(name, fields, b) for b in bounds]
    while (
        auto
        and len(points) > 1
        and points[-1]["ratio"] >= GROWTH * points[-2]["ratio"]
        and points[-1]["rel_bound"] * 2 <= MAX_REL_BOUND
    ):
        points.append(measure(name, fields, points[-1]["bound"] * 2))
    return points


def _zstd() -> tuple[Any, Any]:
    import zstandard

    return (
        lambda raw: zstandard.ZstdCompressor(level=19).compress(raw),
        lambda blob: zstandard.ZstdDecompressor().decompress(blob),
    )


def _blosc() -> tuple[Any, Any]:
    from numcodecs import Blosc

    codec = Blosc(cname="zstd", clevel=9, shuffle=Blosc.SHUFFLE)
    return (lambda raw: bytes(codec.encode(raw)), lambda blob: bytes(codec.decode(blob)))


LOSSLESS = {"zstd19": _zstd, "blosc_zstd_shuffle": _blosc}


def lossless_point(fields: RDFields) -> list[dict[str, Any]]:
    """zstd-19 and Blosc-zstd (byte shuffle, level 9) on each variable's float32 block.

    Returns:
        One point per codec: ``codec``, ``ratio``, ``bits_per_value``,
        ``compressed_bytes``, ``psnr`` (inf) and ``exact`` (the roundtrip gave back the
        same bytes).
    """
    points = []
    for codec, make in LOSSLESS.items():
        compress, decompress = make()
        size, exact = 0, True
        for arr in fields.values.values():
            raw = np.ascontiguousarray(arr, np.float32).tobytes()
            blob = compress(raw)
            size += len(blob)
            exact &= decompress(blob) == raw
        ratio = fields.raw_bytes / max(size, 1)
        points.append(
            {
                "codec": codec,
                "ratio": float(ratio),
                "bits_per_value": float(32.0 / ratio),
                "compressed_bytes": int(size),
                "psnr": math.inf,
                "exact": bool(exact),
            }
        )
    return points


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The points no other point beats on both ``ratio`` and ``psnr``, by ratio ascending.

    A point is dominated by one at least as good on both and better on one; points with
    a NaN ratio or PSNR are left out, and of equal points the first is kept.
    """
    pts = [p for p in points if not (math.isnan(p["ratio"]) or math.isnan(p["psnr"]))]
    front: list[Mapping[str, Any]] = []
    for i, p in enumerate(pts):
        beaten = any(
            q["ratio"] >= p["ratio"]
            and q["psnr"] >= p["psnr"]
            and (q["ratio"] > p["ratio"] or q["psnr"] > p["psnr"] or j < i)
            for j, q in enumerate(pts)
            if j != i
        )
        if not beaten:
            front.append(p)
    return sorted(front, key=lambda p: p["ratio"])


def plot_rd(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    codes: Sequence[str] = ("codes",),
    title: str = "",
) -> Path:
    """Mean PSNR against compression ratio (log x), one line per curve.

    Args:
        curves: name -> points (``ratio``, ``psnr``); points with an infinite PSNR
            (lossless) are vertical lines at their ratio.
        path: the PNG.
        codes: the curves holding INR codes: their points are stars and the Pareto front
            of all of them together is highlighted.
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    code_points: list[Mapping[str, Any]] = []
    lossless = 0
    for name, pts in curves.items():
        finite = sorted(
            ((p["ratio"], p["psnr"]) for p in pts if math.isfinite(p["psnr"])),
            key=lambda rp: rp[0],
        )
        is_code = name in codes
        if is_code:
            code_points += [p for p in pts if math.isfinite(p["psnr"])]
        if finite:
            xs, ys = zip(*finite, strict=True)
            ax.plot(xs, ys, "*" if is_code else ".-", ms=9 if is_code else 4, label=name)
        for p in (p for p in pts if math.isinf(p["psnr"])):
            dash = LOSSLESS_DASHES[lossless % len(LOSSLESS_DASHES)]
            lossless += 1
            label = f"{p.get('codec', name)} (lossless)"
            ax.axvline(p["ratio"], ls=dash, lw=1.0, color="0.4", label=label)
    front = pareto_front(code_points)
    if front:
        ax.plot(
            [p["ratio"] for p in front], [p["psnr"] for p in front], "k-", lw=2.2, alpha=0.7,
            label="codes: Pareto front", zorder=5,
        )  # fmt: skip
    ys = [p["psnr"] for pts in curves.values() for p in pts if math.isfinite(p["psnr"])]
    if ys:  # lossless-in-practice points (the 200 dB MSE floor) would squash the curves
        ax.set_ylim(max(0.0, min(ys) - 2), min(max(ys) + 2, 150.0))
    ax.set(xscale="log", xlabel="compression ratio (raw float32 / stored)", ylabel="PSNR (dB)")
    ax.set_title(title or "rate-distortion")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path), dpi=120)


__all__ = [
    "DEFAULT_REL_BOUNDS",
    "LOSSLESS",
    "LOSSY",
    "Compressed",
    "compress_fields",
    "compressor_curve",
    "lossless_point",
    "measure",
    "pareto_front",
    "plot_rd",
]

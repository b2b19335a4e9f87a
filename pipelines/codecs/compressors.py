"""Rate-distortion of standard lossy compressors (ZFP, SZ3) on the fields an encoder codes.

The encode report compares the INR codes with what users compress climate and
simulation fields with today: ZFP in fixed-accuracy mode (``zfpy``) and SZ3 with an
absolute error bound (``pysz``), both from the ``compressors`` extra that setup
installs. They see exactly what the encoder sees: the store's normalised values of the
same time steps, each (time step, variable) compressed on its own grid (as each time
step has its own code) and each level as its own 2-D (lat, lon) or 3-D (z, y, x) array
(never with a channel axis), missing points filled with the mean of the array's valid values
(a zero fill makes edges that cost bits) and left out of the error. PSNR is
the encoder's: per variable over valid points with the meta-model's ``psnr_range``, mean over
variables, then mean over time steps; the ratio is raw float32 bytes / compressed bytes.

A compressor's ratio *at* a PSNR is found by bisection on its error bound between the
sweep's points around the target: the best ratio of a bound whose mean PSNR still
reaches it. The full-range curves (area-weighted errors in physical units, ``sz3_series``,
lossless references, Pareto fronts) are :mod:`pipelines.codecs.rate_distortion`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

# name -> (compress(array, tolerance) -> bytes, decompress(bytes, like) -> array)
Codec = tuple[Callable[[np.ndarray, float], bytes], Callable[[bytes, np.ndarray], np.ndarray]]


def _zfp() -> Codec:
    import zfpy

    return (
        lambda a, tol: zfpy.compress_numpy(a, tolerance=tol),
        lambda blob, like: zfpy.decompress_numpy(blob),
    )


def _sz3() -> Codec:
    from pysz import sz, szConfig, szErrorBoundMode

    def compress(a: np.ndarray, tol: float) -> bytes:
        cfg = szConfig(a.shape)
        cfg.errorBoundMode = szErrorBoundMode.ABS
        cfg.absErrorBound = tol
        return sz.compress(a, cfg)[0].tobytes()

    def decompress(blob: bytes, like: np.ndarray) -> np.ndarray:
        return sz.decompress(np.frombuffer(blob, np.uint8), like.dtype, like.shape)[0]

    return compress, decompress


CODECS: dict[str, Callable[[], Codec]] = {"zfp": _zfp, "sz3": _sz3}


class CompressorMissing(RuntimeError):
    """A compressor's Python package is not installed (the message says which)."""


def load_codec(name: str) -> Codec:
    """The ``(compress, decompress)`` pair of ``name`` (``zfp`` or ``sz3``).

    Raises:
        CompressorMissing: its package is not importable.
    """
    try:
        return CODECS[name]()
    except ImportError as err:
        package = {"zfp": "zfpy", "sz3": "pysz"}[name]
        raise CompressorMissing(
            f"{name} needs the {package} package: pip install -e '.[compressors]'"
        ) from err


@dataclass
class RateDistortion:
    """One compressor on one set of fields.

    Attributes:
        name: ``zfp`` or ``sz3``.
        curve: ``(tolerance, mean PSNR dB, compression ratio)`` over a tolerance sweep.
        at_psnr: target PSNR -> the best ratio of any measured bound (sweep or bisection)
            that reaches it (NaN: none does).
    """

    name: str
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    at_psnr: dict[float, float] = field(default_factory=dict)


def _psnr(err2: np.ndarray, ok: np.ndarray, data_range: float) -> float:
    n = ok.sum()
    if n == 0:
        return math.nan
    mse = float((err2 * ok).sum() / n)
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


class FieldSet:
    """The fields of a few time steps, as a compressor sees them.

    Args:
        fields: variable -> ``(T, C, *grid)`` normalised values (NaN = missing).
        data_range: peak-to-peak range of the PSNR.
    """

    def __init__(self, fields: Mapping[str, np.ndarray], data_range: float) -> None:
        self.data_range = data_range
        self.arrays: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (t, var, a, ok)
        for j, arr in enumerate(fields.values()):
            for t in range(arr.shape[0]):
                a = np.asarray(arr[t], np.float32)
                ok = np.isfinite(a)
                if ok.any():
                    means = [c[k].mean() if k.any() else 0.0 for c, k in zip(a, ok, strict=True)]
                    filled = np.where(ok, a, np.asarray(means).reshape(-1, *[1] * (a.ndim - 1)))
                    self.arrays.append((t, j, np.ascontiguousarray(filled, np.float32), ok))
        self.raw_bytes = sum(a.size * 4 for _, _, a, _ in self.arrays)

    def measure(self, codec: Codec, tol: float) -> tuple[float, float]:
        """Mean PSNR (over time steps of the mean over variables) and ratio at ``tol``."""
        compress, decompress = codec
        per_t: dict[int, list[float]] = {}
        size = 0
        for t, _, a, ok in self.arrays:
            back = np.empty_like(a)
            for c, level in enumerate(a):  # each level as its own 2-D / 3-D array
                blob = compress(level, tol)
                size += len(blob)
                back[c] = decompress(blob, level).reshape(level.shape)
            per_t.setdefault(t, []).append(_psnr((back - a) ** 2, ok, self.data_range))
        # Lossless at a tiny bound gives inf: cap it so means stay comparable (200 dB).
        psnr_t = [min(200.0, float(np.mean(v))) for v in per_t.values()]
        return float(np.mean(psnr_t)), self.raw_bytes / max(size, 1)


def rate_distortion(
    fields: FieldSet,
    name: str,
    targets: list[float],
    tolerances: np.ndarray | None = None,
    bisect_steps: int = 12,
) -> RateDistortion:
    """Sweep ``name``'s error bound over ``tolerances`` and find its ratio at ``targets``.

    Args:
        fields: the time steps to compress.
        name: ``zfp`` or ``sz3``.
        targets: PSNRs (dB) at which to report the ratio.
        tolerances: absolute error bounds of the sweep (default: 10^-6 .. 10^1 times
            the data range, 22 points).
        bisect_steps: bisection steps in log-tolerance between the sweep's bracketing
            points (a ratio within about 1% of the exact one).

    Raises:
        CompressorMissing: the compressor is not installed.
    """
    codec = load_codec(name)
    if tolerances is None:
        tolerances = fields.data_range * np.logspace(-6, 1, 22)
    out = RateDistortion(name)
    for tol in tolerances:
        out.curve.append((float(tol), *fields.measure(codec, float(tol))))
    probes = list(out.curve)
    for target in targets:
        ok = [c[0] for c in probes if c[1] >= target]
        above = [c[0] for c in probes if c[1] < target and ok and c[0] > max(ok)]
        if not ok or not above:
            continue
        a, b = math.log(max(ok)), math.log(min(above))
        for _ in range(bisect_steps):
            mid = (a + b) / 2
            probe = (math.exp(mid), *fields.measure(codec, math.exp(mid)))
            probes.append(probe)
            a, b = (mid, b) if probe[1] >= target else (a, mid)
    for target in targets:
        # Every measured bound counts (SZ3's ratio is not monotonic in its bound).
        ratios = [c[2] for c in probes if c[1] >= target]
        out.at_psnr[target] = max(ratios) if ratios else math.nan
    return out


__all__ = [
    "CODECS",
    "CompressorMissing",
    "FieldSet",
    "RateDistortion",
    "load_codec",
    "rate_distortion",
]

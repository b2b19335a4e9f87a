"""Rate-distortion of several code stores of one field store against SZ3, ZFP and lossless.

``mia-inr encode report --codes A --codes B ...`` (two or more code stores of the same
field store: code sizes, bit depths) measures on the field store's **test** time steps:

* every code store as one point: PSNR, area-weighted RMSE in the variable's units and
  maximum absolute error of what decoding the stored codes gives
  (:func:`~pipelines.codecs.rd_metrics.quality`, the same function as for the
  compressors), against the compression ratio **with the meta-model counted**: raw
  float32 bytes of the store's time steps over the bytes the codes of those steps take
  in storage plus the meta-model's stored bytes, spread over the store's time steps
  (``ratio``); the ratio of the codes alone (``ratio_codes``); and the number of time
  steps at which the meta-model has paid for itself against the best standard
  compressor at the same PSNR (``break_even_steps``, ``inf``: never);
* SZ3 per field and per series, ZFP (natural dimensions) over their error-bound range,
  and a lossless reference (:mod:`pipelines.codecs.rate_distortion`);
* the codes' Pareto front, and where it lies against SZ3 and ZFP at ratios >= 100x
  (:func:`compare_fronts`);
* for entropy-coded stores, the bytes of both coders on the stored symbols.

The speed comparison (:mod:`pipelines.codecs.comparison`) runs on the code store whose
front point is nearest 100x, at the PSNR the codes' front holds at 100x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.codecs.codestore import open_code_store, read_codes, stored_bytes
from pipelines.codecs.decode import Decoder
from pipelines.codecs.entropy import Quantiser, coded_sizes
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rate_distortion import pareto_front
from pipelines.codecs.rd_metrics import RDFields
from pipelines.data.stores import StoreLocation

STANDARD = ("sz3", "sz3_series", "zfp")
HIGH_RATIO = 100.0


def decoded_fields(location: StoreLocation, store: Any, frames: list[int]) -> dict:
    """Variable -> ``(T, C, *grid)`` normalised values the stored codes decode to."""
    shapes = {m: tuple(store.info[m].grid_shape) for m in store.modalities}
    outs = Decoder(location).predict_steps(np.asarray(frames), shapes)
    return {
        m: np.moveaxis(np.concatenate(outs[m]), -1, 1).reshape(len(frames), -1, *shape)
        for m, shape in shapes.items()
    }


def code_point(location: StoreLocation, store: Any, fields: RDFields, frames: list[int]) -> dict:
    """One code store's rate-distortion point (see the module docstring).

    Raises:
        EncodeError: a code store with test steps not encoded.
    """
    group = open_code_store(location)
    attrs = dict(group.attrs["mia_codes"])
    done = np.asarray(group["done"][...]).astype(bool)
    if not done[frames].all():
        missing = [f for f in frames if not done[f]]
        raise EncodeError(f"{location}: test time steps {missing[:8]} are not encoded yet")
    n_done, n_time = int(done.sum()), int(attrs["num_time"])
    code_bytes, meta_bytes = stored_bytes(group, "codes"), stored_bytes(group, "meta")
    per_step = code_bytes / n_done
    raw = float(attrs["raw_bytes_per_step"])
    point = {
        "codes": location.display,
        "label": _label(attrs),
        "code_dim": int(attrs["code_dim"]),
        "code_bits": int(attrs.get("code_bits", 0)),
        "code_dtype": attrs["code_dtype"],
        "meta_dtype": attrs.get("meta_dtype", "float32"),
        "code_bytes_per_step": per_step,
        "meta_bytes": meta_bytes,
        "ratio_codes": raw / per_step,
        "ratio": raw * n_time / (per_step * n_time + meta_bytes),
        "bits_per_value": 32.0 * (per_step * n_time + meta_bytes) / (raw * n_time),
        **fields.score(decoded_fields(location, store, frames)),
    }
    if attrs.get("quantiser"):
        quant = Quantiser.from_json(attrs["quantiser"])
        symbols = quant.symbols(read_codes(group, np.flatnonzero(done)))
        point["coder_bytes"] = coded_sizes(symbols, quant)
    return point


def _label(attrs: Mapping[str, Any]) -> str:
    bits = attrs.get("code_bits")
    kind = f"{bits} bits" if bits else attrs["code_dtype"]
    return f"{attrs['mode']} {attrs['code_dim']} x {kind}"


def psnr_at(points: Sequence[Mapping[str, Any]], ratio: float) -> float:
    """PSNR of a curve's front at ``ratio``: linear in log ratio between front points.

    NaN outside the front's ratio range (the codec has no point there).
    """
    f = [p for p in pareto_front(points) if math.isfinite(p["psnr"])]
    if not f or not f[0]["ratio"] <= ratio <= f[-1]["ratio"]:
        return math.nan
    x = np.log([p["ratio"] for p in f])
    return float(np.interp(math.log(ratio), x, [p["psnr"] for p in f]))


def ratio_at(points: Sequence[Mapping[str, Any]], psnr_db: float) -> float:
    """Largest ratio a curve's front reaches at ``psnr_db`` or better (NaN: never)."""
    f = [p for p in pareto_front(points) if math.isfinite(p["psnr"])]
    if not f or f[0]["psnr"] < psnr_db:
        return math.nan
    if f[-1]["psnr"] >= psnr_db:
        return float(f[-1]["ratio"])
    ps = [p["psnr"] for p in f][::-1]  # front PSNR falls with ratio: increasing when reversed
    x = np.log([p["ratio"] for p in f])[::-1]
    return float(math.exp(np.interp(psnr_db, ps, x)))


def break_even(point: Mapping[str, Any], curves: Mapping[str, Sequence], raw: float) -> float:
    """Time steps after which codes + meta-model beat the best standard compressor.

    Against the largest ratio any of ``STANDARD`` reaches at the point's PSNR; ``inf``:
    the codes alone are not smaller; NaN: no compressor reaches that PSNR.
    """
    found = [ratio_at(curves[c], point["psnr"]) for c in STANDARD if c in curves]
    best = max((r for r in found if not math.isnan(r)), default=math.nan)
    if math.isnan(best):
        return math.nan
    gain = raw / best - point["code_bytes_per_step"]
    return math.ceil(point["meta_bytes"] / gain) if gain > 0 else math.inf


def compare_fronts(codes: Sequence[Mapping], curves: Mapping[str, Sequence]) -> dict[str, Any]:
    """Where the codes' front lies against each standard compressor at ratios >= 100x.

    Checked at the codes' front points of ratio >= ``HIGH_RATIO`` and at 100x: the margin
    in dB at each, ``None`` where the compressor has no point at that ratio.
    """
    f = pareto_front(codes)
    ratios = sorted({HIGH_RATIO, *[p["ratio"] for p in f if p["ratio"] >= HIGH_RATIO]})
    out: dict[str, Any] = {"ratios": ratios, "codes_psnr": [psnr_at(codes, r) for r in ratios]}
    for name in STANDARD:
        if name not in curves:
            continue
        margins = []
        for r, c in zip(ratios, out["codes_psnr"], strict=True):
            s = psnr_at(curves[name], r)
            margins.append(None if math.isnan(s) or math.isnan(c) else c - s)
        both = [m for m in margins if m is not None]
        out[name] = {
            "margin_db": margins,
            "above_where_both": bool(both) and all(m > 0 for m in both),
            "compared_at": len(both),
            "max_ratio": max((p["ratio"] for p in curves[name]), default=math.nan),
        }
    out["codes_reach_100x"] = bool(f) and f[-1]["ratio"] >= HIGH_RATIO
    return out


__all__ = [
    "HIGH_RATIO",
    "STANDARD",
    "break_even",
    "code_point",
    "compare_fronts",
    "decoded_fields",
    "psnr_at",
    "ratio_at",
]

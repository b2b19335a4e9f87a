"""Quantised, entropy-coded codes: a per-channel quantiser and a Zarr v3 codec that stores it.

With ``encode.code_bits`` = ``b`` (2-8) every code value ``x`` of channel ``c`` (a code
dimension: one latent/context value, or one weight of a weight code) is stored as the
symbol ``q = clip(round((x - centre_c) / step_c), -L, L)`` with ``L = 2^(b-1) - 1``, and
read back as ``centre_c + q * step_c``. The per-channel ``centre``, ``step`` and the
symbols' spread are calibrated once per code store on codes of the steps being encoded
(:mod:`pipelines.codecs.calibrate`) and are part of the store, so every chunk is
quantised the same way: rewriting a chunk (a resumed unit) reproduces the same symbols.

The symbols of a chunk are entropy coded with one of two maintained coders and the
stored bytes are exactly what decoding reads:

* ``ans``: constriction's asymmetric numeral system coder with one discretised Laplace
  model per channel (zero mean, the channel's calibrated spread): codes cluster around
  the meta-learned start, so small symbols are cheap;
* ``zstd``: zstandard (level 19) on the symbols as int8, channel-major;
* ``auto`` (default): both, the smaller one is kept (a one-byte tag says which).

:class:`QuantisedCodes` is the Zarr v3 array-to-bytes codec (name ``CODEC_NAME``): the
``codes`` array is float32 to its readers, and the quantiser travels in the array's
metadata (float32 vectors as base64, so its bytes are counted as stored). Zarr's
``crc32c`` codec follows it, so a damaged chunk fails its checksum instead of decoding
to wrong codes. A reader that lacks this codec (an older ``mia-inr``) cannot open the
array; :func:`pipelines.codecs.codestore.open_code_store` turns that into one line.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import constriction
import numpy as np
import zstandard
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

CODEC_NAME = "mia_inr.quantised_codes"
CODERS = ("auto", "ans", "zstd")
MIN_BITS, MAX_BITS = 2, 8
_TAGS = {"ans": 1, "zstd": 2}
_ZSTD_LEVEL = 19
# Smallest Laplace spread (in quantisation steps) the ANS model uses: a channel that was
# constant during calibration still needs every symbol to have non-zero probability.
_MIN_SPREAD = 0.05


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, "<f4").tobytes()).decode("ascii")


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), "<f4").astype(np.float32)


@dataclass(frozen=True)
class Quantiser:
    """Per-channel uniform quantiser of ``D``-dimensional codes.

    Attributes:
        bits: symbol width ``b``: symbols lie in ``[-L, L]``, ``L = 2^(b-1) - 1``.
        centre: ``(D,)`` value of symbol 0 per channel.
        step: ``(D,)`` quantisation step per channel (> 0).
        spread: ``(D,)`` mean absolute symbol per channel on the calibration codes (the
            scale of the ANS coder's Laplace model).
    """

    bits: int
    centre: np.ndarray
    step: np.ndarray
    spread: np.ndarray

    @property
    def levels(self) -> int:
        """``L``: the largest symbol magnitude."""
        return 2 ** (self.bits - 1) - 1

    @property
    def dim(self) -> int:
        """Code dimension ``D``."""
        return int(self.centre.size)

    @property
    def param_bytes(self) -> int:
        """Bytes of the quantiser's parameters as float32 (three ``D``-vectors)."""
        return 12 * self.dim

    @classmethod
    def fit(cls, codes: np.ndarray, bits: int, margin: float = 1.25) -> Quantiser:
        """Calibrate on ``(..., D)`` float codes.

        The centre is the channel's median; the symbols cover ``margin`` times its largest
        calibration deviation, so values slightly beyond the calibration set are still
        represented (larger ones are clipped to ``+-L``).
        """
        check_bits(bits)
        flat = np.asarray(codes, np.float64).reshape(-1, codes.shape[-1])
        flat = np.where(np.isfinite(flat), flat, np.nanmedian(flat, 0, keepdims=True))
        centre = np.median(flat, 0)
        reach = np.abs(flat - centre).max(0) * margin
        levels = 2 ** (bits - 1) - 1
        step = np.where(reach > 0, reach / levels, 1.0)
        q = np.clip(np.round((flat - centre) / step), -levels, levels)
        spread = np.maximum(np.abs(q).mean(0), _MIN_SPREAD)
        f32 = np.float32
        return cls(bits, centre.astype(f32), step.astype(f32), spread.astype(f32))

    def symbols(self, x: np.ndarray) -> np.ndarray:
        """``int32`` symbols of float codes ``(..., D)`` (NaN maps to symbol 0)."""
        z = (np.asarray(x, np.float32) - self.centre) / self.step
        z = np.nan_to_num(z, nan=0.0, posinf=self.levels, neginf=-self.levels)
        return np.clip(np.round(z), -self.levels, self.levels).astype(np.int32)

    def values(self, q: np.ndarray) -> np.ndarray:
        """Float32 codes of symbols (the inverse of :meth:`symbols` on its grid)."""
        return (self.centre + q.astype(np.float32) * self.step).astype(np.float32)

    def roundtrip(self, x: np.ndarray) -> np.ndarray:
        """What the store gives back for ``x``: ``values(symbols(x))``."""
        return self.values(self.symbols(x))

    def to_json(self) -> dict[str, Any]:
        """JSON form (float32 vectors as base64 of their little-endian bytes)."""
        return {
            "bits": self.bits,
            "centre": _b64(self.centre),
            "step": _b64(self.step),
            "spread": _b64(self.spread),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Quantiser:
        """Inverse of :meth:`to_json`."""
        return cls(int(d["bits"]), _unb64(d["centre"]), _unb64(d["step"]), _unb64(d["spread"]))


def check_bits(bits: int) -> None:
    """Raise ``ValueError`` unless ``MIN_BITS <= bits <= MAX_BITS``."""
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"code bits must be {MIN_BITS}..{MAX_BITS}, got {bits}")


def _ans(q: np.ndarray, quant: Quantiser) -> bytes:
    rows = q.reshape(-1, quant.dim)
    family = constriction.stream.model.QuantizedLaplace(-quant.levels, quant.levels)
    scales = np.broadcast_to(quant.spread.astype(np.float64), rows.shape).ravel()
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(rows.ravel().astype(np.int32), family, np.zeros_like(scales), scales)
    return coder.get_compressed().astype("<u4").tobytes()


def _unans(payload: bytes, n: int, quant: Quantiser) -> np.ndarray:
    words = np.frombuffer(payload, "<u4").astype(np.uint32)
    family = constriction.stream.model.QuantizedLaplace(-quant.levels, quant.levels)
    scales = np.broadcast_to(quant.spread.astype(np.float64), (n // quant.dim, quant.dim)).ravel()
    return constriction.stream.stack.AnsCoder(words).decode(family, np.zeros_like(scales), scales)


def _zstd(q: np.ndarray, quant: Quantiser) -> bytes:
    channel_major = np.ascontiguousarray(q.reshape(-1, quant.dim).T.astype(np.int8))
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(channel_major.tobytes())


def _unzstd(payload: bytes, n: int, quant: Quantiser) -> np.ndarray:
    raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=n)
    return np.frombuffer(raw, np.int8).reshape(quant.dim, -1).T.astype(np.int32)


_CODERS = {"ans": (_ans, _unans), "zstd": (_zstd, _unzstd)}


def coded_sizes(q: np.ndarray, quant: Quantiser) -> dict[str, int]:
    """Payload bytes of symbols ``q`` under each coder (the report's coder comparison)."""
    return {name: len(enc(q, quant)) for name, (enc, _) in _CODERS.items()}


def encode_symbols(q: np.ndarray, quant: Quantiser, coder: str = "auto") -> bytes:
    """One tag byte and the payload of the chosen (``auto``: the smaller) coder."""
    names = list(_CODERS) if coder == "auto" else [coder]
    best = min(((n, _CODERS[n][0](q, quant)) for n in names), key=lambda t: len(t[1]))
    return bytes([_TAGS[best[0]]]) + best[1]


def decode_symbols(blob: bytes, shape: tuple[int, ...], quant: Quantiser) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: ``int32`` symbols of ``shape``.

    Raises:
        ValueError: an unknown coder tag or a payload that does not decode to ``shape``.
    """
    if not blob:
        raise ValueError("empty chunk")
    names = {v: k for k, v in _TAGS.items()}
    if blob[0] not in names:
        raise ValueError(f"unknown coder tag {blob[0]}")
    n = int(np.prod(shape))
    q = np.asarray(_CODERS[names[blob[0]]][1](blob[1:], n, quant))
    if q.size != n:
        raise ValueError(f"decoded {q.size} symbols, expected {n}")
    return q.reshape(shape)


@dataclass(frozen=True)
class QuantisedCodes(ArrayBytesCodec):
    """Zarr v3 array-to-bytes codec: float32 codes -> quantised, entropy-coded bytes.

    Attributes:
        quantiser: :meth:`Quantiser.to_json` of the store's quantiser.
        coder: one of ``CODERS``.
    """

    is_fixed_size = False
    quantiser: dict[str, Any]
    coder: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantisedCodes:
        """Zarr metadata -> codec."""
        conf = dict(data.get("configuration", {}))
        return cls(quantiser=dict(conf["quantiser"]), coder=str(conf.get("coder", "auto")))

    def to_dict(self) -> dict[str, Any]:
        """Codec -> Zarr metadata."""
        conf = {"quantiser": self.quantiser, "coder": self.coder}
        return {"name": CODEC_NAME, "configuration": conf}

    @cached_property
    def _quant(self) -> Quantiser:
        # Parsed once per codec object, not once per chunk.
        return Quantiser.from_json(self.quantiser)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: Any) -> Buffer | None:
        quant = self._quant
        blob = encode_symbols(quant.symbols(chunk_array.as_numpy_array()), quant, self.coder)
        return chunk_spec.prototype.buffer.from_bytes(blob)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: Any) -> NDBuffer:
        quant = self._quant
        q = decode_symbols(chunk_bytes.to_bytes(), tuple(chunk_spec.shape), quant)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(quant.values(q))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
        """Variable-size output: not known in advance."""
        raise NotImplementedError


register_codec(CODEC_NAME, QuantisedCodes)

__all__ = [
    "CODEC_NAME",
    "CODERS",
    "MAX_BITS",
    "MIN_BITS",
    "QuantisedCodes",
    "Quantiser",
    "check_bits",
    "coded_sizes",
    "decode_symbols",
    "encode_symbols",
]

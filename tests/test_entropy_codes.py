"""Quantised, entropy-coded codes (``encode.code_bits``): sizes, decoding, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_encode import CHUNK, NLAT, NLON, T, encode, meta_run, options  # noqa: F401

from mia_core.config import ConfigError
from pipelines.codecs.codestore import open_code_store, read_codes, stored_bytes
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encode_spec import load_encode_spec
from pipelines.codecs.entropy import (
    Quantiser,
    coded_sizes,
    decode_symbols,
    encode_symbols,
)
from pipelines.data.stores import StoreError, make_location


def laplace_codes(n: int = 200, dim: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spread = np.geomspace(0.01, 1.0, dim)  # channels of very different scales
    return (rng.laplace(0, 1, (n, dim)) * spread + rng.normal(0, 1, dim)).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantiser_error_is_half_a_step_per_channel_and_coders_round_trip(bits):
    codes = laplace_codes()
    quant = Quantiser.fit(codes, bits)
    err = np.abs(quant.roundtrip(codes) - codes)
    assert (err <= quant.step / 2 + 1e-6).all()  # calibrated on these codes: nothing clipped
    q = quant.symbols(codes)
    assert np.abs(q).max() <= quant.levels
    for coder in ("ans", "zstd", "auto"):
        blob = encode_symbols(q, quant, coder)
        assert np.array_equal(decode_symbols(blob, q.shape, quant), q)
    sizes = coded_sizes(q, quant)
    assert len(encode_symbols(q, quant)) == 1 + min(sizes.values())
    # Entropy coding beats storing bits per symbol: the symbols are Laplace-distributed.
    assert min(sizes.values()) < q.size * bits / 8


def test_more_bits_give_smaller_errors_and_more_bytes():
    codes = laplace_codes()
    errs, sizes = [], []
    for bits in (2, 3, 4, 6, 8):
        quant = Quantiser.fit(codes, bits)
        errs.append(float(np.abs(quant.roundtrip(codes) - codes).mean()))
        sizes.append(len(encode_symbols(quant.symbols(codes), quant)))
    assert errs == sorted(errs, reverse=True) and sizes == sorted(sizes)


def test_bits_out_of_range_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="encode.code_bits.*2..8.*got 12"):
        load_encode_spec(None, ["encode.store=a", "encode.out=b", "encode.checkpoint=c",
                                "encode.code_bits=12"])  # fmt: skip
    with pytest.raises(ConfigError, match="entropy_coder"):
        load_encode_spec(None, ["encode.store=a", "encode.out=b", "encode.checkpoint=c",
                                "encode.entropy_coder=lzma"])  # fmt: skip


@pytest.fixture(scope="module")
def coded(meta_run, tmp_path_factory):  # noqa: F811
    """The tiny store encoded with float32 codes and with 6-bit entropy-coded codes."""
    root = tmp_path_factory.mktemp("entropy")
    ref = encode(options(meta_run, root / "f32.zarr"))
    out = root / "q6.zarr"
    s = encode(options(meta_run, out, code_bits=6, calibration_codes=T))
    return {"ref": ref, "summary": s, "out": out, "f32": root / "f32.zarr"}


def test_entropy_coded_codes_are_measured_as_stored_and_sized_exactly(coded):
    s, ref = coded["summary"], coded["ref"]
    group = zarr.open_group(str(coded["out"]), mode="r")
    attrs = group.attrs["mia_codes"]
    assert attrs["format"] == "mia-codes/2" and attrs["code_bits"] == 6
    # The size is what the codes array takes on disk (chunks + metadata with the quantiser).
    on_disk = sum(f.stat().st_size for f in Path(coded["out"], "codes").rglob("*") if f.is_file())
    assert stored_bytes(group, "codes") == on_disk
    assert s.compression_codes == pytest.approx(NLAT * NLON * 4 * T / on_disk)
    assert s.compression_codes > ref.compression_codes  # 6-bit symbols vs float32 weights
    # PSNR is that of the stored codes: close to the float32 codes' but not theirs.
    assert 0 < abs(ref.psnr["mean"] - s.psnr["mean"]) < 3.0


def test_decoding_reads_the_stored_bytes_alone(coded):
    group = open_code_store(make_location(str(coded["out"])))
    quant = Quantiser.from_json(group.attrs["mia_codes"]["quantiser"])
    codes = read_codes(group, np.arange(T))
    # Every stored value lies on the quantiser's grid.
    q = (codes - quant.centre) / quant.step
    assert np.allclose(q, np.round(q), atol=1e-3)
    # Decoding from a copy of the store's files alone (no encoder state) gives the same.
    ds = Decoder(make_location(str(coded["out"]))).decode([0, 5])
    ref = Decoder(make_location(str(coded["f32"]))).decode([0, 5])
    assert np.isfinite(ds["t2m"].values).all()
    assert float(np.abs(ds["t2m"].values - ref["t2m"].values).max()) < 2.0  # kelvin


def test_a_resumed_entropy_coded_job_keeps_its_quantiser(meta_run, tmp_path):  # noqa: F811
    out = tmp_path / "codes.zarr"
    with pytest.raises(RuntimeError, match="injected fault"):
        encode(options(meta_run, out, code_bits=4, calibration_codes=4), fault_at=5)
    first = zarr.open_group(str(out)).attrs["mia_codes"]["quantiser"]
    s = encode(options(meta_run, out, code_bits=4, calibration_codes=4))
    assert s.done == T and zarr.open_group(str(out)).attrs["mia_codes"]["quantiser"] == first
    with pytest.raises(StoreError, match="code_bits"):
        encode(options(meta_run, out, code_bits=5, calibration_codes=4))


def test_a_damaged_chunk_is_named_and_the_others_still_decode(coded, tmp_path):
    import shutil

    out = tmp_path / "damaged.zarr"
    shutil.copytree(coded["out"], out)
    chunk = out / "codes" / "c" / "1" / "0"
    blob = bytearray(chunk.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    chunk.write_bytes(bytes(blob))
    dec = Decoder(make_location(str(out)))
    with pytest.raises(StoreError, match=rf"codes chunk 1 \(time steps {CHUNK}:{2 * CHUNK}\)"):
        dec.decode([CHUNK + 1])
    ok = dec.decode([0, 2 * CHUNK])  # the other chunks are intact
    assert np.isfinite(ok["t2m"].values).all()


def test_a_store_from_a_newer_version_is_refused_in_one_line(coded, tmp_path):
    import shutil

    out = tmp_path / "newer.zarr"
    shutil.copytree(coded["out"], out)
    meta_path = out / "codes" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"][0]["name"] = "mia_inr.quantised_codes_v9"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="codec this mia-inr does not have.*upgrade"):
        open_code_store(make_location(str(out)))
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["mia_codes"]["format"] = "mia-codes/9"
    (out / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(StoreError, match="format mia-codes/9 was written by a newer mia-inr"):
        open_code_store(make_location(str(out)))

"""Batch encoding (Meta-INR): meta-pretraining, encode, decode, resume, S3, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from mia_core.config import ConfigError, load_config
from pipelines.codecs.decode import Decoder, decode_to
from pipelines.codecs.encode import run_encode
from pipelines.codecs.encode_spec import EncodeSpec, load_encode_spec
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import make_location
from pipelines.data.stores.field_writer import split_by_time, write_field_store
from pipelines.engine.checkpoint import save_checkpoint
from pipelines.jobs import train
from ray_jobs.common import run_main
from ray_jobs.encode import main as encode_main

T, NLAT, NLON, CHUNK = 12, 8, 10, 4
PSNR_FLOOR = 22.0  # dB on [0, 1]-normalised fields after 30 Adam steps


def tiny_fields(seed: int = 0) -> xr.Dataset:
    """Smooth, slowly moving 2-D fields with a descending latitude axis and datetimes."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(60.0, 20.0, NLAT)
    lon = np.linspace(0.0, 90.0, NLON)
    t = np.arange(T)[:, None, None]
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    base = 280 + 10 * np.sin(2 * la + 0.3 * t) * np.cos(lo - 0.2 * t)
    t2m = base + 0.1 * rng.standard_normal(base.shape)
    times = np.datetime64("2020-01-01T00") + np.arange(T) * np.timedelta64(6, "h")
    return xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K"})},
        coords={"time": times, "latitude": lat, "longitude": lon},
    )


def write_tiny_store(url: str, **options) -> None:
    write_field_store(
        tiny_fields(),
        make_location(url, options or None),
        chunk_time=CHUNK,
        split=split_by_time(T, 0.2, 0.2),
    )


def meta_config(store: str, out_dir, *extra: str):
    return load_config(
        "configs/experiments/meta_inr_gray_scott.yaml",
        [
            f"data.store={store}",
            "data.modalities=[t2m]",
            "model.width=16",
            "model.depth=2",
            "model.omega0=10.0",
            "method.inner_steps=2",
            "run.steps=3",
            "run.batch_size=2",
            "run.log_every=1",
            "run.eval_every=3",
            "run.checkpoint_every=3",
            "run.eval_batch_size=4",
            # float32 matmuls on every CPU: the tests compare batched with per-signal fits,
            # which bf16 matmuls (medium on AMX CPUs) round differently.
            "run.matmul_precision=highest",
            f"run.out_dir={out_dir}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    """A tiny field store and a Meta-INR run meta-pretrained on it (strided subsample)."""
    root = tmp_path_factory.mktemp("encode")
    store = str(root / "fields.zarr")
    write_tiny_store(store)
    res = train(meta_config(store, root / "runs"), local=True, log=lambda _s: None)
    return {"root": root, "store": store, "run_dir": res.run_dir}


def options(meta_run, out, **kw) -> EncodeSpec:
    base = dict(
        store=meta_run["store"],
        checkpoint=str(meta_run["run_dir"]),
        out=str(out),
        steps=30,
        lr=1e-2,
        optimizer="adam",
        progress=False,
        larger_codes="warn",  # the tiny SIREN's weights outweigh an 8 x 10 field
    )
    return EncodeSpec(**{**base, **kw})


def encode(spec: EncodeSpec, **kw):
    """``run_encode`` in this process (``local=False``: on Ray), quietly."""
    return run_encode(spec, log=lambda _s: None, **{"local": True, **kw})


def test_meta_inr_config_is_maml_on_strided_fields():
    cfg = load_config("configs/experiments/meta_inr_paper.yaml")
    assert cfg.method.name == "meta_inr" and cfg.model.family == "siren"
    assert (cfg.model.width, cfg.model.depth + 1, cfg.model.omega0) == (256, 7, 30.0)
    assert (cfg.data.spatial_stride, cfg.data.time_stride, cfg.method.inner_steps) == (4, 2, 16)


def test_encode_decode_round_trip(meta_run, tmp_path):
    out = tmp_path / "codes.zarr"
    s = encode(options(meta_run, out))
    assert (s.encoded, s.done, s.skipped) == (T, T, 0)
    assert s.psnr["min"] > PSNR_FLOOR, s.psnr
    assert s.code_dim > 0 and s.compression_codes == pytest.approx(NLAT * NLON / s.code_dim)
    group = zarr.open_group(str(out), mode="r")
    attrs = group.attrs["mia_codes"]
    assert attrs["mode"] == "weights" and len(attrs["meta_sha256"]) == 64
    assert attrs["summary"]["done"] == T and attrs["variable_info"]["t2m"]["norm"]["kind"]

    # Original grid: physical units, ascending latitude, the store's datetimes.
    ds = Decoder(make_location(str(out))).decode()
    truth = tiny_fields().sortby("latitude")
    assert ds["t2m"].dims == ("time", "latitude", "longitude")
    assert ds["t2m"].attrs["units"] == "K" and "physical_units" not in ds["t2m"].attrs
    np.testing.assert_array_equal(ds["time"].values, truth["time"].values)
    np.testing.assert_allclose(ds["latitude"].values, truth["latitude"].values)
    norm = attrs["variable_info"]["t2m"]["norm"]
    span = norm["max"][0] - norm["min"][0]
    err = ((ds["t2m"].values - truth["t2m"].values) / span) ** 2
    psnr = -10 * np.log10(err.reshape(T, -1).mean(1))
    np.testing.assert_allclose(psnr, np.asarray(group["psnr"][:, 0]), atol=0.05)

    # Another resolution (continuous INR) and a time range, to netCDF.
    nc = tmp_path / "fine.nc"
    decode_to(str(out), str(nc), slice(2, 5), (16, 20))
    fine = xr.open_dataset(nc)
    assert fine["t2m"].shape == (3, 16, 20)
    assert abs(float(fine["t2m"].mean()) - float(truth["t2m"][2:5].mean())) < 1.0


@pytest.mark.integration
def test_s3_round_trip(meta_run, s3_server, monkeypatch, tmp_path):
    s3_server["make_bucket"]("encode")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    endpoint = s3_server["endpoint_url"]
    write_tiny_store("s3://encode/fields.zarr", endpoint_url=endpoint)
    opts = options(
        meta_run,
        "s3://encode/codes.zarr",
        store="s3://encode/fields.zarr",
        endpoint_url=endpoint,
        code_dtype="float16",
        steps=10,
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
    )
    s = encode(opts)
    assert s.done == T and s.compression_codes == pytest.approx(2 * NLAT * NLON / s.code_dim)
    local = tmp_path / "decoded.zarr"
    ds = decode_to("s3://encode/codes.zarr", str(local), [0, 11], endpoint_url=endpoint)
    assert ds["t2m"].shape == (2, NLAT, NLON)
    with warnings.catch_warnings():  # decoded output: consolidated, opens without a warning
        warnings.simplefilter("error")
        assert xr.open_zarr(local)["t2m"].shape == (2, NLAT, NLON)
    loc = make_location("s3://encode/codes.zarr", endpoint_url=endpoint)
    attrs = zarr.open_group(loc.zarr_store("r"), mode="r").attrs.asdict()
    assert s3_server["secret"] not in str(attrs) and s3_server["key"] not in str(attrs)


def test_context_codes_from_a_cavia_meta_model(meta_run, tmp_path):
    from mia_core.builders import build_learner
    from mia_core.config import save_config

    cfg = load_config(
        meta_run["run_dir"] / "config.yaml",
        [
            "method.name=cavia",
            "method.inner_lr=0.1",
            "model.context_tokens=2",
            "model.context_dim=4",
        ],
    )
    learner = build_learner(cfg.model, cfg.method, {"t2m": (2, 1)})
    run = tmp_path / "cavia_run"
    save_checkpoint({"model": learner.state_dict()}, run / "checkpoints" / "best.pt")
    save_config(cfg, run / "config.yaml")
    out = tmp_path / "codes.zarr"
    s = encode(options(meta_run, out, checkpoint=str(run), time_range=[0, CHUNK], optimizer="rule"))
    assert (s.done, s.code_dim) == (CHUNK, 8)  # 2 context vectors of 4 per time step
    assert s.compression_codes == pytest.approx(NLAT * NLON / 8)
    assert zarr.open_group(str(out)).attrs["mia_codes"]["mode"] == "context"
    ds = Decoder(make_location(str(out))).decode([1, 2])
    assert ds["t2m"].shape == (2, NLAT, NLON) and np.isfinite(ds["t2m"].values).all()


def test_bad_checkpoints_and_variables_give_clear_errors(meta_run, tmp_path, capsys):
    run_dir = meta_run["run_dir"]
    out = str(tmp_path / "codes.zarr")
    with pytest.raises(EncodeError, match="does not exist"):
        encode(options(meta_run, out, checkpoint=str(tmp_path / "nope.pt")))
    corrupt = tmp_path / "corrupt" / "checkpoints" / "best.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a checkpoint")
    cfg = str(run_dir / "config.yaml")
    with pytest.raises(EncodeError, match="unreadable"):
        encode(options(meta_run, out, checkpoint=str(corrupt), run_config=cfg))

    # A checkpoint of another model size: the weights do not fit the config.
    from mia_core.builders import build_learner

    wide = load_config(cfg, ["model.width=24"])
    other = build_learner(wide.model, wide.method, {"t2m": (2, 1)})
    bad = save_checkpoint({"model": other.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(EncodeError, match="does not fit"):
        encode(options(meta_run, out, checkpoint=str(bad), run_config=cfg))

    # A store without the meta-model's variable.
    renamed = tmp_path / "renamed.zarr"
    write_field_store(tiny_fields().rename(t2m="sst"), make_location(str(renamed)))
    with pytest.raises(EncodeError, match=r"lacks \['t2m'\]"):
        encode(options(meta_run, out, store=str(renamed)))

    code = run_main(
        encode_main,
        ["encode", "--store", str(renamed), "--checkpoint", str(run_dir), "--out", out, "--local"],
    )
    assert code == 2 and "lacks ['t2m']" in capsys.readouterr().err
    code = run_main(encode_main, ["encode", "--local", f"encode.store={renamed}"])
    err = capsys.readouterr().err
    assert code == 2 and "missing required key 'encode.out'" in err
    code = run_main(encode_main, ["encode", "--local", f"encode.store={renamed}", "encode.out=y"])
    err = capsys.readouterr().err
    assert code == 2 and "'encode.checkpoint': must not be empty (or set encode.model" in err
    code = run_main(encode_main, ["encode", "--store", "x", "encode.stepz=3"])
    assert code == 2 and "did you mean 'encode.steps'" in capsys.readouterr().err


def test_encode_spec_files_and_overrides(tmp_path):
    spec = load_encode_spec("configs/encode/gray_scott.yaml", ["encode.time_range=[0,8]"])
    assert spec.store == "runs/data/gray_scott.zarr" and spec.time_range == [0, 8]
    spec = load_encode_spec(
        "configs/encode/default.yaml",
        ["encode.store=s3://b/x.zarr", "encode.checkpoint=run", "encode.out=2024"],
    )
    assert (spec.store, spec.out, spec.steps, spec.optimizer) == (
        "s3://b/x.zarr",
        "2024",
        16,
        "rule",
    )
    bad = tmp_path / "enc.yaml"
    bad.write_text("encode:\n  steps: -1\n  store: a\n  checkpoint: b\n  out: c\n")
    with pytest.raises(ConfigError, match=r"enc\.yaml: invalid value for 'encode\.steps'"):
        load_encode_spec(bad)
    bad.write_text("encoding:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"unknown top-level key 'encoding'; did you mean"):
        load_encode_spec(bad)
    with pytest.raises(ConfigError, match=r"'encode\.optimizer': must be one of"):
        load_encode_spec("configs/encode/gray_scott.yaml", ["encode.optimizer=lbfgs"])


def test_encode_job_runs_a_spec_file_with_overrides(meta_run, tmp_path):
    out = tmp_path / "codes.zarr"
    argv = ["encode", "--config", "configs/encode/default.yaml", "--local"]
    argv += ["--store", meta_run["store"], "--checkpoint", str(meta_run["run_dir"])]
    argv += ["--out", str(out), "encode.steps=2", "encode.time_range=[0,4]"]
    argv += ["encode.larger_codes=warn"]
    assert run_main(encode_main, [*argv, "encode.progress=false"]) == 0
    group = zarr.open_group(str(out), mode="r")
    done = np.asarray(group["done"][...]).astype(bool)
    assert done[:4].all() and not done[4:].any()
    assert group.attrs["mia_codes"]["encoder"]["steps"] == 2


def test_codes_larger_than_the_data_are_refused_before_any_work(meta_run, tmp_path, capsys):
    out = tmp_path / "codes.zarr"
    argv = ["encode", "--local", "--store", meta_run["store"]]
    argv += ["--checkpoint", str(meta_run["run_dir"]), "--out", str(out), "encode.steps=2"]
    assert run_main(encode_main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are not smaller than the" in err
    assert "320 float32 bytes per time step" in err and "encode.larger_codes=warn" in err
    assert not out.exists()  # nothing written
    lines: list[str] = []
    s = run_encode(
        options(meta_run, out, steps=2, time_range=[0, CHUNK]), log=lines.append, local=True
    )
    assert s.done == CHUNK and s.compression_codes < 1
    assert any(line.startswith("warning: codes of") for line in lines)


def test_frames_of_fill_values_are_recorded_not_scored(meta_run, tmp_path):
    ds = tiny_fields()
    ds["t2m"][2] = np.nan  # a whole frame missing
    store = str(tmp_path / "holes.zarr")
    write_field_store(ds, make_location(store), chunk_time=CHUNK, split=split_by_time(T, 0.2, 0.2))
    out = tmp_path / "codes.zarr"
    lines: list[str] = []
    s = run_encode(
        options(meta_run, out, store=store, steps=2, time_range=[0, CHUNK]),
        log=lines.append,
        local=True,
    )
    assert s.done == CHUNK and s.missing == 1
    psnr = np.asarray(zarr.open_group(str(out), mode="r")["psnr"][...])
    assert np.isnan(psnr[2]).all() and np.isfinite(psnr[[0, 1, 3]]).all()
    assert s.psnr["max"] < 100 and np.isfinite(s.psnr["mean"])  # not 200 dB
    assert "1 (time, variable) fields had no valid value" in lines[-1]


def test_quantise_round_trip_is_within_half_a_level_per_tensor():
    from pipelines.codecs.quantise import LEVELS, dequantise, quantise

    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    sizes = [5, 3, 4]
    code = torch.randn(6, 12, generator=gen) * torch.tensor([10.0] * 5 + [0.1] * 3 + [0.0] * 4)
    q, scales = quantise(code, "int8", sizes)
    assert q.dtype == torch.int8 and scales.shape == (6, 3)
    back = dequantise(q, scales, sizes)
    # Each tensor keeps its own scale: the small one is not rounded away by the large one.
    err = (back - code).abs()
    assert (err[:, :5] <= scales[:, :1] / 2 + 1e-6).all()
    assert (err[:, 5:8] <= scales[:, 1:2] / 2 + 1e-6).all() and err[:, 5:8].max() < 1e-3
    assert (back[:, 8:] == 0).all() and int(q.abs().max()) == LEVELS
    half, none = quantise(code, "float16", sizes)
    assert none is None and half.dtype == torch.float16


def test_int8_codes_are_measured_as_stored_and_decode(meta_run, tmp_path):
    exact = encode(options(meta_run, tmp_path / "f32.zarr", time_range=[0, CHUNK]))
    out = tmp_path / "int8.zarr"
    s = encode(options(meta_run, out, code_dtype="int8", time_range=[0, CHUNK]))
    group = zarr.open_group(str(out))
    scales = group.attrs["mia_codes"]["code_scales"]
    assert group["codes"].dtype == np.int8 and group["code_scale"].shape == (T, scales)
    # Compression counts the scales; PSNR is that of the dequantised codes: close to the
    # float32 codes' (same seed, same fits) but not theirs (rounding moves it either way).
    assert s.compression_codes == pytest.approx(NLAT * NLON * 4 / (s.code_dim + 4 * scales))
    assert 0 < abs(exact.psnr["mean"] - s.psnr["mean"]) < 1.0
    ds = Decoder(make_location(str(out))).decode([0, 1])
    ref = Decoder(make_location(str(tmp_path / "f32.zarr"))).decode([0, 1])
    diff = float(np.abs(ds["t2m"].values - ref["t2m"].values).max())
    assert 0 < diff < 1.0  # K: the 8-bit codes decode close to the float32 ones


def test_an_ensemble_store_is_encoded_per_member_and_decodes_to_time_by_member(
    meta_run, tmp_path
):
    """Members are signals (time major), as in training; decoding restores both axes."""
    members = xr.concat([tiny_fields(0), tiny_fields(1)], dim="member")
    members = members.assign_coords(member=[0, 5]).transpose("time", "member", ...)
    store = str(tmp_path / "ensemble.zarr")
    split = split_by_time(T, 0.2, 0.2)
    write_field_store(members, make_location(store), chunk_time=CHUNK, split=split)
    out = tmp_path / "codes.zarr"
    s = encode(options(meta_run, out, store=store))
    assert (s.encoded, s.done) == (2 * T, 2 * T) and s.psnr["min"] > PSNR_FLOOR
    ds = Decoder(make_location(str(out))).decode()
    assert ds["t2m"].dims == ("time", "member", "latitude", "longitude")
    assert ds["member"].values.tolist() == [0, 5]
    truth = members.sortby("latitude")["t2m"]
    np.testing.assert_array_equal(ds["time"].values, truth["time"].values)
    # Signal i is (time i // 2, member i % 2): the decoded pairs match the stored PSNRs.
    group = zarr.open_group(str(out), mode="r")
    norm = group.attrs["mia_codes"]["variable_info"]["t2m"]["norm"]
    err = ((ds["t2m"] - truth).values / (norm["max"][0] - norm["min"][0])) ** 2
    psnr = -10 * np.log10(err.reshape(T * 2, -1).mean(1))
    np.testing.assert_allclose(psnr, np.asarray(group["psnr"][:, 0]), atol=0.05)
    one = Decoder(make_location(str(out))).decode(slice(3, 4))  # time 1, member 5
    assert one["t2m"].shape == (1, 1, NLAT, NLON) and one["member"].values.tolist() == [5]

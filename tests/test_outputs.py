"""Outputs never destroy what they did not create: build, encode and decode ``--out``.

Foreign destinations (a folder with a user's file, a file) are refused in one line unless
``--overwrite``; a store of the command's own kind is replaced atomically (a failure or a
full disk leaves the old one and no temporary folder); full disks in encode and decode,
half-created and half-encoded code stores (locks and S3: test_output_faults.py).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from test_encode import CHUNK, T, encode, meta_run, options  # noqa: F401
from zarr.storage import LocalStore

from pipelines.codecs.decode import Decoder, compact_ranges
from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores import DiskFull, StoreError, make_location, open_store
from pipelines.data.stores.output import check_output, output_state
from ray_jobs.common import run_main
from ray_jobs.encode import main as encode_main

SYNTH = ["--num-functions", "8", "--num-train", "6", "--num-points", "16"]


def user_folder(tmp_path, name="mine"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    return folder


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert len(lines[0]) < 260, lines[0]
    return lines[0]


def disk_full_on(monkeypatch, match) -> None:
    """Make every Zarr write of a local key for which ``match(key)`` holds fail: ENOSPC."""
    real = LocalStore.set

    async def set_(self, key, value):
        if match(key):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / key))
        return await real(self, key, value)

    monkeypatch.setattr(LocalStore, "set", set_)


def debris(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# --- build ----------------------------------------------------------------------------


def test_build_refuses_a_users_folder_or_file_and_overwrite_replaces_them(tmp_path, capsys):
    folder = user_folder(tmp_path)
    assert build_main(["synthetic1d", "--out", str(folder), *SYNTH]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(folder) in line and "a folder with other files" in line and "--overwrite" in line
    assert (folder / "thesis.txt").read_text() == "years of work"

    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    assert build_main(["synthetic1d", "--out", str(afile), *SYNTH]) == 2
    assert "is a file" in one_line(capsys.readouterr().err) and afile.read_text() == "keep"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_main(["synthetic1d", "--out", str(empty), *SYNTH]) == 0
    assert open_store(make_location(str(empty))).num_signals == 8

    for target in (folder, afile):
        assert build_main(["synthetic1d", "--out", str(target), "--overwrite", *SYNTH]) == 0
        assert open_store(make_location(str(target))).num_signals == 8
    assert not (folder / "thesis.txt").exists() and debris(tmp_path) == []


def test_build_era5_refuses_a_users_folder(tmp_path, capsys):
    from era5_samples import era5_dataset

    era5_dataset().to_netcdf(tmp_path / "era5.nc")
    folder = user_folder(tmp_path)
    argv = ["era5", "--input", str(tmp_path / "era5.nc"), "--out", str(folder), "--chunk", "4"]
    assert build_main([*argv, "--variables", "t", "--resolution", "10x20"]) == 2
    assert "a folder with other files" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]


def test_rebuilding_a_store_is_atomic_and_a_full_disk_keeps_the_old_one(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "synth.zarr"
    assert build_main(["synthetic1d", "--out", str(out), "--seed", "1", *SYNTH]) == 0
    before = np.asarray(open_store(make_location(str(out))).read(0, 1)["sine"])
    capsys.readouterr()
    with monkeypatch.context() as m:
        disk_full_on(m, lambda key: key.startswith("sine/c"))
        assert build_main(["synthetic1d", "--out", str(out), "--seed", "2", *SYNTH]) == 2
    line = one_line(capsys.readouterr().err)
    assert "no space left on device" in line and str(tmp_path) in line
    np.testing.assert_array_equal(open_store(make_location(str(out))).read(0, 1)["sine"], before)
    assert debris(tmp_path) == []
    # its own kind is replaced without --overwrite, atomically
    assert build_main(["synthetic1d", "--out", str(out), "--seed", "2", *SYNTH]) == 0
    after = np.asarray(open_store(make_location(str(out))).read(0, 1)["sine"])
    assert not np.array_equal(after, before) and debris(tmp_path) == []


@pytest.mark.parametrize("chunk", ["0", "-3"])
def test_build_chunk_must_be_positive(tmp_path, capsys, chunk):
    out = tmp_path / "s.zarr"
    assert build_main(["synthetic1d", "--out", str(out), "--chunk", chunk, *SYNTH]) == 2
    assert f"--chunk must be at least 1 (signals per chunk), got {chunk}" in one_line(
        capsys.readouterr().err
    )
    assert not out.exists()


def test_output_kinds_are_recognised(tmp_path):
    folder = user_folder(tmp_path)
    assert output_state(make_location(str(folder))) == "folder"
    assert output_state(make_location(str(tmp_path / "none"))) == "absent"
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="Zarr store of another program"):
        check_output(make_location(str(tmp_path / "other.zarr")), ("decoded",))


def test_a_file_where_a_folder_goes_and_the_reverse_are_one_line(tmp_path, capsys):
    folder = user_folder(tmp_path)
    assert run_main(encode_main, ["report", "--readme", "--results", str(folder)]) == 2
    assert "Is a directory" in one_line(capsys.readouterr().err)
    afile = tmp_path / "results"
    afile.write_text("keep")

    def write_into(argv: list[str]) -> int:  # what a study does with its --out-dir
        (Path(argv[0]) / "summary.json").write_text("{}")
        return 0

    assert run_main(write_into, [str(afile)]) == 2
    assert "Not a directory" in one_line(capsys.readouterr().err)
    assert afile.read_text() == "keep"


# --- decode ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codes(meta_run, tmp_path_factory):  # noqa: F811
    """A complete code store and one whose encode stopped after the first unit."""
    root = tmp_path_factory.mktemp("codes")
    full, half = root / "full.zarr", root / "half.zarr"
    encode(options(meta_run, full, steps=2))
    with pytest.raises(RuntimeError, match="injected fault"):
        encode(options(meta_run, half, steps=2), fault_at=CHUNK + 1)
    return {"full": str(full), "half": str(half)}


def decode(*argv: str) -> int:
    return run_main(encode_main, ["decode", *argv])


def test_decode_refuses_foreign_outputs_and_replaces_its_own(codes, tmp_path, capsys):
    folder = user_folder(tmp_path)
    assert decode(codes["full"], "--out", str(folder)) == 2
    assert "a folder with other files" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]

    assert decode(codes["full"], "--out", str(tmp_path / "x.txt")) == 2
    assert "unknown output suffix '.txt'" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "x.txt").exists()

    afile = tmp_path / "decoded.zarr"
    afile.write_text("not a store")
    assert decode(codes["full"], "--out", str(afile)) == 2
    assert "is a file" in one_line(capsys.readouterr().err)
    nc_dir = tmp_path / "d.nc"
    nc_dir.mkdir()
    (nc_dir / "a").write_text("x")
    assert decode(codes["full"], "--out", str(nc_dir)) == 2
    assert "a folder with other files, not a netCDF file" in one_line(capsys.readouterr().err)

    for out in (tmp_path / "dec.zarr", tmp_path / "dec", tmp_path / "dec.nc"):
        assert decode(codes["full"], "--out", str(out), "--time", "0:2") == 0
        assert decode(codes["full"], "--out", str(out), "--time", "0:3") == 0  # replaced
        opened = xr.open_dataset(out) if out.suffix == ".nc" else xr.open_zarr(out)
        assert opened.sizes["time"] == 3
        opened.close()
    assert decode(codes["full"], "--out", str(folder), "--overwrite", "--time", "1") == 0
    assert not (folder / "thesis.txt").exists() and debris(tmp_path) == []


def test_decode_disk_full_removes_its_partial_output(codes, tmp_path, monkeypatch, capsys):
    out = tmp_path / "dec.zarr"
    assert decode(codes["full"], "--out", str(out), "--time", "0:2") == 0
    capsys.readouterr()
    disk_full_on(monkeypatch, lambda key: key.startswith("t2m/c"))
    assert decode(codes["full"], "--out", str(out)) == 2
    line = one_line(capsys.readouterr().err)
    assert "no space left on device" in line and str(tmp_path) in line
    assert xr.open_zarr(out).sizes["time"] == 2 and debris(tmp_path) == []


def test_decoding_a_half_encoded_store_names_the_missing_steps(codes, tmp_path, capsys):
    out = tmp_path / "partial.zarr"
    assert decode(codes["half"], "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert f"{T - CHUNK} of {T} time steps are not encoded yet ({CHUNK}-{T - 1})" in err
    assert xr.open_zarr(out).sizes["time"] == CHUNK
    assert decode(codes["half"], "--out", str(tmp_path / "c.zarr"), "--complete") == 2
    assert "--complete" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "c.zarr").exists()
    assert decode(codes["half"], "--out", str(tmp_path / "t.zarr"), "--time", "2:6") == 2
    assert f"time steps {CHUNK}-5 are not encoded yet" in one_line(capsys.readouterr().err)
    assert compact_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert Decoder(make_location(codes["full"])).missing.size == 0


# --- encode ---------------------------------------------------------------------------


def encode_cli(meta_run, out, *extra: str) -> int:  # noqa: F811
    return run_main(
        encode_main,
        ["encode", "--store", meta_run["store"], "--checkpoint", str(meta_run["run_dir"]),
         "--out", str(out), "--local", "encode.steps=2", "encode.progress=false",
         "encode.larger_codes=warn", *extra],
    )  # fmt: skip


def test_encode_refuses_a_file_or_users_folder(meta_run, tmp_path, capsys):  # noqa: F811
    afile = tmp_path / "codes.zarr"
    afile.write_text("keep")
    assert encode_cli(meta_run, afile) == 2
    assert "is a file" in one_line(capsys.readouterr().err) and afile.read_text() == "keep"
    folder = user_folder(tmp_path)
    assert encode_cli(meta_run, folder) == 2
    assert "a folder with other files" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    assert encode_cli(meta_run, afile, "--overwrite", "encode.time_range=[0,4]") == 0
    assert zarr.open_group(str(afile)).attrs["mia_codes"]["num_time"] == T


def test_encode_disk_full_is_one_line_releases_the_lock_and_resumes(
    meta_run,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    out = tmp_path / "codes.zarr"
    written = []

    def full_after_first_unit(key: str) -> bool:
        if key.startswith("codes/c"):
            written.append(key)
            return len(written) > 1
        return False

    with monkeypatch.context() as m:
        disk_full_on(m, full_after_first_unit)
        assert encode_cli(meta_run, out) == 2
    line = one_line(capsys.readouterr().err)
    assert "no space left on device writing codes in" in line and str(out) in line
    group = zarr.open_group(str(out), mode="r")
    assert not group.attrs["mia_lock"]  # released
    done = np.asarray(group["done"][...]).astype(bool)
    assert done[:CHUNK].all() and not done[CHUNK:].any()
    assert encode_cli(meta_run, out) == 0  # resumes
    assert np.asarray(zarr.open_group(str(out))["done"][...]).all()


def test_a_half_created_code_store_is_recreated(meta_run, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "codes.zarr"
    with monkeypatch.context() as m:
        disk_full_on(m, lambda key: key.startswith("meta/"))
        with pytest.raises(DiskFull, match="no space left on device writing codes"):
            encode(options(meta_run, out, steps=2))
    assert "mia_codes_creating" in zarr.open_group(str(out), mode="r").attrs
    with pytest.raises(StoreError, match="creation never finished"):
        Decoder(make_location(str(out)))
    assert encode(options(meta_run, out, steps=2)).done == T
    # one left by an older version: arrays, no attributes at all
    legacy = tmp_path / "legacy.zarr"
    group = zarr.open_group(str(legacy), mode="w")
    group.create_array("codes", shape=(2, 2), dtype="float32")
    group.create_group("meta")
    assert encode(options(meta_run, legacy, steps=2)).done == T

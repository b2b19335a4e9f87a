"""Patch-aligned stores (issue 32): whole-patch chunks, reads that follow them, bad input.

Bad input is a one-line error naming data.patch (or the builder's --patch) and the fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr
from test_patches import NLAT, NLON, field_store
from zarr.storage import LocalStore

from mia_core.config import ConfigError
from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores import patch_chunks as pc
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.patches import PatchStore


def _opened(path, patch):
    base = open_store(make_location(str(path)), ["a", "b"])
    return base, PatchStore(base, patch)


@pytest.fixture
def chunked(tmp_path):
    """12 x 20 store built for [4, 4] with one patch per chunk and one step per chunk."""
    path = field_store(tmp_path / "c.zarr", patch=(4, 4), chunk_bytes=1)
    return path, *_opened(path, [4, 4])


def test_layout_holds_whole_patches_of_about_4_mb():
    for grid, patch in [((721, 1440), (32, 32)), ((256, 256, 256), (16, 16, 16))]:
        steps, space = pc.patch_layout(grid, patch, 4, 64)
        assert all(c % p == 0 or c == g for c, p, g in zip(space, patch, grid, strict=True))
        assert 2**20 <= 4 * steps * np.prod(space) <= 16 * 2**20 and 1 <= steps <= 64
    assert pc.patch_layout((46, 90), (32, 32), 4, 64) == (64, (46, 90))  # small: whole grid
    assert pc.patch_layout((12, 20), (4, 4), 4, 2, target=1) == (1, (4, 4))
    assert pc.splitting_axis((12, 20), (8, 8), (8, 16)) is None  # last chunks end the grid
    assert pc.splitting_axis((12, 20), (8, 8), (4, 20)) == 0
    assert pc.splitting_axis((10, 8), (4, 8), (4, 8), flipped=True) == 0  # 10 - 4 = 6


def test_store_chunks_hold_whole_patches_and_record_the_patch(chunked, tmp_path):
    path, base, ps = chunked
    group = zarr.open_group(path, mode="r")
    assert group["a"].chunks == (1, 4, 4) and group.attrs["mia_built_patch"] == [4, 4]
    assert group["a"].metadata.zarr_format == 3
    assert base.spatial_chunks == {"a": (4, 4), "b": (4, 4)}
    plain = zarr.open_group(field_store(tmp_path / "p.zarr", patch=()), mode="r")
    assert plain["a"].chunks == (2, NLAT, NLON) and "mia_built_patch" not in plain.attrs
    # reads of any range equal the tiles of whole steps
    whole = ps.tiles(base.read(0, base.num_signals)["b"])
    for a, b in [(1, 2), (3, 7), (5, 20), (14, 31), (0, 45)]:
        np.testing.assert_array_equal(ps.read(a, b)["b"], whole[a:b])


def test_region_read_of_a_descending_latitude(tmp_path):
    ds = xr.Dataset(
        {"a": (("time", "lat", "lon"), np.arange(2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5))},
        coords={"time": [0, 1], "lat": np.linspace(50.0, -50.0, 6), "lon": np.arange(5.0)},
    )
    write_field_store(ds, make_location(str(tmp_path / "d.zarr")), normalisation="none")
    store = open_store(make_location(str(tmp_path / "d.zarr")))
    assert store.flipped["a"]
    full = store.read(0, 2)["a"].reshape(2, 6, 5)
    got = store.read(1, 2, region=[slice(1, 4), slice(2, 5)])["a"]
    np.testing.assert_array_equal(got.reshape(1, 3, 3), full[1:, 1:4, 2:5])
    # built for patches, a descending latitude is stored ascending (patches count from the
    # south, so do the chunks): the same values, chunks of whole patches
    loc = make_location(str(tmp_path / "p.zarr"))
    write_field_store(ds, loc, normalisation="none", patch=(4, 4), chunk_bytes=1)
    built = open_store(loc)
    assert not built.flipped["a"] and built.spatial_chunks["a"] == (4, 4)
    np.testing.assert_array_equal(built.read(0, 2)["a"], store.read(0, 2)["a"])
    PatchStore(built, [4, 4])  # 6 = 4 + a partial last chunk: whole patches


def _chunk_reads(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = LocalStore.get

    async def get(self, key, *args, **kwargs):
        if "/c/" in key:
            seen.append(key)
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", get)
    return seen


def test_a_few_patches_read_only_their_chunks(chunked, monkeypatch):
    _, _, ps = chunked
    assert ps.per_step == 15  # 3 x 5 patches of 4 x 4
    seen = _chunk_reads(monkeypatch)
    ps.read(15 + 6, 15 + 8)  # step 1, patches (1, 1) and (1, 2)
    assert sorted(seen) == [f"{v}/c/1/1/{j}" for v in "ab" for j in (1, 2)]


def test_chunk_ranges_are_one_chunk_row_of_one_step(chunked, monkeypatch):
    _, base, ps = chunked
    ranges = ps.chunk_ranges()
    assert ranges[:4] == [(0, 5), (5, 10), (10, 15), (15, 20)] and ps.chunk_size == 5
    assert ranges[-1] == (ps.num_signals - 5, ps.num_signals)
    seen = _chunk_reads(monkeypatch)
    ps.read(*ranges[4])  # step 1, chunk row 1: 5 chunks per variable, nothing else
    assert sorted(seen) == [f"{v}/c/1/1/{j}" for v in "ab" for j in range(5)]


def test_bad_patch_settings_are_one_line_config_errors(chunked, tmp_path):
    path, base, _ = chunked
    cases = [
        (
            field_store(tmp_path / "n.zarr", patch=()),
            [8, 8],
            r"built without patches.*"
            r"rebuild it with --patch 8x8, or set data.patch: \[\]",
        ),  # fmt: skip
        (path, [8, 8], r"data.patch \[8, 8\] splits the chunks \[4, 4\] of 'a'"),
        (path, [4, 32], r"data.patch \[4, 32\] does not fit the grid \[12, 20\]"),
    ]
    for store, patch, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            _opened(store, patch)
        assert "\n" not in str(err.value)
    assert _opened(path, [2, 2])[1].per_step == 6 * 10  # chunks of 4 hold whole 2 x 2 patches
    built = field_store(tmp_path / "big.zarr", patch=(16, 32))  # the builder decided: cut
    ps = _opened(built, [16, 32])[1]
    assert ps.patch == (NLAT, NLON) and ps.per_step == 1


def test_cli_reports_bad_patch_settings_in_one_line(chunked, tmp_path, capsys):
    from ray_jobs.train import main as train_main

    path, _, _ = chunked
    plain = field_store(tmp_path / "n.zarr", patch=())
    for store, patch, words in [
        (plain, "[8, 8]", "--patch 8x8"),
        (path, "[8, 8]", "splits the chunks"),
        (path, "[4, 32]", "does not fit the grid [12, 20]"),
    ]:
        code = train_main(
            [
                "--config",
                "configs/experiments/default.yaml",
                "--local",
                f"data.store={store}",
                "data.modalities=[a]",
                f"data.patch={patch}",
                f"run.out_dir={tmp_path}",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and "data.patch" in err and words in err, err


def test_build_volumes_with_patch(tmp_path, monkeypatch, capsys):
    sim = ["--simulate", "gray-scott", "--size", "24", "--steps", "4", "--normalisation", "none"]
    assert build_main(["volumes", "--out", str(tmp_path / "p.zarr"), *sim]) == 0
    capsys.readouterr()
    monkeypatch.setattr(pc, "CHUNK_BYTES", 4 * 8**3 * 2)  # two steps of one 8^3 patch
    out = tmp_path / "v.zarr"
    assert build_main(["volumes", "--out", str(out), *sim, "--patch", "8x8x8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["patch"] == [8, 8, 8] and summary["chunk_shape"] == [2, 8, 8, 8]
    group = zarr.open_group(str(out), mode="r")
    assert group["u"].chunks == (2, 8, 8, 8) and group.attrs["mia_built_patch"] == [8, 8, 8]
    plain, patched = (open_store(make_location(str(tmp_path / n))) for n in ("p.zarr", "v.zarr"))
    np.testing.assert_array_equal(plain.read(0, 4)["u"], patched.read(0, 4)["u"])
    assert PatchStore(patched, [8, 8, 8]).per_step == 27
    assert build_main(["volumes", "--out", str(tmp_path / "x.zarr"), *sim, "--patch", "8x8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--patch must be 3 positive sizes" in err


def test_build_era5_with_patch(tmp_path, monkeypatch):
    from era5_samples import build_store, era5_dataset

    era5_dataset(nt=4).to_netcdf(tmp_path / "era5.nc")
    monkeypatch.setattr(pc, "CHUNK_BYTES", 8 * 4 * 4 * 4)  # 4 steps of a 4 x 4 patch of t
    summary, store = build_store(tmp_path, tmp_path / "era5.nc", "--resolution", "10x20",
                                 "--patch", "4x4")  # fmt: skip
    assert summary["patch"] == [4, 4] and summary["chunk_shape"] == [4, 4, 4]
    assert store.attrs["mia_built_patch"] == [4, 4]
    assert store.spatial_chunks == {"t": (4, 4), "sp": (4, 4)} and store.time_chunks["t"] == 4
    assert PatchStore(store, [4, 4]).per_step == 3 * 5
    with pytest.raises(ValueError, match="--patch must be 2"):
        build_store(tmp_path, tmp_path / "era5.nc", "--patch", "4x4x4", name="x.zarr")

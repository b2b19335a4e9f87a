"""Patch signals (``data.patch``): values, global coordinates, edge masks, splits, training."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from store_samples import write_signals
from tiny_configs import TINY_META_MODEL

from mia_core.config import ConfigError, load_config
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.resolve import open_training_store
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.patches import PatchStore, open_patched
from pipelines.data.stores.reader import grid_coords
from pipelines.data.streams import store_episodes
from pipelines.jobs import train

NLAT, NLON, NT = 12, 20, 3  # [8, 8] patches: 2 x 3 per step, the last row and column padded


def field_store(path, nt: int = NT, split=None, patch=(8, 8), **kw) -> str:
    """Two variables on a 12 x 20 grid; ``b`` has scattered NaNs and an all-NaN corner tile.

    Built for ``patch`` (``mia_built_patch``, chunks of whole patches; ``kw``: e.g.
    ``chunk_bytes``), or without patches when ``patch`` is empty.
    """
    rng = np.random.default_rng(0)
    a = rng.normal(size=(nt, NLAT, NLON)).astype(np.float32)
    b = rng.normal(size=(nt, NLAT, NLON)).astype(np.float32)
    b[rng.random(b.shape) < 0.1] = np.nan
    b[:, :8, :8] = np.nan  # patch 0 has no value of b at any step
    ds = xr.Dataset(
        {"a": (("time", "lat", "lon"), a), "b": (("time", "lat", "lon"), b)},
        coords={
            "time": np.arange(nt),
            "lat": np.linspace(-50.0, 50.0, NLAT),
            "lon": np.linspace(0.0, 342.0, NLON),
        },
    )
    split = np.arange(nt, dtype=np.int8) % 3 if split is None else split
    write_field_store(ds, make_location(str(path)), 2, split, "none", patch=patch, **kw)
    return str(path)


@pytest.fixture
def stores(tmp_path):
    loc = make_location(field_store(tmp_path / "f.zarr"))
    base = open_store(loc, ["a", "b"])
    return base, PatchStore(base, [8, 8], "global")


def test_patch_values_are_tiles_of_the_whole_field(stores):
    base, ps = stores
    assert ps.per_step == 6 and ps.num_signals == NT * 6
    assert ps.info["a"].grid_shape == (8, 8) and ps.info["a"].coords is None
    whole = base.read(0, NT)
    got = ps.read(0, ps.num_signals)
    for s in range(ps.num_signals):
        t, k = divmod(s, 6)
        i, j = divmod(k, 3)
        for m in ("a", "b"):
            field = whole[m][t, :, 0].reshape(NLAT, NLON)
            tile = field[8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
            patch = got[m][s, :, 0].reshape(8, 8)
            h, w = tile.shape
            np.testing.assert_array_equal(patch[:h, :w], tile)  # NaNs where the data has them
            assert np.isnan(patch[h:]).all() and np.isnan(patch[:, w:]).all()  # edge padding
    # a read across a chunk boundary and starting mid-step equals the same rows
    part = ps.read(5, 14)
    np.testing.assert_array_equal(part["a"], got["a"][5:14])


def test_reads_touch_only_the_time_steps_of_the_patches(stores, monkeypatch):
    base, ps = stores
    seen = []
    real = type(base).read

    def counting(self, a, b, **kw):
        seen.append((a, b))
        return real(self, a, b, **kw)

    monkeypatch.setattr(type(base), "read", counting)
    ps.read(7, 11)  # patches 1..4 of step 1
    assert seen == [(1, 2)]
    assert ps.chunk_ranges() == [(0, 12), (12, 18)]  # the store's 2-step chunks


def test_coordinates_are_global(stores):
    _, ps = stores
    full = grid_coords((NLAT, NLON)).reshape(NLAT, NLON, 2)
    coords = ps.read_coords("a", 0, 12)
    assert coords.shape == (12, 64, 2)
    np.testing.assert_array_equal(coords[6], coords[0])  # same patch, next step
    for k in range(6):
        i, j = divmod(k, 3)
        c = coords[k].reshape(8, 8, 2)
        tile = full[8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
        h, w = tile.shape[:2]
        np.testing.assert_allclose(c[:h, :w], tile, atol=1e-6)
        assert c.min() >= -1.0 and c.max() <= 1.0  # padding repeats the edge coordinate
    np.testing.assert_allclose(coords[5].reshape(8, 8, 2)[3, 3], [1.0, 1.0], atol=1e-6)


def test_local_coordinates_are_one_frame_shared_by_every_patch(stores):
    base, _ = stores
    local = PatchStore(base, [8, 8])  # the default
    assert local.coords_mode == "local" and local.attrs["mia_patch"]["coords"] == "local"
    np.testing.assert_array_equal(local.info["a"].coords, grid_coords((8, 8)))
    np.testing.assert_array_equal(local.read_coords("a", 0, 12), grid_coords((8, 8)))
    with pytest.raises(ConfigError, match="data.patch_coords"):
        PatchStore(base, [8, 8], "polar")


def test_split_validity_and_edge_masks(stores):
    base, ps = stores
    np.testing.assert_array_equal(ps.split, np.repeat(base.split, 6))
    assert list(ps.split[:6]) == [0] * 6 and list(ps.split[6:12]) == [1] * 6
    # patch 0 has no b at all: invalid at every step, never drawn
    assert not ps.valid[::6].any() and ps.valid[1:6].all()
    spec = EpisodeSpec({"a": (1.0, 1.0), "b": (1.0, 1.0)}, 0, 1, "t")
    (episode,) = list(store_episodes(ps, spec, 8, "train", shuffle=False))
    mb = episode["a"]
    assert mb.batch_size == 5 and mb.query_x.shape == (5, 64, 2)
    # patch 5 (bottom-right) keeps 4 x 4 points of the grid; the rest is masked
    assert mb.query_mask[4].sum() == 16 and mb.support_mask[4].sum() == 16
    assert episode["b"].query_mask[4].sum() <= 16  # b's NaNs stay masked too


def test_bad_patch_is_a_one_line_config_error(tmp_path, stores):
    base, _ = stores
    for bad in ([8], [8, 8, 8]):
        with pytest.raises(ConfigError, match=r"data\.patch .* grid \[12, 20\]") as err:
            PatchStore(base, bad)
        assert "\n" not in str(err.value)
    loc, _ = write_signals(tmp_path / "s.zarr")
    with pytest.raises(ConfigError, match=r"data\.patch needs grid variables; 'pts'"):
        open_patched(loc, ["img", "pts"], [2, 2])
    assert open_patched(loc, ["img"], [2, 2]).num_signals == 10 * 2 * 3  # 4 x 5 grid
    with pytest.raises(ConfigError, match=r"data\.patch.*positive"):
        load_config("configs/experiments/default.yaml", ["data.patch=[0, 8]"])
    assert open_patched(base.location, ["a"], []).num_signals == NT  # empty: whole signals
    cfg = load_config(
        "configs/experiments/default.yaml",
        [f"data.store={base.location.display}", "data.modalities=[a]", "data.patch=[4]"],
    )
    with pytest.raises(ConfigError, match="data.patch"):
        open_training_store(cfg)


def test_cli_reports_a_patch_of_the_wrong_rank_in_one_line(tmp_path, capsys):
    from ray_jobs.train import main as train_main

    store = field_store(tmp_path / "f.zarr")
    args = [f"data.store={store}", "data.modalities=[a]", "data.patch=[4, 4, 4]"]
    code = train_main(
        [
            "--config",
            "configs/experiments/default.yaml",
            "--local",
            *args,
            f"run.out_dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "data.patch [4, 4, 4]" in err and "[12, 20]" in err


def patch_config(store: str, out_dir, *extra: str):
    return load_config(
        "configs/experiments/default.yaml",
        [
            f"data.store={store}",
            "data.modalities=[a, b]",
            "data.patch=[8, 8]",
            "data.support_ratio=[0.2, 0.5]",
            *TINY_META_MODEL,
            "run.steps=2",
            "run.batch_size=4",
            "run.log_every=1",
            "run.eval_every=2",
            "run.checkpoint_every=2",
            "run.eval_bins=[[0.2, 0.5]]",
            "run.eval_repeats=1",
            "run.eval_batch_size=8",
            f"run.out_dir={out_dir}",
            *extra,
        ],
    )


def test_local_meta_training_on_patches(tmp_path):
    split = np.array([0, 0, 1, 2], np.int8)
    store = field_store(tmp_path / "f.zarr", nt=4, split=split)
    lines: list[str] = []
    res = train(patch_config(store, tmp_path / "runs"), local=True, log=lines.append)
    assert res.step == 2
    assert any("patches [8, 8] (6 per time step)" in line for line in lines)
    rows = res.evaluation
    assert rows and all(r.count == 5 for r in rows)  # 5 valid test patches per modality
    assert all(np.isfinite(r.metrics["nmse_all"]) for r in rows)


def test_ray_data_rows_are_patches(ray_session, stores, tmp_path):
    from pipelines.data.streams import dataset_episodes
    from pipelines.tasks.meta import MetaLearningTask

    _, ps = stores
    # the Ray Train input of meta-training: the training split, as patch rows
    ds = MetaLearningTask.ray_datasets(
        patch_config(ps.location.display, tmp_path, "data.patch_coords=global"), 0.5
    )["train"]
    rows = sorted(ds.iter_rows(), key=lambda r: r["index"])
    assert [r["index"] for r in rows] == [1, 2, 3, 4, 5]  # step 0 (train), patch 0 invalid
    direct = ps.read(0, 6)
    for r in rows:
        np.testing.assert_array_equal(r["m:b"], direct["b"][r["index"]])
        np.testing.assert_array_equal(r["c:a"], ps.read_coords("a", r["index"], r["index"] + 1)[0])
    spec = EpisodeSpec({"a": (0.2, 0.5), "b": (0.2, 0.5)}, 3, 1, "t")
    (via_ray,) = list(dataset_episodes(ds, ps, spec, 8))
    (local,) = list(store_episodes(ps, spec, 8, "train", shuffle=False))
    for m in ("a", "b"):
        for key in ("query_x", "query_y", "query_mask", "support_x", "support_y"):
            assert np.array_equal(getattr(via_ray[m], key).numpy(), getattr(local[m], key).numpy())


def test_a_store_larger_than_the_cache_reads_each_range_once_per_epoch(stores, monkeypatch):
    from pipelines.data import streams

    _, ps = stores
    spec = EpisodeSpec({"a": (0.2, 0.5), "b": (0.2, 0.5)}, 3, 1, "t")
    reads = []
    real = type(ps).read

    def counting(self, a, b):
        reads.append((a, b))
        return real(self, a, b)

    monkeypatch.setattr(type(ps), "read", counting)
    # a cache of ~1.5 ranges: one global permutation would reread ranges all epoch long
    per_signal = 2 * 4 * 64 * 2  # two modalities, 64 points, value + per-signal coordinate
    monkeypatch.setattr(streams, "CACHE_BYTES", 9 * per_signal)
    selected = np.flatnonzero(ps.valid)
    order = streams.shuffled_order(ps, selected, 0, 0)
    np.testing.assert_array_equal(np.sort(order), selected)  # a permutation
    np.testing.assert_array_equal(order, streams.shuffled_order(ps, selected, 0, 0))
    assert not np.array_equal(order, streams.shuffled_order(ps, selected, 0, 1))
    episodes = list(store_episodes(ps, spec, 2, split=None, shuffle=True))
    assert sum(e["a"].batch_size for e in episodes) == selected.size
    assert len(reads) == len(set(reads)) == len(ps.chunk_ranges())  # each range once


def test_grid_coordinates_are_computed_only_when_read(stores):
    from pipelines.data.stores.store_base import GRID

    base, _ = stores
    fresh = open_store(base.location, ["a", "b"])
    PatchStore(fresh, [8, 8])  # patches use their own frame: the grid's are never built
    assert fresh.info["a"].__dict__["_coords"] == GRID and not fresh.info["a"].per_signal
    np.testing.assert_array_equal(fresh.info["a"].coords, grid_coords((NLAT, NLON)))

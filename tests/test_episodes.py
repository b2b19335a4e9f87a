"""Episodes from store rows: ratio ranges, masks, reproducibility, batching, spatial stride."""

import numpy as np
import pytest
import torch
from episode_checks import assert_same_signal, signal_tensors

from pipelines.data.episodes import EpisodeSpec, build_episode, stride_index
from pipelines.data.stores import StoreError
from pipelines.data.stores.reader import grid_coords

RANGES = {"line": (0.05, 0.2), "img": (0.5, 0.9), "cloud": (0.3, 0.3)}


def _rows(n=24, seed=0):
    """Rows of three modalities with NaN holes; coordinates unique per point."""
    rng = np.random.default_rng(seed)
    line = rng.normal(size=(n, 40, 1)).astype(np.float32)
    img = rng.normal(size=(n, 6 * 8, 2)).astype(np.float32)
    cloud = rng.normal(size=(n, 15, 1)).astype(np.float32)
    for b in range(n):  # a different number of NaN points per signal
        line[b, rng.choice(40, size=b % 30, replace=False)] = np.nan
        img[b, rng.choice(48, size=b % 5, replace=False), b % 2] = np.nan  # one channel NaN
    cloud[3, :14] = np.nan  # a single valid point
    coords = {
        "line": grid_coords((40,)),
        "img": grid_coords((6, 8)),
        "cloud": rng.uniform(-1, 1, size=(n, 15, 3)).astype(np.float32),  # per signal
    }
    return {"line": line, "img": img, "cloud": cloud}, coords


def _build(rows, coords, idx, spec, epoch=0, **kw):
    idx = np.asarray(idx)
    sub_rows = {m: v[idx] for m, v in rows.items()}
    sub_coords = {m: (c[idx] if c.ndim == 3 else c) for m, c in coords.items()}
    return build_episode(sub_rows, idx, sub_coords, spec, epoch, scale=idx + 1.0, **kw)


def _support_indices(mb, b):
    """Query-point indices of signal ``b``'s support points, in support order."""
    qx = mb.query_x[0 if mb.query_x.shape[0] == 1 else b].numpy()
    lookup = {tuple(x): i for i, x in enumerate(qx)}
    n = int(mb.support_mask[b].sum())
    return [lookup[tuple(x)] for x in mb.support_x[b, :n].numpy()]


def test_support_counts_respect_ratio_range_per_modality():
    rows, coords = _rows(n=48)
    ep = _build(rows, coords, np.arange(48), EpisodeSpec(RANGES, seed=7))
    for m, (lo, hi) in RANGES.items():
        mb = ep[m]
        n_valid = np.isfinite(rows[m]).all(-1).sum(1)
        counts = mb.support_mask.sum(1).numpy().astype(int)
        np.testing.assert_array_equal(mb.query_mask.sum(1).numpy(), n_valid)
        for b in range(48):
            least = min(n_valid[b], max(1, round(lo * n_valid[b])))
            most = min(n_valid[b], max(1, round(hi * n_valid[b])))
            assert least <= counts[b] <= most, (m, b, counts[b], n_valid[b])
        if lo < hi:  # R is drawn per signal, not fixed per batch
            assert len(set((counts / np.maximum(n_valid, 1)).round(3))) > 5
    # a fixed ratio gives exactly max(1, round(R * n_valid))
    n_valid = np.isfinite(rows["cloud"]).all(-1).sum(1)
    want = [max(1, round(0.3 * n)) for n in n_valid]
    np.testing.assert_array_equal(ep["cloud"].support_mask.sum(1).numpy(), want)
    assert want[3] == 1  # the signal with one valid point keeps it


def test_masks_and_nan_points():
    rows, coords = _rows()
    ep = _build(rows, coords, np.arange(24), EpisodeSpec(RANGES, seed=1))
    for m, mb in ep.items():
        valid = np.isfinite(rows[m]).all(-1)
        bsz, ps = mb.support_mask.shape
        assert mb.support_x.shape[:2] == mb.support_y.shape[:2] == (bsz, ps)
        torch.testing.assert_close(mb.query_mask, torch.from_numpy(valid.astype(np.float32)))
        assert torch.isfinite(mb.query_y).all() and torch.isfinite(mb.support_y).all()
        assert (mb.query_y[torch.from_numpy(np.isnan(rows[m]))] == 0).all()  # NaN zeroed
        torch.testing.assert_close(mb.scale, torch.arange(1.0, 25.0))
        for b in range(bsz):
            n = int(mb.support_mask[b].sum())
            # 1 for the first n slots, 0 for the padding
            assert mb.support_mask[b, :n].eq(1).all() and mb.support_mask[b, n:].eq(0).all()
            sup = _support_indices(mb, b)
            assert len(set(sup)) == n  # without replacement
            assert sorted(sup) == torch.nonzero(mb.query_support[b]).flatten().tolist()
            assert set(mb.query_support[b].unique().tolist()) <= {0.0, 1.0}
            assert valid[b, sup].all()  # NaN points are never in the support
            np.testing.assert_array_equal(mb.support_y[b, :n].numpy(), rows[m][b, sup])
    assert ep["cloud"].query_x.shape == (24, 15, 3)  # per-signal coordinates kept
    assert ep["img"].query_x.shape == (1, 48, 2)  # shared grid coordinates


def test_reproducible_per_seed_and_epoch():
    rows, coords = _rows()
    spec = EpisodeSpec(RANGES, seed=3)
    a = _build(rows, coords, np.arange(24), spec, epoch=2)
    b = _build(rows, coords, np.arange(24), spec, epoch=2)
    for m in a:
        for x, y in zip(
            [getattr(a[m], f) for f in a[m].__dataclass_fields__],
            [getattr(b[m], f) for f in b[m].__dataclass_fields__],
            strict=True,
        ):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    for other in (
        _build(rows, coords, np.arange(24), spec, epoch=3),
        _build(rows, coords, np.arange(24), EpisodeSpec(RANGES, seed=4), epoch=2),
    ):
        for m in ("line", "img"):
            assert not torch.equal(a[m].query_support, other[m].query_support)


def test_independent_of_batching_and_order():
    rows, coords = _rows()
    spec = EpisodeSpec(RANGES, seed=11)
    batch_a = np.arange(0, 12)
    batch_b = np.array([20, 5, 17, 9, 2])  # other company, other order, other padding
    ep_a = _build(rows, coords, batch_a, spec, epoch=1)
    ep_b = _build(rows, coords, batch_b, spec, epoch=1)
    alone = {i: _build(rows, coords, [i], spec, epoch=1) for i in (2, 5, 9)}
    for i in (2, 5, 9):
        pos_a, pos_b = int(np.flatnonzero(batch_a == i)[0]), int(np.flatnonzero(batch_b == i)[0])
        assert_same_signal(signal_tensors(ep_a, pos_a), signal_tensors(ep_b, pos_b))
        assert_same_signal(signal_tensors(ep_a, pos_a), signal_tensors(alone[i], 0))


def test_spatial_stride_keeps_the_right_grid_points():
    # 2-D: rows and columns 0, 2, 4 of a 6 x 7 grid
    keep = stride_index((6, 7), 2)
    want = [r * 7 + c for r in (0, 2, 4) for c in (0, 2, 4, 6)]
    np.testing.assert_array_equal(keep, want)
    np.testing.assert_array_equal(stride_index((10,), 3), [0, 3, 6, 9])
    np.testing.assert_array_equal(stride_index((4, 5), 1), np.arange(20))
    k3 = stride_index((3, 4, 5), 2)
    grid = np.arange(60).reshape(3, 4, 5)
    np.testing.assert_array_equal(k3, grid[::2, ::2, ::2].reshape(-1))

    rng = np.random.default_rng(0)
    vals = rng.normal(size=(3, 42, 1)).astype(np.float32)
    xc = grid_coords((6, 7))
    ep = build_episode(
        {"img": vals},
        np.arange(3),
        {"img": xc},
        EpisodeSpec({"img": (0.5, 0.5)}, spatial_stride=2),
        grid_shapes={"img": (6, 7)},
    )
    mb = ep["img"]
    assert mb.query_x.shape == (1, 12, 2) and mb.query_y.shape == (3, 12, 1)
    np.testing.assert_array_equal(mb.query_x[0].numpy(), xc[want])
    np.testing.assert_array_equal(mb.query_y.numpy(), vals[:, want])
    assert mb.support_mask.sum(1).tolist() == [6.0, 6.0, 6.0]
    with pytest.raises(ValueError, match="grid_shapes"):
        build_episode(
            {"img": vals},
            np.arange(3),
            {"img": xc},
            EpisodeSpec({"img": (0.5, 0.5)}, spatial_stride=2),
        )


def test_all_nan_signal_names_store_variable_and_index():
    rows, coords = _rows(n=6)
    rows["img"][4] = np.nan
    spec = EpisodeSpec(RANGES, store_name="s3://mia-data/demo.zarr")
    with pytest.raises(StoreError) as err:
        _build(rows, coords, [1, 4, 5], spec)
    msg = str(err.value)
    assert "s3://mia-data/demo.zarr" in msg and "'img'" in msg and "signal 4" in msg


def test_support_order_is_a_stable_argsort_prefix():
    from pipelines.data.episodes import _smallest

    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 80))
        key = rng.integers(0, 6, n).astype(float)  # many ties
        key[rng.random(n) < 0.3] = 2.0
        k = int(rng.integers(1, n + 1))
        np.testing.assert_array_equal(_smallest(key, k), np.argsort(key, kind="stable")[:k])


def test_store_episodes_reads_each_chunk_once_per_shuffled_epoch(tmp_path, monkeypatch):
    from pipelines.data.stores import ModalityData, make_location, open_store, write_signal_store
    from pipelines.data.stores.reader import SignalStore
    from pipelines.data.streams import store_episodes

    rng = np.random.default_rng(0)
    loc = make_location(str(tmp_path / "s"))
    n = 60
    write_signal_store(
        loc,
        {
            "a": ModalityData(rng.normal(size=(n, 12, 1))),
            "p": ModalityData(
                rng.normal(size=(n, 5, 1)), "points", coords=rng.uniform(-1, 1, (n, 5, 2))
            ),
        },
        np.zeros(n),
        scale=np.arange(1, n + 1),  # identifies the signal inside an episode
        chunk_signals=4,  # 15 chunks, more than a handful
    )
    coords = open_store(loc).read_coords("p", 0, n)
    store = open_store(loc)
    reads, coord_reads = [], []
    real_read, real_coords = SignalStore.read, SignalStore.read_coords

    def read(self, a, b):
        reads.append((a, b))
        return real_read(self, a, b)

    def read_coords(self, m, a, b):
        coord_reads.append((a, b))
        return real_coords(self, m, a, b)

    monkeypatch.setattr(SignalStore, "read", read)
    monkeypatch.setattr(SignalStore, "read_coords", read_coords)
    spec = EpisodeSpec({"a": (0.2, 0.5), "p": (0.2, 0.5)})
    seen = []
    for ep in store_episodes(store, spec, batch_size=7, epoch=1, shuffle=True):
        idx = ep["a"].scale.long().numpy() - 1
        seen.extend(idx.tolist())
        np.testing.assert_array_equal(ep["p"].query_x.numpy(), coords[idx])
    assert sorted(seen) == list(range(n)) and seen != sorted(seen)
    assert sorted(reads) == store.chunk_ranges()
    assert sorted(coord_reads) == store.chunk_ranges()


def test_scale_per_modality_mapping():
    rows, coords = _rows(n=6)
    idx = np.arange(6)
    scale = {"line": idx + 1.0, "img": idx + 10.0}  # cloud not listed: ones
    ep = build_episode(rows, idx, coords, EpisodeSpec(RANGES, seed=1), 0, scale)
    np.testing.assert_array_equal(ep["line"].scale.numpy(), idx + 1.0)
    np.testing.assert_array_equal(ep["img"].scale.numpy(), idx + 10.0)
    np.testing.assert_array_equal(ep["cloud"].scale.numpy(), np.ones(6))
    # one array for all modalities, as before
    ep = build_episode(rows, idx, coords, EpisodeSpec(RANGES, seed=1), 0, idx + 2.0)
    assert all(np.array_equal(mb.scale.numpy(), idx + 2.0) for mb in ep.values())


def test_query_points_subsample_valid_points_without_changing_support():
    rows, coords = _rows()
    idx = np.arange(8)
    full = _build(rows, coords, idx, EpisodeSpec(RANGES, seed=3))
    sub = _build(rows, coords, idx, EpisodeSpec(RANGES, seed=3, query_points=12))
    for m in RANGES:
        a, b = full[m], sub[m]
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.support_y, b.support_y)
        npts = a.query_y.shape[1]
        if npts <= 12:  # fewer points than asked: the full query set is kept
            assert torch.equal(a.query_y, b.query_y)
            continue
        assert b.query_x.shape[:2] == (8, 12) and b.query_y.shape[:2] == (8, 12)
        # every kept point is a real point of the signal with its value and support flag
        qx_full = a.query_x.expand(8, -1, -1)
        for s in range(8):
            hit = (b.query_x[s, :, None, :] == qx_full[s, None, :, :]).all(-1)
            j = hit.float().argmax(1)
            assert hit.any(1).all()
            assert torch.equal(b.query_y[s], a.query_y[s, j])
            assert torch.equal(b.query_support[s], a.query_support[s, j])
            n_valid = int(a.query_mask[s].sum())
            assert int(b.query_mask[s].sum()) == min(12, n_valid)  # valid points first


def test_support_points_cap_keeps_a_prefix_of_the_drawn_support():
    rows, coords = _rows()
    idx = np.arange(8)
    full = _build(rows, coords, idx, EpisodeSpec(RANGES, seed=5))
    capped = _build(rows, coords, idx, EpisodeSpec(RANGES, seed=5, support_points=3))
    for m in RANGES:
        a, b = full[m], capped[m]
        n_full, n_cap = a.support_mask.sum(1), b.support_mask.sum(1)
        assert torch.equal(n_cap, torch.clamp(n_full, max=3))
        k = b.support_x.shape[1]
        assert torch.equal(
            b.support_x * b.support_mask[..., None], a.support_x[:, :k] * b.support_mask[..., None]
        )
        assert torch.equal(b.query_support.sum(1), n_cap)
        assert torch.equal(a.query_y, b.query_y)  # the query set is untouched

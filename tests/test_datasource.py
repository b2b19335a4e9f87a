"""Ray Data over stores: every signal once, chunk-sharded read tasks, episodes, S3."""

import threading
from collections import Counter

import numpy as np
import pytest
import torch
import xarray as xr
from episode_checks import assert_same_signal, signal_tensors

from pipelines.data.episodes import EpisodeSpec
from pipelines.data.ray_source import ZarrStoreDatasource, read_store
from pipelines.data.stores import ModalityData, make_location, open_store, write_signal_store
from pipelines.data.stores.field_writer import write_field_store
from pipelines.data.stores.reader import FieldStore, SignalStore
from pipelines.data.streams import dataset_episodes, store_episodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

N, CHUNK = 45, 6  # 8 chunks, the last one short
SPLIT = np.array([0, 0, 1, 0, 2] * 9, np.int8)
RANGES = {"wave": (0.1, 0.4), "img": (0.3, 0.6), "cloud": (0.2, 0.8)}


def _write(loc, n=N, chunk=CHUNK):
    rng = np.random.default_rng(5)
    wave = rng.normal(size=(n, 30, 1)).astype(np.float32)
    wave[8, :10] = np.nan  # NaN holes must survive the Ray path (signal 8 is train)
    img = rng.normal(size=(n, 4, 5, 2)).astype(np.float32)
    cloud = rng.normal(size=(n, 9, 1)).astype(np.float32)
    cloud_xy = rng.uniform(-1, 1, size=(n, 9, 2)).astype(np.float32)
    write_signal_store(
        loc,
        {
            "wave": ModalityData(wave),
            "img": ModalityData(img, normalisation="zscore"),
            "cloud": ModalityData(cloud, "points", coords=cloud_xy),
        },
        SPLIT[:n],
        scale=np.arange(1, n + 1),  # scale = index + 1 identifies a signal inside an episode
        chunk_signals=chunk,
    )


@pytest.fixture(scope="module")
def store_loc(tmp_path_factory):
    loc = make_location(str(tmp_path_factory.mktemp("ds") / "sig.zarr"))
    _write(loc)
    return loc


def _indices(ds):
    return [int(i) for batch in ds.iter_batches(batch_size=None) for i in batch["index"]]


def test_read_store_gives_every_signal_once(ray_session, store_loc):
    got = _indices(read_store(store_loc, split="train"))
    assert sorted(got) == np.flatnonzero(SPLIT == 0).tolist()
    # every signal once with split=None; values and per-signal coordinates unchanged
    store = open_store(store_loc)
    want = store.read(0, N)
    rows = read_store(store_loc, modalities=["wave", "cloud"]).take_all()
    assert sorted(int(r["index"]) for r in rows) == list(range(N))
    for row in rows:
        i = int(row["index"])
        assert set(row) == {"index", "scale", "m:wave", "m:cloud", "c:cloud"}
        np.testing.assert_array_equal(row["m:wave"], want["wave"][i])
        np.testing.assert_array_equal(row["c:cloud"], store.read_coords("cloud", i, i + 1)[0])
        assert row["scale"] == i + 1


def test_streaming_split_shards_consumed_concurrently(ray_session, store_loc):
    shards = read_store(store_loc, split="train").streaming_split(2, equal=False)
    seen = [[], []]
    errors = []

    def consume(k):
        try:
            for batch in shards[k].iter_batches(batch_size=4):
                seen[k].extend(int(i) for i in batch["index"])
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors and not any(t.is_alive() for t in threads)
    counts = Counter(seen[0] + seen[1])
    assert sorted(counts) == np.flatnonzero(SPLIT == 0).tolist()
    assert set(counts.values()) == {1}


def test_read_tasks_cover_each_chunk_once(store_loc, monkeypatch):
    source = ZarrStoreDatasource(store_loc)
    n_chunks = len(open_store(store_loc).chunk_ranges())
    assert n_chunks == 8
    reads = []
    real_read = SignalStore.read

    def counting_read(self, start, stop):
        reads.append((start, stop))
        return real_read(self, start, stop)

    monkeypatch.setattr(SignalStore, "read", counting_read)
    for parallelism in (1, 2, 3, 5, 8, 50):
        tasks = source.get_read_tasks(parallelism)
        assert len(tasks) == min(parallelism, n_chunks)
        assert sum(t.metadata.num_rows for t in tasks) == N
        reads.clear()
        rows = []
        for task in tasks:  # run the read functions in-process
            for block in task():
                rows.extend(block.column("index").to_pylist())
        assert sorted(reads) == open_store(store_loc).chunk_ranges()  # each chunk once
        assert sorted(rows) == list(range(N))
    # one open per worker process and dataset, not one per read task
    import pipelines.data.ray_source as dsrc

    fresh = ZarrStoreDatasource(store_loc)
    opens = []
    real_open = dsrc.open_store
    monkeypatch.setattr(dsrc, "open_store", lambda *a: opens.append(a) or real_open(*a))
    for _ in range(2):  # two epochs of the same dataset
        for task in fresh.get_read_tasks(8):
            list(task())
    assert len(opens) == 1
    for task in ZarrStoreDatasource(store_loc).get_read_tasks(8):  # a new dataset reopens
        list(task())
    assert len(opens) == 3  # the datasource's own open in the driver, then its tasks' one
    # a split selecting no signal of a group drops that group's task
    train_only = ZarrStoreDatasource(store_loc, split="train")
    assert sum(t.metadata.num_rows for t in train_only.get_read_tasks(4)) == (SPLIT == 0).sum()


def test_override_num_blocks_sets_read_tasks(ray_session, store_loc):
    ds = read_store(store_loc, override_num_blocks=3).materialize()
    assert sorted(_indices(ds)) == list(range(N))
    assert ds.num_blocks() == 3


def test_time_stride(ray_session, store_loc):
    got = sorted(_indices(read_store(store_loc, time_stride=3)))
    assert got == list(range(0, N, 3))
    got = sorted(_indices(read_store(store_loc, split="train", time_stride=2)))
    assert got == [i for i in range(0, N, 2) if SPLIT[i] == 0]
    spec = EpisodeSpec(RANGES)
    direct = [
        int(s) - 1
        for ep in store_episodes(open_store(store_loc), spec, 8, "train", time_stride=2)
        for s in ep["wave"].scale
    ]
    assert sorted(direct) == got
    with pytest.raises(ValueError, match="time_stride"):
        ZarrStoreDatasource(store_loc, time_stride=0)
    with pytest.raises(ValueError, match="split"):
        ZarrStoreDatasource(store_loc, split="training")


def _by_signal(episodes):
    """Signal index -> modality -> trimmed per-signal tensors (index recovered from scale)."""
    out = {}
    for ep in episodes:
        scale = ep["wave"].scale
        for b in range(len(scale)):
            i = int(scale[b]) - 1
            assert i not in out
            out[i] = signal_tensors(ep, b)
    return out


def test_dataset_episodes_match_store_episodes(ray_session, store_loc):
    store = open_store(store_loc)
    spec = EpisodeSpec(RANGES, seed=9)
    via_ray = _by_signal(
        dataset_episodes(read_store(store_loc, split="train"), store, spec, batch_size=5, epoch=2)
    )
    direct = _by_signal(store_episodes(store, spec, batch_size=8, split="train", epoch=2))
    assert sorted(via_ray) == sorted(direct) == np.flatnonzero(SPLIT == 0).tolist()
    for i in direct:
        assert_same_signal(via_ray[i], direct[i])
    assert direct[8]["wave"][4].sum() == 20  # signal 8 lost 10 points to NaN
    # another epoch draws other support sets
    other = _by_signal(store_episodes(store, spec, batch_size=8, split="train", epoch=3))
    assert any(not torch.equal(other[i]["wave"][5], direct[i]["wave"][5]) for i in direct)


class _GpuWorkerShard:
    """A Ray Train shard as a GPU worker sees it: torch batches land on the worker's device.

    ``iter_torch_batches`` without ``device="cpu"`` gives tensors on ``meta`` (standing in
    for CUDA, where ``.numpy()`` raises the same way); ``iter_batches`` is the real one.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def iter_torch_batches(self, device="auto", **kwargs):
        for batch in self.dataset.iter_torch_batches(**kwargs):
            yield batch if device == "cpu" else {k: v.to("meta") for k, v in batch.items()}

    def iter_batches(self, **kwargs):
        return self.dataset.iter_batches(**kwargs)


def test_dataset_episodes_from_a_gpu_worker_shard_stay_on_cpu(ray_session, store_loc):
    store = open_store(store_loc)
    spec = EpisodeSpec(RANGES, seed=9)
    shard = _GpuWorkerShard(read_store(store_loc, split="train"))
    eps = list(dataset_episodes(shard, store, spec, batch_size=5, epoch=2))
    assert sorted(_by_signal(eps)) == np.flatnonzero(SPLIT == 0).tolist()
    assert {ep[m].support_y.device.type for ep in eps for m in ep} == {"cpu"}


def test_field_store_through_ray(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"tp": (("time", "member", "lat", "lon"), rng.gamma(2.0, 1.0, (7, 2, 3, 4)))},
        coords={"lat": [10.0, 0.0, -10.0], "lon": [0.0, 90.0, 180.0, 270.0]},
    )
    loc = make_location(str(tmp_path / "ens.zarr"))
    write_field_store(ds, loc, chunk_time=2, split=np.array([0, 0, 0, 0, 1, 1, 2]))
    store = open_store(loc)
    assert isinstance(store, FieldStore) and store.chunk_ranges()[1] == (4, 8)
    rows = read_store(loc, split="train").take_all()
    assert sorted(int(r["index"]) for r in rows) == list(range(8))  # 4 times x 2 members
    want = store.read(0, 8)["tp"]
    for r in rows:
        np.testing.assert_array_equal(r["m:tp"], want[int(r["index"])])


def test_s3_store_through_ray(ray_session, s3_server, monkeypatch):
    # credentials travel inside the StoreLocation (pickled into the read tasks), not
    # through environment variables, which workers of a `ray start` cluster would not see
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    s3_server["make_bucket"]("mia-data")
    loc = make_location(
        "s3://mia-data/ray/sig.zarr",
        {"key": s3_server["key"], "secret": s3_server["secret"]},
        endpoint_url=s3_server["endpoint_url"],
    )
    _write(loc, n=10, chunk=4)
    assert len(ZarrStoreDatasource(loc).get_read_tasks(2)) == 2
    rows = read_store(loc, override_num_blocks=2).take_all()
    assert sorted(int(r["index"]) for r in rows) == list(range(10))
    store = open_store(loc)
    direct_rows = store.read(0, 10)
    for r in rows:
        i = int(r["index"])
        for m in RANGES:
            np.testing.assert_array_equal(r[f"m:{m}"], direct_rows[m][i])
        np.testing.assert_array_equal(r["c:cloud"], store.read_coords("cloud", i, i + 1)[0])

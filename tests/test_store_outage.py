"""An object store that stops answering for 20 s: reads wait for it, training finishes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from outage_proxy import OutageProxy
from tiny_configs import TINY_META_MODEL

from mia_core.config import load_config
from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores import StoreError, make_location, open_store
from pipelines.data.stores.retry import is_transient, read_with_retry
from pipelines.data.stores.writer import ModalityData, write_signal_store
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.jobs import train

pytestmark = pytest.mark.fault


@pytest.fixture
def proxied(s3_server, monkeypatch):
    """The test S3 server behind an :class:`OutageProxy`; its endpoint is the proxy's."""
    proxy = OutageProxy(int(s3_server["endpoint_url"].rsplit(":", 1)[1]))
    endpoint = f"http://127.0.0.1:{proxy.port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3_server["make_bucket"]("outage")
    yield proxy
    if proxy.sock.fileno() == -1:  # left down by a failed test
        proxy.up()


def test_a_read_waits_out_a_20_s_outage_and_a_longer_one_fails_naming_the_chunk(
    proxied, monkeypatch, tmp_path
):
    loc = make_location(f"s3://outage/{tmp_path.name}.zarr")
    values = np.arange(8 * 12, dtype=np.float32).reshape(8, 3, 4, 1)
    write_signal_store(loc, {"g": ModalityData(values, normalisation="none")},
                       np.zeros(8, np.int8), chunk_signals=2)  # fmt: skip
    store = open_store(loc)
    np.testing.assert_array_equal(store.read(0, 2)["g"].reshape(2, 3, 4, 1), values[:2])
    proxied.down()
    threading.Timer(20.0, proxied.up).start()
    t0 = time.monotonic()
    got = store.read(2, 4)["g"]
    assert time.monotonic() - t0 >= 19.0  # it waited for the store
    np.testing.assert_array_equal(got.reshape(2, 3, 4, 1), values[2:4])
    monkeypatch.setenv("MIA_STORE_OUTAGE_S", "2")
    proxied.down()
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=r"chunk 'g/c/2/0/0/0'.*EndpointConnectionError"):
        store.read(4, 6)
    assert time.monotonic() - t0 < 15.0  # the deadline, not botocore's retries forever
    proxied.up()


def test_only_connection_errors_of_remote_stores_are_retried():
    calls = []

    def failing(err):
        def read():
            calls.append(1)
            raise err

        return read

    refused = OSError("wrapped")
    refused.__cause__ = ConnectionRefusedError(111, "refused")
    assert is_transient(refused) and is_transient(TimeoutError())
    assert not is_transient(KeyError("c/0")) and not is_transient(FileNotFoundError("x"))
    with pytest.raises(ValueError):  # a corrupt chunk: raised at once
        read_with_retry(failing(ValueError("bad codec")), "c", remote=True, sleep=lambda s: None)
    with pytest.raises(OSError):  # a local store: raised at once
        read_with_retry(failing(refused), "c", remote=False, sleep=lambda s: None)
    assert len(calls) == 2
    waits: list[float] = []
    with pytest.raises(OSError):
        read_with_retry(failing(refused), "c", remote=True, deadline_s=0.2, sleep=waits.append)
    assert waits == [] and len(calls) == 3  # the first backoff already passes the deadline


@pytest.mark.timeout(300)
def test_training_mid_epoch_survives_a_20_s_outage(proxied, tmp_path, mlflow_db):
    url = f"s3://outage/{tmp_path.name}-synthetic.zarr"
    build = ["synthetic1d", "--out", url, "--chunk", "2", "--num-functions", "40"]
    assert build_main([*build, "--num-train", "30", "--num-points", "30",
                       "--modalities", "sine,tanh"]) == 0  # fmt: skip
    cfg = load_config(None, [
        "method.name=cavia", *TINY_META_MODEL, f"data.store={url}", "data.modalities=[sine,tanh]",
        "data.num_points=30", "run.batch_size=4", "run.steps=12", "run.log_every=1",
        "run.eval_every=100", "run.checkpoint_every=6", "run.eval_bins=[[0.05,0.1]]",
        f"run.out_dir={tmp_path}", "run.name=t", "run.system_metrics=false",
    ])  # fmt: skip
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("step") and line.split()[1].startswith("2/"):  # mid first epoch
            proxied.down()
            threading.Timer(20.0, proxied.up).start()

    t0 = time.monotonic()
    result = train(cfg, local=True, evaluate_after=False, log=log)
    assert time.monotonic() - t0 >= 19.0  # an uncached chunk was read during the outage
    assert result.step == 12
    assert load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["step"] == 12

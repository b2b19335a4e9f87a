"""Output faults: dead lock owners, crashes that release locks, unreachable S3 outputs."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest
import zarr
from test_encode import encode, meta_run, options  # noqa: F401
from test_outputs import SYNTH, codes, disk_full_on, one_line  # noqa: F401

from pipelines.codecs.codestore_lock import acquire_lock, writer_lock
from pipelines.codecs.decode import decode_to
from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores import StoreError, make_location
from pipelines.data.stores.output import check_output

# --- locks ----------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    loc = make_location(str(tmp_path / "g.zarr"))
    group = zarr.open_group(loc.zarr_store("w"), mode="w")
    import time

    host = socket.gethostname()
    for holder, taken in (
        ({"host": host, "pid": dead_pid()}, True),
        ({"host": host, "pid": os.getppid()}, False),  # alive
        ({"host": "elsewhere", "pid": dead_pid()}, False),  # another machine's pid
    ):
        group.attrs["mia_lock"] = {**holder, "token": "t", "heartbeat": time.time()}
        if taken:
            assert acquire_lock(group, loc) != "t"
        else:
            with pytest.raises(StoreError, match="another encoder is writing"):
                acquire_lock(group, loc)


def test_writer_lock_is_released_on_any_error(tmp_path, monkeypatch):
    loc = make_location(str(tmp_path / "g.zarr"))
    group = zarr.open_group(loc.zarr_store("w"), mode="w")
    with pytest.raises(KeyError), writer_lock(group, loc):
        raise KeyError("boom")
    assert not group.attrs["mia_lock"]
    # a disk so full that the release fails too: the block's own error comes out
    with pytest.raises(OSError, match="first"), monkeypatch.context() as m:
        with writer_lock(group, loc):
            disk_full_on(m, lambda key: True)
            raise OSError(errno.ENOSPC, "first")
    group = zarr.open_group(loc.zarr_store("w"), mode="r+")  # as on disk
    assert group.attrs["mia_lock"]["pid"] == os.getpid()  # left behind, but not held:
    with writer_lock(group, loc):  # taken over at once (not after 90 s)
        with pytest.raises(StoreError, match="another encoder"):
            acquire_lock(group, loc)  # a lock held now is respected


# --- S3 outputs that cannot be reached ------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_aws_environment(monkeypatch, tmp_path) -> None:
    for k in list(os.environ):
        if k.startswith("AWS_") and k != "AWS_CA_BUNDLE":
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probes
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def test_s3_output_without_credentials_is_one_line(tmp_path, monkeypatch, capsys):
    no_aws_environment(monkeypatch, tmp_path)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    argv = ["synthetic1d", "--out", "s3://bkt/x.zarr", "--endpoint-url", endpoint, *SYNTH]
    assert build_main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "s3://bkt/x.zarr: cannot reach the output: NoCredentialsError" in line


@pytest.mark.parametrize("userinfo", ["", "user:hunter2@"])
def test_unreachable_s3_output_is_one_line_without_secrets(
    meta_run,  # noqa: F811
    codes,  # noqa: F811
    tmp_path,
    monkeypatch,
    userinfo,
):
    no_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    endpoint = f"http://{userinfo}127.0.0.1:{closed_port()}"
    fast = make_location("s3://bkt/x.zarr", endpoint_url=endpoint, retries=1, timeout_s=1)
    with pytest.raises(StoreError, match=r"^s3://bkt/x.zarr: cannot reach the output") as err:
        check_output(fast, ("signals",))
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)
    if userinfo:
        return
    # decode and encode to an unreachable output: the same one line (default retries)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(StoreError, match="cannot reach the output"):
        decode_to(codes["full"], "s3://bkt/d.zarr", [0])
    with pytest.raises(StoreError, match="cannot reach the output"):
        encode(options(meta_run, "s3://bkt/c.zarr", steps=2))


@pytest.mark.integration
def test_s3_outputs_are_checked_by_listing_their_prefix(s3_server, monkeypatch, capsys):
    s3_server["make_bucket"]("outputs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    put = s3_server["client"].put_object
    put(Bucket="outputs", Key="mine/notes.txt", Body=b"keep")
    put(Bucket="outputs", Key="afile.zarr", Body=b"keep")
    endpoint = ["--endpoint-url", s3_server["endpoint_url"]]
    for out in ("s3://outputs/s.zarr", "s3://outputs/s.zarr"):  # its own kind: rewritten
        assert build_main(["synthetic1d", "--out", out, *endpoint, *SYNTH]) == 0
    capsys.readouterr()
    for out, what in (("mine", "a folder with other files"), ("afile.zarr", "a file")):
        assert build_main(["synthetic1d", "--out", f"s3://outputs/{out}", *endpoint, *SYNTH]) == 2
        assert what in one_line(capsys.readouterr().err)
    body = s3_server["client"].get_object(Bucket="outputs", Key="mine/notes.txt")["Body"]
    assert body.read() == b"keep"


def test_failed_s3_reads_leave_no_asyncio_noise_at_exit():
    code = (
        "from pipelines.data.stores import make_location, open_store, StoreError\n"
        f"loc = make_location('s3://bkt/x.zarr', endpoint_url='http://127.0.0.1:{closed_port()}',"
        " retries=1, timeout_s=1)\n"
        "try:\n    open_store(loc)\nexcept Exception as e:\n    print('caught', type(e).__name__)\n"
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert "caught" in proc.stdout, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr[:2000]


def test_results_json_paths_that_are_not_results_are_refused(tmp_path):
    """Studies and reports merge into their own results JSON, never over a user's file."""
    from pipelines.codecs.report import upsert_result
    from pipelines.studies.driver import write_results_json

    notes = tmp_path / "notes.json"
    notes.write_text("my notes, not JSON\n")
    with pytest.raises(StoreError, match="not a results JSON"):
        write_results_json(notes, {"psnr": 1.0}, "ncep")
    with pytest.raises(StoreError, match="not a results JSON"):
        upsert_result(notes, {"name": "ncep"})
    assert notes.read_text() == "my notes, not JSON\n"
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        write_results_json(folder, {}, "ncep")
    ours = tmp_path / "results.json"
    write_results_json(ours, {"psnr": 1.0}, "ncep")
    write_results_json(ours, {"psnr": 2.0}, "era5")
    assert json.loads(ours.read_text()) == {"ncep": {"psnr": 1.0}, "era5": {"psnr": 2.0}}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

"""ERA5 builder, damaged GRIB input: an error naming the file and message, or --skip-corrupt.

Before: cfgrib logged "skipping corrupted Message" and a file truncated half way built a
store with 2 of its 4 time steps, exit status 0.
"""

from __future__ import annotations

import pytest
from grib_samples import write_grib

from pipelines.data.builders import __main__ as cli
from pipelines.data.builders.grib_input import scan_grib
from pipelines.data.stores import make_location, open_store

MESSAGE = 2231  # bytes per message of write_grib's 19x36 fields


def _build(tmp_path, grib, *extra):
    args = ["era5", "--input", str(grib), "--out", str(tmp_path / "store.zarr")]
    args += ["--variables", "t,z", "--resolution", "19x36", "--normalisation", "none"]
    return cli.main([*args, "--val-fraction", "0", "--test-fraction", "0", *extra])


def _damaged(tmp_path, how: str):
    grib = tmp_path / "era5.grib"
    write_grib(grib, times=4)  # 8 messages: t and z per time step
    data = grib.read_bytes()
    if how == "truncated":  # half way through message 5 (the third step's t)
        grib.write_bytes(data[: len(data) // 2 + 100])
        return grib, f"message 5 at byte {4 * MESSAGE}"
    grib.write_bytes(data[:MESSAGE] + b"garbage!" * 8 + data[MESSAGE:])
    return grib, f"message 2 at byte {MESSAGE}"


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_grib_message_is_an_error_naming_file_and_message(tmp_path, capsys, how):
    grib, where = _damaged(tmp_path, how)
    assert _build(tmp_path, grib) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 250, err
    assert str(grib) in err and where in err and "--skip-corrupt" in err
    assert "Traceback" not in err and not (tmp_path / "store.zarr").exists()


def test_skip_corrupt_lists_what_was_skipped_and_builds_the_rest(tmp_path, capsys):
    grib, where = _damaged(tmp_path, "truncated")
    assert _build(tmp_path, grib, "--skip-corrupt") == 0
    err = capsys.readouterr().err
    assert f"skipped {where}" in err and "built from its 4 readable message(s)" in err
    assert "Traceback" not in err and "skipping corrupted Message" not in err
    assert open_store(make_location(str(tmp_path / "store.zarr"))).num_signals == 2


def test_intact_grib_scans_clean(tmp_path):
    write_grib(tmp_path / "ok.grib", times=2)
    assert scan_grib(str(tmp_path / "ok.grib")) == (4, [])

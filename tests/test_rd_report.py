"""The rate-distortion study: ``mia-inr encode report --codes A --codes B``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_encode import T, encode, meta_run, options  # noqa: F401

from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rd_report import break_even, compare_fronts, psnr_at, ratio_at
from pipelines.codecs.rd_run import RDSpec, run_rd_report, write_page
from ray_jobs.common import run_main
from ray_jobs.encode import main as encode_main


def pts(*pairs: tuple[float, float]) -> list[dict]:
    return [{"ratio": r, "psnr": p} for r, p in pairs]


def test_front_interpolation_in_log_ratio():
    curve = pts((10, 40), (100, 30), (1000, 20), (50, 25))  # (50, 25) is dominated
    assert psnr_at(curve, 100) == pytest.approx(30)
    assert psnr_at(curve, math.sqrt(10 * 100)) == pytest.approx(35)  # halfway in log ratio
    assert math.isnan(psnr_at(curve, 5)) and math.isnan(psnr_at(curve, 2000))
    assert ratio_at(curve, 30) == pytest.approx(100)
    assert ratio_at(curve, 35) == pytest.approx(math.sqrt(1000))
    assert math.isnan(ratio_at(curve, 45)) and ratio_at(curve, 10) == 1000


def test_break_even_counts_the_meta_model_against_the_best_compressor():
    curves = {"sz3": pts((10, 40), (100, 30)), "zfp": pts((20, 40))}
    raw = 4000.0  # bytes per time step
    # At 40 dB the best compressor stores 4000 / 20 = 200 bytes a step; codes of 100
    # bytes save 100 a step, so a 1,000-byte meta-model pays for itself after 10 steps.
    point = {"psnr": 40.0, "code_bytes_per_step": 100.0, "meta_bytes": 1000}
    assert break_even(point, curves, raw) == 10
    assert break_even({**point, "code_bytes_per_step": 250.0}, curves, raw) == math.inf
    assert math.isnan(break_even({**point, "psnr": 50.0}, curves, raw))


def test_fronts_are_compared_at_100x_and_beyond_only_where_both_exist():
    codes = pts((50, 30), (150, 28), (400, 25))
    curves = {"sz3": pts((10, 35), (200, 26)), "sz3_series": pts((10, 45), (1000, 35)), "zfp": []}
    out = compare_fronts(codes, curves)
    assert out["ratios"][0] == 100 and out["codes_reach_100x"]
    assert out["sz3"]["compared_at"] == 2  # 100x and 150x: SZ3 stops at 200x
    assert out["sz3"]["above_where_both"]
    assert not out["sz3_series"]["above_where_both"]
    assert out["zfp"]["compared_at"] == 0 and not out["zfp"]["above_where_both"]


@pytest.fixture(scope="module")
def code_stores(meta_run, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("rd")
    stores = []
    for bits in (3, 8):
        out = root / f"b{bits}.zarr"
        encode(options(meta_run, out, code_bits=bits, calibration_codes=T, steps=10))
        stores.append(str(out))
    return root, stores


def test_rate_distortion_entry_holds_curves_speed_and_counts_the_meta_model(code_stores):
    root, stores = code_stores
    results = root / "rd.json"
    spec = RDSpec(stores, "tiny", results_json=str(results), out_dir=str(root / "rep"),
                  speed_frames=2, max_steps=40, max_extensions=1)  # fmt: skip
    entry = run_rd_report(spec, log=lambda _s: None)
    data = json.loads(results.read_text())
    assert [d["name"] for d in data["datasets"]] == ["tiny"]
    assert entry["meta_model_counted"] and entry["real"]
    assert {"codes", "sz3", "zfp", "sz3_series"} <= set(entry["curves"])
    codes = entry["points"]["codes"]
    assert [p["code_bits"] for p in codes] == [3, 8]
    for p in codes:  # the meta-model's bytes make the ratio smaller than the codes' alone
        assert p["ratio"] < p["ratio_codes"] and p["meta_bytes"] > 0
        assert set(p["coder_bytes"]) == {"ans", "zstd"}
    assert codes[0]["ratio_codes"] > codes[1]["ratio_codes"]  # fewer bits, fewer bytes
    speed = entry["speed"]
    for key in ("psnr_db", "encoder_cold_s", "encoder_warm_s", "baseline_cold_s",
                "baseline_warm_s", "best_lr_interior"):  # fmt: skip
        assert key in speed
    page = write_page(results, root / "docs" / "rate_distortion.md")
    text = page.read_text()
    assert "## tiny" in text and "break-even" in text
    assert (root / "docs" / "rate_distortion_tiny.png").stat().st_size > 0
    # Rerunning replaces the dataset's entry, it does not add a second one.
    run_rd_report(spec, log=lambda _s: None)
    assert len(json.loads(results.read_text())["datasets"]) == 1


def test_one_code_store_is_not_a_curve(code_stores):
    with pytest.raises(EncodeError, match="two or more --codes"):
        run_rd_report(RDSpec(code_stores[1][:1], "x"))


def test_the_command_runs_the_study_for_repeated_codes(code_stores, capsys):
    root, stores = code_stores
    argv = ["report", "--codes", stores[0], "--codes", stores[1], "--name", "cli",
            "--frames", "0", "--results", str(root / "cli.json"),
            "--docs", str(root / "cli" / "page.md"),
            "--out-dir", str(root / "cli_rep")]  # fmt: skip
    assert run_main(encode_main, argv) == 0
    entry = json.loads((root / "cli.json").read_text())["datasets"][0]
    assert entry["name"] == "cli" and entry["speed"] == {}
    assert np.isfinite([p["psnr"] for p in entry["points"]["codes"]]).all()
    assert (root / "cli" / "page.md").exists()

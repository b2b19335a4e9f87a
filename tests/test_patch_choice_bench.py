"""Patch recipe choice benchmark: the page's choice is computed from the rows; val steps."""

import numpy as np
import zarr

from benchmarks import _patch_choice_report as page
from benchmarks import _scale_stages as stages


def _row(variant, val_db, speed=None, compression=None, note=""):
    return {
        "variant": variant,
        "val_metric": 10 ** (-val_db / 10),
        "val_psnr_db": val_db,
        "decoded_psnr_db": None if speed is None else val_db - 2.0,
        "encode_steps_per_s_per_core": speed,
        "compression_codes": compression,
        "code_bytes_per_step": None if compression is None else 66240 / compression,
        "train_patches_per_s": 20.0,
        "note": note,
    }


def _result(rows):
    case = {"grid": [46, 90], "variables": 4, "time_steps": 96, "patch": [32, 32]}
    case |= {"train_steps": 5, "encode_range": [76, 78]}
    return {"machine": "test", "command": "python benchmarks/patch_choice_bench.py", "case": case,
            "rows": rows}  # fmt: skip


def test_page_chooses_best_encodable_validation_psnr_and_states_ratios():
    rows = [
        _row("heads_local", 40.0, 2.4, 20.0),
        _row("heads_global", 41.0, note="encode: not applicable"),
        _row("reptile_local", 30.0, 0.2, 1.25),
    ]
    text = page.render(_result(rows), "out.json")
    assert "| heads_global | 7.94e-05 | 41.00 | null | null | null | null | 20 |" in text
    assert "Best validation PSNR: **heads_global** (41.00 dB)" in text
    assert "(heads_global) raises the validation PSNR by 1.00 dB" in text
    assert "cannot be encoded" in text
    assert "heads / reptile: 12.0x (2.4 vs 0.2)" in text
    assert "Chosen: **heads_local**: the best validation PSNR of the encodable" in text


def test_a_faster_encoder_within_the_tie_margin_is_chosen():
    rows = [_row("heads_local", 39.8, 2.4, 20.0), _row("reptile_local", 40.0, 0.2, 1.25)]
    assert page.choose(rows)[0] == "heads_local"
    rows[0]["val_psnr_db"] = 38.0  # outside the margin: the better validation PSNR wins
    assert page.choose(rows)[0] == "reptile_local"
    assert page.choose([_row("heads_global", 41.0)])[0] is None


def test_encode_range_takes_the_validation_steps(tmp_path):
    case = stages.Case("era5", (46, 90), 10, tmp_path)
    group = zarr.open_group(str(case.path("store.zarr")), mode="w")
    group.create_array("split", data=np.array([0] * 6 + [1] * 2 + [2] * 2, np.int8))
    assert stages.encode_range(case, 4) == (8, 10)
    assert stages.encode_range(case, 4, "val") == (6, 8)
    assert stages.encode_range(case, 1, "val") == (6, 7)

"""Scale benchmark helpers: seam masks, area-weighted PSNR, merged rows and targets."""

import numpy as np
import pytest
import xarray as xr

from benchmarks import _scale_psnr as psnr
from benchmarks import _scale_report as report


def test_seam_masks_mark_two_cells_each_side_of_tile_boundaries():
    assert np.flatnonzero(psnr.seam_mask_1d(46, 32, wrap=False)).tolist() == [30, 31, 32, 33]
    lon = np.flatnonzero(psnr.seam_mask_1d(90, 32, wrap=True)).tolist()
    assert lon == [0, 1, 30, 31, 32, 33, 62, 63, 64, 65, 88, 89]
    assert not psnr.seam_mask_1d(20, 32, wrap=True).any()  # one tile: no seam


def test_psnr_is_area_weighted_and_split_at_seams(tmp_path):
    lat, lon = np.linspace(90, -90, 46), np.arange(90) * 4.0
    rng = np.random.default_rng(0)
    src = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), 250 + 30 * rng.random((3, 46, 90)))},
        coords={"time": np.arange(3), "latitude": lat, "longitude": lon},
    )
    src.to_netcdf(tmp_path / "src.nc")
    dec = src.isel(time=slice(1, 3)).sortby("latitude")  # as decoded: ascending latitude
    seam = psnr.seam_mask((46, 90), (32, 32), True)
    err = np.where(seam, 3.0, 0.3)
    err[0] = 1000.0  # at the south pole: no area, no weight
    dec = dec.assign(t2m=dec["t2m"] + err)
    dec.to_netcdf(tmp_path / "dec.nc")
    out = psnr.compare(tmp_path / "dec.nc", tmp_path / "src.nc", "era5", 1, (32, 32))
    assert out["interior_psnr_db"] - out["seam_psnr_db"] > 15
    lo, hi = float(src["t2m"][1:].min()), float(src["t2m"][1:].max())
    w = np.cos(np.deg2rad(np.sort(lat)))[:, None] * np.ones(90)
    mse = float((w * err**2).sum() / w.sum())
    assert out["psnr_db"] == pytest.approx(10 * np.log10((hi - lo) ** 2 / mse), rel=1e-6)


def _row(grid, build, peak, psnr_db=None):
    pts = int(np.prod(grid))
    return {
        "family": "era5",
        "grid": list(grid),
        "points": pts,
        "patch_points": 1024,
        "build_s_per_step": build * pts,
        "build_peak_mb": peak,
        "train_patches_per_s": 10.0,
        "train_peak_mb": peak,
        "encode_steps_per_s_per_core": 1.0 / pts,
        "encode_peak_mb": peak,
        "psnr_db": psnr_db,
        "seam_psnr_db": 30.0,
        "interior_psnr_db": 30.5,
    }


def test_rows_merge_by_family_and_grid_and_targets_are_computed(tmp_path):
    path = tmp_path / "scale.json"
    report.save(path, report.merge(path, "m", [_row((46, 90), 1e-6, 500.0)]))
    first = report.merge(path, "m", [_row((721, 1440), 1.2e-6, 900.0, 36.0)])
    report.save(path, first)
    again = report.merge(path, "m", [_row((721, 1440), 2e-6, 1100.0, 36.0)])
    assert [r["grid"] for r in again["rows"]] == [[46, 90], [721, 1440]]

    def verdict(result, *words):
        return next(v for t, _, v in report.targets(result) if all(w in t for w in words))

    assert verdict(first, "era5", "cost per point") == "met"  # 1.2x per point
    assert verdict(first, "era5", "peak RSS") == "met"  # 1.8x
    assert verdict(again, "era5", "cost per point") == "missed"  # 2x
    assert verdict(again, "era5", "peak RSS") == "missed"  # 2.2x
    assert verdict(again, "0.25-degree") == "missed"  # 36 dB but 1e-6 steps/s/core
    assert verdict(again, "256^3") == "not measured"
    assert verdict(again, "seam") == "met"  # 0.5 dB
    assert "| 721 x 1440 |" in report.render(again)

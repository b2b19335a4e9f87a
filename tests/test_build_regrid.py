"""ERA5 builder at size: the input's own grid is copied, a real regrid uses sparse weights."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from era5_samples import build_store
from scipy import sparse

from pipelines.data.builders import era5_grid, regrid


def _dense_overlap(t, s, shifts=(0.0,)):
    """The former dense overlap matrix (the reference the sparse one must equal)."""
    out = np.zeros((t.size - 1, s.size - 1))
    for k in shifts:
        lo = np.maximum(t[:-1, None], s[None, :-1] + k)
        hi = np.minimum(t[1:, None], s[None, 1:] + k)
        out += np.clip(hi - lo, 0.0, None)
    return out


def _dense_conservative(values, src_lat, src_lon, lat, lon, periodic):
    """The former implementation: dense weights, two einsums."""
    w_lat = _dense_overlap(
        *(np.sin(np.radians(regrid.cell_bounds(c, -90.0, 90.0))) for c in (lat, src_lat))
    )
    shifts = (-360.0, 0.0, 360.0) if periodic else (0.0,)
    w_lon = _dense_overlap(regrid.cell_bounds(lon), regrid.cell_bounds(src_lon), shifts)
    ok = np.isfinite(values)
    num = np.einsum("ij,...jk,lk->...il", w_lat, np.where(ok, values, 0.0), w_lon)
    den = np.einsum("ij,...jk,lk->...il", w_lat, ok.astype(float), w_lon)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * den.max(initial=1.0), num / den, np.nan)


@pytest.mark.parametrize(
    ("src", "tgt", "periodic"),
    [
        ((np.arange(-89.5, 90, 3.0), np.arange(1.5, 360, 3.0)), (19, 36), True),  # coarsen
        ((np.linspace(-90, 90, 13), np.arange(24) * 15.0), (37, 72), True),  # refine
        ((np.linspace(20, 60, 17), np.linspace(-30, 40, 29)), (7, 9), False),  # regional box
    ],
)
def test_sparse_conservative_equals_the_dense_einsum(src, tgt, periodic):
    src_lat, src_lon = src
    rng = np.random.default_rng(3)
    values = rng.normal(size=(2, 3, src_lat.size, src_lon.size))
    values[0, 1, 2:5, 3:7] = np.nan
    values[1, :, :, 0] = np.nan
    lat = np.linspace(src_lat[0], src_lat[-1], tgt[0]) if not periodic else None
    lat = np.linspace(-90, 90, tgt[0]) if periodic else lat
    lon = np.arange(tgt[1]) * 360.0 / tgt[1] if periodic else np.linspace(-30, 40, tgt[1])
    w_lat = regrid.latitude_weights(src_lat, lat)
    w_lon = regrid.longitude_weights(src_lon, lon, periodic)
    assert sparse.issparse(w_lat) and sparse.issparse(w_lon)
    got = regrid.conservative(values, w_lat, w_lon)
    want = _dense_conservative(values, src_lat, src_lon, lat, lon, periodic)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, equal_nan=True)


def _field(path, lat, lon, seed=0):
    f = np.random.default_rng(seed).normal(size=(3, lat.size, lon.size))
    f[1, 2, 3] = np.nan
    xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), f)},
        coords={"time": pd.date_range("2000-01-01", periods=3), "latitude": lat, "longitude": lon},
    ).to_netcdf(path)
    return f


@pytest.mark.parametrize("method", ["auto", "conservative", "bilinear"])
def test_the_inputs_own_grid_is_copied_not_regridded(tmp_path, monkeypatch, method):
    # descending latitudes, longitudes in [-180, 180), coordinates off by float32 round-off
    lat = np.linspace(90, -90, 19) + 1e-6
    lon = np.arange(36) * 10.0 - 180.0
    f = _field(tmp_path / "same.nc", lat, lon)

    def boom(*args, **kwargs):
        raise AssertionError("regridded a same-grid input")

    monkeypatch.setattr(era5_grid, "conservative_dataset", boom)
    monkeypatch.setattr(xr.Dataset, "interp", boom)
    args = ("--resolution", "19x36", "--normalisation", "none", "--regrid", method)
    summary, store = build_store(tmp_path, tmp_path / "same.nc", *args)
    assert "copied" in summary["regrid"]
    v = store.read(0, 3)["t2m"].reshape(3, 19, 36)
    # ascending latitudes, the input's longitude convention ([-180, 180)) and order
    want = f[:, ::-1].astype(np.float32)
    np.testing.assert_array_equal(v, want)  # exact copy, NaN where the input has NaN
    assert summary["latitude"] == [-90.0, 90.0] and summary["longitude"] == [-180.0, 170.0]


def test_a_grid_half_a_cell_away_is_regridded(tmp_path):
    lat, lon = np.linspace(-90, 90, 19), np.arange(36) * 10.0 + 5.0  # cell-centred: shifted
    _field(tmp_path / "shift.nc", lat, lon)
    summary, _ = build_store(tmp_path, tmp_path / "shift.nc", "--resolution", "19x36")
    assert "copied" not in summary["regrid"]
    assert era5_grid.same_grid_index(lon, np.arange(36) * 10.0, True) is None
    assert era5_grid.same_grid_index(lon, lon[::-1] - 360.0, True) is not None

"""The no-adaptation reference: nMSE of the train split's mean signal on the test split."""

from __future__ import annotations

import math

import numpy as np

from pipelines.data.stores import open_store
from pipelines.data.stores.location import make_location
from pipelines.data.stores.writer import ModalityData, write_signal_store
from pipelines.reports.eof_reference import eof_fit_nmse
from pipelines.reports.reference import mean_signal_nmse


def test_mean_signal_nmse_is_the_test_error_of_the_train_mean(tmp_path):
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(10, 3, 4, 2)).astype(np.float32)
    grid[8, 0, 0, 0] = np.nan  # a missing value is not scored
    grid[9] = np.nan  # a test signal with no valid value is left out
    points = rng.normal(size=(10, 6, 1)).astype(np.float32)
    split = np.array([0, 0, 0, 0, 0, 1, 2, 2, 2, 2])
    scale = np.linspace(0.5, 2.0, 10).astype(np.float32)
    loc = make_location(str(tmp_path / "s.zarr"))
    write_signal_store(
        loc,
        {
            "g": ModalityData(grid, normalisation="none"),
            "p": ModalityData(
                points, kind="points", coords=np.zeros((10, 6, 1)), normalisation="none"
            ),
        },
        split,
        scale,
        chunk_signals=3,  # chunks straddle the splits
    )
    got = mean_signal_nmse(open_store(loc))
    mean = np.nanmean(grid[:5], axis=0)
    expect = [np.nanmean((grid[i] - mean) ** 2) / scale[i] ** 2 for i in (6, 7, 8)]
    assert math.isclose(got["g"], float(np.mean(expect)), rel_tol=1e-6)
    assert math.isnan(got["p"])  # per-signal coordinates: no shared mean signal


def _pattern_store(tmp_path, trend: np.ndarray, noise: float = 0.0):
    """Fields ``mean + trend_i * pattern + offset_i`` on a 6 x 7 grid, 2 channels."""
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(6, 7, 2))
    pattern = rng.normal(size=(6, 7, 2))
    offsets = rng.normal(size=(len(trend), 1, 1, 2))
    grid = mean + trend[:, None, None, None] * pattern + offsets
    grid = grid + noise * rng.normal(size=grid.shape)
    split = np.array([0] * (len(trend) - 4) + [2] * 4)
    loc = make_location(str(tmp_path / "f.zarr"))
    write_signal_store(
        loc, {"g": ModalityData(grid.astype(np.float32), normalisation="none")}, split
    )
    return open_store(loc)


def test_eof_fit_recovers_a_pattern_beyond_the_training_amplitude(tmp_path):
    # the test signals carry the pattern at amplitudes no training signal has (warming):
    # offset + 1 EOF extrapolates exactly, the offset alone cannot
    trend = np.concatenate([np.linspace(-1, 1, 12), [3.0, 4.0, 5.0, 6.0]])
    store = _pattern_store(tmp_path, trend)
    bins = [(0.2, 0.5), (0.5, 1.0)]
    one = eof_fit_nmse(store, bins, k=1, repeats=2)["g"]
    none = eof_fit_nmse(store, bins, k=0, repeats=2)["g"]
    assert max(one) < 1e-10
    assert min(none) > 1.0


def test_eof_fit_is_nan_without_shared_coordinates_and_bins_by_realised_ratio(tmp_path):
    trend = np.linspace(-1, 1, 16)
    store = _pattern_store(tmp_path, trend, noise=0.3)
    got = eof_fit_nmse(store, [(0.0, 0.1), (0.5, 1.0)], k=1, repeats=3)["g"]
    # ratios drawn from [0, 1]: both bins get draws; a 1-point support fits worse
    assert all(np.isfinite(got)) and got[0] > got[1]
    points = make_location(str(tmp_path / "p.zarr"))
    write_signal_store(
        points,
        {
            "p": ModalityData(
                np.ones((4, 5, 1), np.float32), "points", coords=np.zeros((4, 5, 1)),
                normalisation="none",
            )
        },
        np.array([0, 0, 2, 2]),
    )  # fmt: skip
    assert all(math.isnan(v) for v in eof_fit_nmse(open_store(points), [(0.1, 1.0)])["p"])

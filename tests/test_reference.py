"""The no-adaptation reference: nMSE of the train split's mean signal on the test split."""

from __future__ import annotations

import math

import numpy as np

from pipelines.data.stores import open_store
from pipelines.data.stores.location import make_location
from pipelines.data.stores.writer import ModalityData, write_signal_store
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

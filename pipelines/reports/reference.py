"""The no-adaptation reference: how well the train split's mean signal predicts the test split.

A meta-learned INR that does not adapt to its support set can still score well on a store
whose signals are all alike (ensemble members of one day, a slowly varying field): its
initialisation learns the mean signal. This reference says where that level is, so a
table can show whether a method improves on it and whether its error falls with support.
The prediction for every point is the NaN-aware mean over the train split's signals of
that point; the score is the evaluation's ``nmse_all`` (per-signal MSE over valid points
and channels, divided by the signal's normalised-MSE scale squared), averaged over the
scored signals that have a valid point. It needs shared coordinates (grids, fields, the
synthetic 1-D points); a modality with per-signal coordinates has no such reference
(NaN). Like the linear reference (:mod:`pipelines.reports.eof_reference`) the per-signal
MSE weighs each point by its area (``cos(latitude)`` on lat-lon field stores with a
latitude coordinate, :mod:`pipelines.data.stores.geometry`), the evaluation's
``nmse_area_all``; with uniform weights (every other store) that is ``nmse_all``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipelines.data.stores import Store
from pipelines.data.stores.geometry import point_weights
from pipelines.data.stores.writer import SPLITS
from pipelines.data.streams import modality_scales


def mean_signal_nmse(store: Store, fit: str = "train", score: str = "test") -> dict[str, float]:
    """Modality -> mean area-weighted nMSE of predicting ``score`` signals by ``fit``'s mean.

    Args:
        store: the store (read chunk by chunk, twice: memory is one chunk plus one signal
            per modality).
        fit: the split whose per-point mean is the prediction.
        score: the split that is scored.

    Returns:
        NaN for a modality with per-signal coordinates, without ``fit`` signals, or without
        a scored signal that has a valid point.
    """
    fit_code, score_code = SPLITS[fit], SPLITS[score]
    shared = [m for m in store.modalities if store.info[m].coords is not None]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for _, _, keep, values in _chunks_of(store, fit_code):
        for m in shared:
            x = values[m][keep].astype(np.float64)
            ok = np.isfinite(x)
            sums[m] = sums.get(m, 0.0) + np.where(ok, x, 0.0).sum(0)
            counts[m] = counts.get(m, 0.0) + ok.sum(0)
    means = {m: sums[m] / np.maximum(counts[m], 1) for m in sums}
    scales = modality_scales(store)
    weights = {m: point_weights(store, m) for m in means}  # (K, P): signal i uses row i % K
    totals = {m: [0.0, 0] for m in means}
    for start, stop, keep, values in _chunks_of(store, score_code):
        for m in means:
            x = values[m][keep].astype(np.float64)
            ok = np.isfinite(x) & (counts[m] > 0)
            rows = np.arange(start, stop)[keep] % len(weights[m])
            w = weights[m][rows][..., None] * ok  # (n, P, C): a point's weight per channel
            se = np.where(ok, x - means[m], 0.0) ** 2
            n = w.reshape(len(x), -1).sum(1)
            mse = (se * w).reshape(len(x), -1).sum(1) / np.where(n > 0, n, 1.0)
            scale = scales[m][start:stop][keep].astype(np.float64)
            nmse = mse[n > 0] / np.square(scale[n > 0])
            totals[m][0] += float(nmse.sum())
            totals[m][1] += int(len(nmse))
    return {
        m: (totals[m][0] / totals[m][1] if m in totals and totals[m][1] else math.nan)
        for m in store.modalities
    }


def _chunks_of(store: Store, code: int) -> Iterator[tuple[int, int, np.ndarray, dict]]:
    """``(start, stop, keep, values)`` of every chunk holding signals of split ``code``."""
    for start, stop in store.chunk_ranges():
        keep = store.split[start:stop] == code
        if keep.any():
            yield start, stop, keep, store.read(start, stop)


__all__ = ["mean_signal_nmse"]

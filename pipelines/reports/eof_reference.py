"""The linear reference: a per-signal offset plus the train split's leading EOFs.

Climate users' first model of a field is linear: the training mean, a per-channel offset and
the leading empirical orthogonal functions (EOFs, the principal components of the training
anomalies), with coefficients fitted to whatever is observed. A meta-learned INR that adapts
to a support set is worth its cost where it beats that. :func:`eof_fit_nmse` scores it under
the evaluation's protocol: every scored signal draws its support ratio from the bins' full
range, its support points uniformly among its valid points, the ``1 + k`` coefficients per
channel come from least squares on the support (minimum norm when there are fewer points
than coefficients) and the prediction is scored on every valid point; per-signal nMSE
(``mse / scale**2``) is averaged in the bin of the realised ratio, like ``evaluate``'s
``paper`` protocol.

Area weighting, as climate tools do it: every point carries its area weight ``w``
(``cos(latitude)`` on lat-lon field stores with a latitude coordinate, 1 otherwise,
:mod:`pipelines.data.stores.geometry`). The EOFs are those of the anomalies times
``sqrt(w)`` (the standard weighting before the SVD, so they maximise area-weighted
variance), brought back to data space by dividing by ``sqrt(w)``; the least squares on
the support weigh each point by ``w``, and the MSE is the ``w``-weighted mean over valid
points (the evaluation's ``nmse_area_all``). With uniform weights all of this is the
unweighted fit and ``nmse_all``. Patch signals weigh their points by their own patch's
weights; their EOFs divide by the mean weight of each patch point.

Memory: at most ``max_signals`` signals of each split are read (evenly strided), whole,
for the SVD and the scoring.
"""

from __future__ import annotations

import math

import numpy as np

from pipelines.data.stores import Store
from pipelines.data.stores.geometry import point_weights
from pipelines.data.stores.writer import SPLITS
from pipelines.data.streams import modality_scales


def _rows(store: Store, code: int, limit: int | None = None) -> tuple[np.ndarray, dict]:
    """Indices of split ``code``'s valid signals (at most ``limit``, strided) and values."""
    idx = np.flatnonzero((store.split == code) & store.valid)
    if limit is not None and len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    values: dict[str, list[np.ndarray]] = {m: [] for m in store.modalities}
    for start, stop in store.chunk_ranges():
        sel = idx[(idx >= start) & (idx < stop)]
        if len(sel):
            chunk = store.read(start, stop)
            for m in store.modalities:
                values[m].append(chunk[m][sel - start].astype(np.float64))
    return idx, {m: np.concatenate(v) if v else np.empty((0,)) for m, v in values.items()}


def eof_basis(
    train: np.ndarray, k: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(P, C)`` and basis ``(C + k, P, C)`` (per-channel offsets, then ``k`` EOFs).

    NaNs count as the mean (zero anomaly) in the SVD.

    Args:
        train: ``(n, P, C)`` training signals.
        k: number of EOFs.
        weights: area weights, ``(P,)`` or ``(n, P)`` (module docstring); uniform if omitted.
    """
    mean = np.nanmean(train, 0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    p, c = mean.shape
    w = np.ones(p) if weights is None else np.asarray(weights, np.float64)
    root = np.sqrt(np.broadcast_to(w, (len(train), p)))[..., None]
    anomalies = (np.nan_to_num(train - mean) * root).reshape(len(train), -1)
    _, _, vt = np.linalg.svd(anomalies, full_matrices=False)
    offsets = np.zeros((c, p, c))
    offsets[np.arange(c), :, np.arange(c)] = 1.0
    eofs = vt[: min(k, len(vt))].reshape(-1, p, c)
    scale = np.sqrt(w.reshape(-1, p).mean(0))[:, None]  # back to data space; 0 where w is 0
    eofs = np.divide(eofs, scale, out=np.zeros_like(eofs), where=scale > 0)
    return mean, np.concatenate([offsets, eofs])


def eof_fit_nmse(
    store: Store,
    bins: list[tuple[float, float]],
    k: int = 1,
    repeats: int = 4,
    seed: int = 0,
    score: str = "test",
    max_signals: int = 4096,
) -> dict[str, list[float]]:
    """Modality -> per-bin mean area-weighted nMSE of the offset + ``k`` EOF fit to supports.

    Args:
        store: a store whose modalities have shared coordinates (grids, fields).
        bins: support-ratio bins ``(lo, hi)``; ratios are drawn from their full range.
        k: number of EOFs (besides the per-channel offsets).
        repeats: support draws per scored signal.
        seed: seed of the draws.
        score: the split that is scored.
        max_signals: at most this many signals of each split (evenly strided).

    Returns:
        NaN per bin for a modality with per-signal coordinates or no train signal, and
        for a bin no draw fell in.
    """
    trained, train = _rows(store, SPLITS["train"], max_signals)
    scored, test = _rows(store, SPLITS[score], max_signals)
    scales = modality_scales(store)
    lo_all, hi_all = min(b[0] for b in bins), max(b[1] for b in bins)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for m in store.modalities:
        if store.info[m].coords is None or not len(train[m]) or not len(test[m]):
            out[m] = [math.nan] * len(bins)
            continue
        weights = point_weights(store, m)  # (K, P): signal i uses row i % K
        mean, basis = eof_basis(train[m], k, weights[trained % len(weights)])
        sums, counts = np.zeros(len(bins)), np.zeros(len(bins))
        for row, y in enumerate(test[m]):
            ok = np.isfinite(y).all(-1)
            points = np.flatnonzero(ok)
            w = weights[scored[row] % len(weights)][ok]  # (Pv,)
            if not len(points) or w.sum() <= 0:
                continue
            target = (y - mean)[ok]  # (Pv, C)
            design = basis[:, ok]  # (n_basis, Pv, C)
            root = np.sqrt(w)[:, None]  # weighted least squares: rows times sqrt(w)
            scale = float(scales[m][scored[row]])
            for _ in range(repeats):
                ratio = rng.uniform(lo_all, hi_all)
                n = max(1, round(ratio * len(points)))
                pick = rng.choice(len(points), n, replace=False)
                a = (design[:, pick] * root[pick]).reshape(len(design), -1).T
                b = (target[pick] * root[pick]).reshape(-1)
                coef, *_ = np.linalg.lstsq(a, b, rcond=None)
                pred = np.tensordot(coef, design, axes=1)
                mse = float(np.average(np.mean((pred - target) ** 2, -1), weights=w))
                nmse = mse / scale**2
                realised = n / len(points)
                for b, (lo, hi) in enumerate(bins):
                    if lo - 1e-9 <= min(max(realised, lo_all), hi_all) <= hi + 1e-9:
                        sums[b] += nmse
                        counts[b] += 1
        out[m] = [float(s / c) if c else math.nan for s, c in zip(sums, counts, strict=True)]
    return out


__all__ = ["eof_basis", "eof_fit_nmse"]

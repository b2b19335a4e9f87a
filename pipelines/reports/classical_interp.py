"""Per-signal interpolation of a support set: Gaussian-process regression, linear, nearest.

No training data: each signal's support values are interpolated to every query point, in
the coordinates of :func:`pipelines.reports.classical_base.grid_points` (latitude and
longitude in degrees on lat-lon field stores, else the normalised grid coordinates).
Multi-level variables interpolate every channel on the same support points.

``gp`` (Gaussian-process regression, i.e. simple kriging with a fitted covariance):
scikit-learn's :class:`~sklearn.gaussian_process.GaussianProcessRegressor` with the
kernel ``ConstantKernel * RBF + WhiteKernel``, the RBF anisotropic (one length scale per
coordinate axis: degrees of latitude and of longitude), hyperparameters by maximum
marginal likelihood per signal (one L-BFGS start from a quarter of each axis' extent),
``normalize_y`` (per channel). scikit-learn rather than a kriging library: it is already a
dependency and maintained, fits the variogram's equivalent (the kernel) by likelihood
rather than by eye, and handles anisotropy and several channels; PyKrige is not installed
in this project. A support set above ``max_points`` (default 400) is subsampled uniformly
per signal (seeded by the signal index) so a fit stays well under a second (one BLAS
thread: threads only contend on matrices this small); at least 3 points are needed
(fewer: that signal fails, "too few points").

``linear`` and ``nearest``: :func:`scipy.interpolate.griddata` on the support points.
``linear`` is piecewise linear on the Delaunay triangulation, so it needs ``d + 1``
points not on one line (plane), else the signal fails ("too few points"); query points
outside the support's convex hull take the nearest support value. ``nearest`` needs one
point.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.interpolate import griddata
from scipy.spatial import QhullError
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from threadpoolctl import threadpool_limits

from mia_core.data import Episode
from pipelines.reports.classical_base import (
    Reconstructor,
    check_points,
    nan_like,
    support_of,
    values_of,
)

GP_MAX_POINTS = 400


class _PerSignal(Reconstructor):
    """A reconstructor that interpolates each signal and modality on its own.

    Args:
        coords: variable -> ``(P, d)`` coordinates of its query points.
        seed: seed of any per-signal subsampling.
    """

    def __init__(self, coords: dict[str, np.ndarray], seed: int = 0) -> None:
        self.coords, self.seed = coords, seed

    def predict(self, episode: Episode, index: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`Reconstructor.predict`."""
        out: dict[str, np.ndarray] = {}
        for mi, (m, xy) in enumerate(self.coords.items()):
            if m not in episode:
                continue
            mb = episode[m]
            check_points(self.name, m, mb, len(xy))
            values = values_of(mb)
            pred = nan_like(values)
            for b in range(len(index)):
                pts = support_of(mb, b)
                if len(pts) >= self.min_points:
                    rng = np.random.default_rng([self.seed, int(index[b]), mi])
                    got = self.fit_predict(xy[pts], values[b, pts], xy, rng)
                    if got is not None:
                        pred[b] = got
            out[m] = pred
        return out

    def fit_predict(
        self, x: np.ndarray, y: np.ndarray, query: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """``(P, C)`` prediction at ``query`` from support ``x, y``; ``None``: cannot run."""
        raise NotImplementedError


class GpReconstructor(_PerSignal):
    """``gp``: Gaussian-process regression per signal (module docstring).

    Args:
        coords: variable -> ``(P, d)`` query-point coordinates.
        degrees: whether the coordinates are latitude / longitude in degrees (label only).
        seed: seed of the subsampling.
        max_points: support points used at most (uniform subsample above).
    """

    name = "gp"
    min_points = 3

    def __init__(
        self,
        coords: dict[str, np.ndarray],
        degrees: bool,
        seed: int = 0,
        max_points: int = GP_MAX_POINTS,
    ) -> None:
        super().__init__(coords, seed)
        self.max_points = max_points
        axes = "lat/lon degrees" if degrees else "grid coordinates"
        self.label = (
            f"sklearn GP regression, const*RBF({axes}, anisotropic)+white, ML per signal, "
            f"support subsampled to <= {max_points}"
        )

    def fit_predict(
        self, x: np.ndarray, y: np.ndarray, query: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """See :meth:`_PerSignal.fit_predict`."""
        if len(x) > self.max_points:
            pick = np.sort(rng.choice(len(x), self.max_points, replace=False))
            x, y = x[pick], y[pick]
        lo, hi = query.min(0), query.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        steps = np.array([max(len(np.unique(query[:, a])) - 1, 1) for a in range(x.shape[1])])
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(
            np.clip(span / 4, span / steps / 2, span * 10),
            [(s / n / 2, s * 10) for s, n in zip(span, steps, strict=True)],
        ) + WhiteKernel(1e-2, (1e-8, 1.0))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0)
        target = y[:, 0] if y.shape[1] == 1 else y
        with warnings.catch_warnings(), threadpool_limits(1):  # small matrices: 1 thread
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                gp.fit(x, target)
            except (np.linalg.LinAlgError, ValueError):
                return None
            pred = gp.predict(query)
        return np.asarray(pred, np.float64).reshape(len(query), -1)


class GriddataReconstructor(_PerSignal):
    """``linear`` or ``nearest`` interpolation with scipy's ``griddata`` (module docstring).

    Args:
        method: ``linear`` or ``nearest``.
        coords: variable -> ``(P, d)`` query-point coordinates.
        degrees: whether the coordinates are latitude / longitude in degrees (label only).
    """

    def __init__(self, method: str, coords: dict[str, np.ndarray], degrees: bool) -> None:
        super().__init__(coords)
        self.name = method
        d = next(iter(coords.values())).shape[1] if coords else 2
        self.min_points = d + 1 if method == "linear" else 1
        axes = "lat/lon degrees" if degrees else "grid coordinates"
        self.label = f"scipy griddata ({method}) in {axes}" + (
            ", nearest outside the support's hull" if method == "linear" else ""
        )

    def fit_predict(
        self, x: np.ndarray, y: np.ndarray, query: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """See :meth:`_PerSignal.fit_predict`."""
        flat = x[:, 0] if x.shape[1] == 1 else x
        at = query[:, 0] if query.shape[1] == 1 else query
        near = griddata(flat, y, at, method="nearest").reshape(len(query), -1)
        if self.name == "nearest":
            return near
        try:
            pred = griddata(flat, y, at, method="linear").reshape(len(query), -1)
        except (QhullError, ValueError):
            return None  # collinear (coplanar) support: no triangulation
        return np.where(np.isfinite(pred), pred, near)


__all__ = ["GP_MAX_POINTS", "GpReconstructor", "GriddataReconstructor"]

"""EOF reconstruction from a support set: univariate (``eof``) and multivariate (``mv_eof``).

The training anomalies (train split minus its mean) of one variable (``eof``) or of all
variables at once (``mv_eof``, the classical way to let one variable's observations
inform another) are put in one vector per signal, each variable standardised: its
anomaly times ``sqrt(w / sum(w) / C) / s``, with ``w`` the area weight of each point
(``cos(latitude)`` on lat-lon field stores, :mod:`pipelines.data.stores.geometry`), ``C``
its channels and ``s`` its train standard deviation (area-weighted), so each variable
carries unit total variance and area-weighted variance is what the SVD maximises. The
leading ``k`` right singular vectors are the EOFs; ``lambda_j = s_j**2 / n`` the variance
of their coefficients over the ``n`` train signals.

Per signal, the coefficients are the posterior mean given the support points of every
variable of the model (optimal interpolation in the EOF basis, i.e. ridge-regularised
gappy EOF): minimise ``|z_obs - E_obs a|**2 / r + sum_j a_j**2 / lambda_j`` in the
standardised space, ``r`` the train variance per dimension left unexplained by the
``k`` EOFs (floored at ``1e-12`` of the total), and the prediction of every point of
every variable is the train mean plus ``sum_j a_j`` times the EOF in data units
(regressing the train anomalies on the principal components, so zero-weight points such
as poles are predicted too). With fewer support values than EOFs the prior keeps the fit
well posed: no signal is too small. ``k`` is chosen on the validation split
(:mod:`pipelines.reports.classical`).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

from mia_core.data import Episode
from pipelines.reports.classical_base import Reconstructor, check_points, support_of, values_of

_FLOOR = 1e-12  # unexplained variance floor, relative to the total (exact low-rank data)
# One small system per signal: BLAS threads only add spin-waits, and with two study runs on
# two cores they made a residual-base batch 16x slower (pipelines/data/episode_base.py).
_BLAS = ThreadpoolController()


class JointEof:
    """Mean, standardisation and leading EOFs of one or more variables' train anomalies.

    Args:
        train: variable -> ``(n, P, C)`` train values (NaN: missing, counted as the mean).
        weights: variable -> ``(P,)`` area weights of its points.
        kmax: most EOFs kept (capped by the anomalies' rank).

    Attributes:
        names: the variables, in order.
        mean: variable -> ``(P, C)`` train mean.
        factor: variable -> ``(P, 1)`` standardisation (anomaly -> standardised).
        eofs: ``(kmax, D)`` EOFs in the standardised space (the variables concatenated).
        patterns: variable -> ``(kmax, P, C)`` EOFs in data units.
        lam: ``(kmax,)`` coefficient variances.
        residual: ``(kmax + 1,)`` train variance per standardised dimension left by
            ``0..kmax`` EOFs (floored).
        offsets: variable -> its slice of the ``D`` standardised dimensions.
    """

    def __init__(
        self, train: dict[str, np.ndarray], weights: dict[str, np.ndarray], kmax: int
    ) -> None:
        self.names = list(train)
        self.mean, self.factor, self.offsets = {}, {}, {}
        blocks, anomalies, start = [], {}, 0
        for m, x in train.items():
            n, p, c = x.shape
            mean = np.nanmean(x, 0) if n else np.zeros((p, c))
            self.mean[m] = np.where(np.isfinite(mean), mean, 0.0)
            a = np.nan_to_num(x - self.mean[m])
            w = np.asarray(weights[m], np.float64).reshape(p)
            w = w / w.sum() if w.sum() > 0 else np.full(p, 1.0 / p)
            var = float(np.mean(np.einsum("npc,p->n", a**2, w) / c)) if n else 0.0
            self.factor[m] = (np.sqrt(w / c) / np.sqrt(var if var > 0 else 1.0))[:, None]
            blocks.append((a * self.factor[m]).reshape(n, -1))
            anomalies[m] = a
            self.offsets[m] = slice(start, start + p * c)
            start += p * c
        z = np.concatenate(blocks, 1)
        n, d = z.shape
        u, s, vt = np.linalg.svd(z, full_matrices=False)
        rank = int((s > (s[0] if len(s) else 0.0) * 1e-10).sum()) if n else 0
        k = min(kmax, rank)
        self.eofs = vt[:k]
        self.lam = s[:k] ** 2 / max(n, 1)
        total = float((s**2).sum()) / max(n * d, 1)
        tail = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])[: k + 1]
        self.residual = np.maximum(tail / max(n * d, 1), _FLOOR * max(total, 1e-300))
        self.patterns = {
            m: np.einsum("nk,npc->kpc", u[:, :k] / s[:k], a) for m, a in anomalies.items()
        }

    @property
    def kmax(self) -> int:
        """EOFs available (at most the anomalies' rank)."""
        return len(self.lam)

    def solve(self, k: int, observed: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """``(k,)`` posterior-mean coefficients given observed points of some variables.

        Args:
            k: EOFs used (at most :attr:`kmax`).
            observed: variable -> ``(points (n_obs,), values (n_obs, C))``.
        """
        k = min(k, self.kmax)
        if k == 0:
            return np.zeros(0)
        rows, targets = [], []
        for m, (pts, vals) in observed.items():
            p, c = self.mean[m].shape
            z = (vals - self.mean[m][pts]) * self.factor[m][pts]
            block = self.eofs[:k, self.offsets[m]].reshape(k, p, c)[:, pts]
            rows.append(block.reshape(k, -1))
            targets.append(z.reshape(-1))
        e = np.concatenate(rows, 1)
        y = np.concatenate(targets)
        r = self.residual[k]
        lhs = e @ e.T / r + np.diag(1.0 / self.lam[:k])
        return np.linalg.solve(lhs, e @ y / r)

    def reconstruct(self, m: str, coef: np.ndarray) -> np.ndarray:
        """``(P, C)`` train mean plus the EOFs in data units weighted by ``coef``."""
        k = len(coef)
        return self.mean[m] + np.tensordot(coef, self.patterns[m][:k], axes=1)


class EofReconstructor(Reconstructor):
    """``eof`` (a :class:`JointEof` per variable) or ``mv_eof`` (one over all variables).

    Args:
        name: ``eof`` or ``mv_eof``.
        models: group -> its fitted :class:`JointEof` (``eof``: a group per variable;
            ``mv_eof``: one group ``"all"``).
        ks: group -> EOFs used.
        points: variable -> query points per signal (the fitted grid).
    """

    def __init__(
        self,
        name: str,
        models: dict[str, JointEof],
        ks: dict[str, int],
        points: dict[str, int],
    ) -> None:
        self.name, self.models, self.ks, self.points = name, models, dict(ks), points
        what = ", ".join(f"{g} k={ks[g]}" for g in models)
        kind = "joint EOFs of all variables" if name == "mv_eof" else "EOFs per variable"
        self.label = f"train mean + {kind} ({what}; k by validation nMSE)"

    def with_k(self, ks: dict[str, int]) -> EofReconstructor:
        """The same fit with other ``k`` per group (validation candidates)."""
        return EofReconstructor(self.name, self.models, ks, self.points)

    def predict(self, episode: Episode, index: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`Reconstructor.predict`: every group's variables from their supports."""
        with _BLAS.limit(limits=1, user_api="blas"):
            return self._predict(episode, len(index))

    def _predict(self, episode: Episode, count: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for group, model in self.models.items():
            names = [m for m in model.names if m in episode]
            for m in names:
                check_points(self.name, m, episode[m], self.points[m])
            values = {m: values_of(episode[m]) for m in names}
            for m in names:
                out[m] = np.empty_like(values[m])
            for b in range(count):
                observed = {}
                for m in names:
                    pts = support_of(episode[m], b)
                    observed[m] = (pts, values[m][b, pts])
                coef = model.solve(self.ks[group], observed)
                for m in names:
                    out[m][b] = model.reconstruct(m, coef)
        return out


__all__ = ["EofReconstructor", "JointEof"]

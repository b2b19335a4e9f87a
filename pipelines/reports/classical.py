"""Classical reference rows: EOF, multivariate EOF, Gaussian process, linear, nearest.

What a climate scientist would fit before trusting a meta-learned INR. Every row is fitted
once on the train split (or needs no fit) and then reconstructs each signal's every point
from that signal's support set; :func:`pipelines.reports.evaluation.evaluate` scores them
on the very support draws the INR's evaluation makes (same episodes: same seed, epochs,
split, bins and protocol; binned by realised ratio; nMSE, area-weighted nMSE and
physical RMSE as the INR's rows). Computing them inside the evaluation, rather than with
a draw function of their own, makes "the same support sets" true by construction.

Rows (:data:`CLASSICAL`):

* ``eof``: train mean + ``k`` EOFs per variable, the coefficients the posterior mean
  given the variable's support (:mod:`pipelines.reports.classical_eof`);
* ``mv_eof``: the same with joint EOFs of all variables (each standardised by its train
  std, area-weighted): every variable's support informs every variable's coefficients;
* ``gp``: scikit-learn Gaussian-process regression per signal, anisotropic RBF in
  lat/lon degrees plus white noise, hyperparameters by marginal likelihood
  (:mod:`pipelines.reports.classical_interp`, which says why not PyKrige);
* ``linear`` / ``nearest``: scipy ``griddata`` per signal.

``k`` of ``eof`` (per variable) and ``mv_eof`` (one for all) is chosen on the
VALIDATION split, under the same protocol and bins, among :data:`K_CANDIDATES` capped
by the train anomalies' rank: the smallest ``k`` whose mean validation nMSE over the bins
is within 1% (plus 1e-12) of the best (fewer EOFs when they tie). The test split is never read
for a choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mia_core.config import Config, ConfigError
from pipelines.data.episodes import stride_index
from pipelines.data.stores import Store
from pipelines.data.stores.geometry import point_weights, store_geometry
from pipelines.data.stores.reader import keep_rows
from pipelines.data.stores.writer import SPLITS
from pipelines.engine.memory_estimate import MemoryEstimate, check_memory, strided_points
from pipelines.reports.classical_base import (
    Reconstructor,
    grid_points,
    read_split,
    refuse_unshared,
)
from pipelines.reports.classical_eof import EofReconstructor, JointEof
from pipelines.reports.classical_interp import (
    GP_MAX_POINTS,
    GpReconstructor,
    GriddataReconstructor,
)
from pipelines.reports.evaluation import EvalRow, evaluate

CLASSICAL = ("eof", "mv_eof", "gp", "linear", "nearest")
K_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # capped by the train rank
MAX_TRAIN = 1024  # train signals read for the EOFs (evenly strided)
_TIE = 0.01  # a smaller k within 1% of the best validation nMSE wins


@dataclass
class EvalProtocol:
    """How the evaluation draws and bins support sets (the INR evaluation's settings).

    Attributes:
        bins: support-ratio bins ``(lo, hi)``.
        repeats: support draws per signal (``run.eval_repeats``).
        batch_size: signals per batch (``run.eval_batch_size``).
        spatial_stride: grid subsampling (``data.spatial_stride``).
        time_stride: signal subsampling (``data.time_stride``).
        protocol: ``paper`` or ``joint`` (``run.eval_protocol``).
        psnr_range: PSNR peak-to-peak range (``data.psnr_range``).
    """

    bins: list[tuple[float, float]]
    repeats: int = 1
    batch_size: int = 100
    spatial_stride: int = 1
    time_stride: int = 1
    protocol: str = "paper"
    psnr_range: float = 1.0

    @classmethod
    def of(cls, cfg: Config, bins: Sequence[tuple[float, float]] | None = None) -> EvalProtocol:
        """The protocol of ``cfg``'s evaluation (``bins``: default ``run.eval_bins``)."""
        run, data = cfg.run, cfg.data
        return cls(
            [tuple(b) for b in (run.eval_bins if bins is None else bins)],
            run.eval_repeats,
            run.eval_batch_size,
            data.spatial_stride,
            data.time_stride,
            run.eval_protocol,
            data.psnr_range,
        )

    def evaluate(
        self, store: Store, split: str, seed: int, rows: dict[str, Reconstructor]
    ) -> list[EvalRow]:
        """The classical rows only, scored on ``split`` with support-draw seed ``seed``."""
        return evaluate(
            None,
            store,
            split,
            self.bins,
            self.repeats,
            self.batch_size,
            seed,
            torch.device("cpu"),
            self.psnr_range,
            self.spatial_stride,
            self.time_stride,
            self.protocol,
            classical=rows,
        )


def check_names(names: Sequence[str], key: str = "classical") -> None:
    """One-line ConfigError naming ``key`` for unknown or repeated row names."""
    bad = [n for n in names if n not in CLASSICAL]
    if bad or len(set(names)) != len(names):
        raise ConfigError(
            f"{key}: {list(names)} has unknown or repeated rows {bad or 'repeated'}; "
            f"choose from {list(CLASSICAL)}"
        )


def fit_classical(
    store: Store,
    names: Sequence[str],
    how: EvalProtocol,
    val_seed: int,
    *,
    max_train: int = MAX_TRAIN,
    gp_max_points: int = GP_MAX_POINTS,
    candidates: Sequence[int] = K_CANDIDATES,
    log: Callable[[str], None] | None = None,
) -> dict[str, Reconstructor]:
    """Fit the named classical rows on the train split, ``k`` chosen on validation.

    Args:
        store: the study's store (shared coordinates needed).
        names: rows from :data:`CLASSICAL`, in table order.
        how: the evaluation's protocol (validation uses it too).
        val_seed: support-draw seed of the validation scoring of ``k``.
        max_train: train signals read for the EOFs (evenly strided).
        gp_max_points: support points a GP fit uses at most (subsampled above).
        candidates: ``k`` tried for ``eof`` and ``mv_eof``.
        log: line printer for the chosen ``k`` (optional).

    Returns:
        Row name -> fitted reconstructor, in ``names`` order.

    Raises:
        ConfigError: an unknown row, a store without shared coordinates (names the store,
            variable and row), an EOF row on a store without train or validation signals.
    """
    check_names(names)
    for name in names:
        refuse_unshared(store, name)
    mods = list(store.modalities)
    grids = {m: grid_points(store, m, how.spatial_stride) for m in mods}
    coords = {m: xy for m, (xy, _) in grids.items()}
    degrees = all(d for _, d in grids.values())
    out: dict[str, Reconstructor] = {}
    train = None
    for name in names:
        if name in ("eof", "mv_eof"):
            if train is None:
                check_memory(eof_estimate(store, how, max_train, max(candidates)))
                train = read_split(store, "train", how.spatial_stride, how.time_stride, max_train)
            out[name] = _fit_eof(store, name, train, how, val_seed, candidates, log)
        elif name == "gp":
            out[name] = GpReconstructor(coords, degrees, val_seed, gp_max_points)
        else:
            out[name] = GriddataReconstructor(name, coords, degrees)
    return out


def eof_estimate(store: Store, how: EvalProtocol, max_train: int, kmax: int) -> MemoryEstimate:
    """Peak memory of an EOF fit (checked before the train split is read).

    About four ``n x D`` float64 arrays (the train values, their standardised copy and the
    SVD's factors) plus the EOFs and their patterns (``2 kmax x D``).
    """
    keep = keep_rows(store.split, store.valid, 0, SPLITS["train"], how.time_stride)
    n = min(int(keep.sum()), max_train)
    d = sum(
        strided_points(tuple(store.info[m].grid_shape), how.spatial_stride) * store.info[m].channels
        for m in store.modalities
    )
    terms = {"EOF fit": 8.0 * d * (4 * n + 2 * min(kmax, n))}
    return MemoryEstimate("the EOF fit", terms, {"EOF fit": "data.spatial_stride"})


def _fit_eof(
    store: Store,
    name: str,
    train: dict[str, np.ndarray],
    how: EvalProtocol,
    val_seed: int,
    candidates: Sequence[int],
    log: Callable[[str], None] | None,
) -> EofReconstructor:
    """``eof`` or ``mv_eof`` with ``k`` chosen on the validation split (module docstring)."""
    where = store.location.display
    if any(not len(v) for v in train.values()):
        raise ConfigError(f"classical baseline {name!r} needs train signals; {where} has none")
    weights = {}
    for m in store.modalities:
        keep = stride_index(tuple(store.info[m].grid_shape), how.spatial_stride)
        weights[m] = point_weights(store, m, store_geometry(store, m, strict=False))[0][keep]
    kmax = max(candidates)
    if name == "eof":
        models = {m: JointEof({m: train[m]}, {m: weights[m]}, kmax) for m in store.modalities}
    else:
        models = {"all": JointEof(train, weights, kmax)}
    points = {m: train[m].shape[1] for m in store.modalities}
    base = EofReconstructor(name, models, {g: 1 for g in models}, points)
    options = sorted({max(1, min(k, mod.kmax)) for mod in models.values() for k in candidates})
    trial = {
        f"{name}@{k}": base.with_k({g: min(k, mod.kmax) for g, mod in models.items()})
        for k in options
    }
    rows = how.evaluate(store, "val", val_seed, trial)
    chosen = {}
    for group in models:
        scores = []
        for k in options:
            vals = [
                r.metrics["nmse_all"]
                for r in rows
                if r.method == f"{name}@{k}" and (group == "all" or r.modality == group)
            ]
            vals = [v for v in vals if math.isfinite(v)]
            scores.append(float(np.mean(vals)) if vals else math.nan)
        if all(math.isnan(s) for s in scores):
            raise ConfigError(
                f"classical baseline {name!r} chooses k on the validation split; {where} "
                "has no validation signal: build the store with a validation split"
            )
        bound = np.nanmin(scores) * (1 + _TIE) + 1e-12
        pick = next(k for k, s in zip(options, scores, strict=True) if s <= bound)
        chosen[group] = min(pick, models[group].kmax)
        if log is not None:
            text = ", ".join(f"k={k}: {s:.4g}" for k, s in zip(options, scores, strict=True))
            log(f"classical {name} ({group}): validation nMSE {text}; chose k={chosen[group]}")
    return base.with_k(chosen)


__all__ = [
    "CLASSICAL",
    "K_CANDIDATES",
    "EvalProtocol",
    "check_names",
    "eof_estimate",
    "fit_classical",
]

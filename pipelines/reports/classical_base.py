"""The classical reconstructors' common interface, their coordinates and training data.

A classical reconstructor (:mod:`pipelines.reports.classical`) is fitted once on the
train split and then, per signal, predicts every query point of every modality from that
signal's support set, exactly as a meta-learned INR adapts to it. It sees an
:class:`~mia_core.data.Episode` as the evaluation draws it
(:func:`pipelines.reports.evaluation.evaluate`, on the very support masks the INR sees)
and returns per modality ``(B, P, C)`` predictions; a signal the method cannot run on
(too few support points) is a row of NaN, which the evaluation counts as ``n_failed``.

Coordinates (:func:`grid_points`): the latitude and longitude of a lat-lon field store in
degrees as the reader orders its points (latitude ascending, longitudes in the store's own
convention, e.g. -140..-52.5: never wrapped, so a global grid's seam is not periodic
here), the normalised grid coordinates in ``[-1, 1]`` of every other grid (volumes,
``y, x`` grids, signal-store grids and shared point sets). A store whose points differ per
signal (per-signal point sets, patch stores) has no shared coordinates for a basis or an
interpolation grid: a one-line error names the store, the variable and the method.
"""

from __future__ import annotations

import abc
import math

import numpy as np

from mia_core.config import ConfigError
from mia_core.data import Episode, ModalityBatch
from pipelines.data.episodes import stride_index
from pipelines.data.stores import Store
from pipelines.data.stores.patches import PatchStore
from pipelines.data.stores.reader import keep_rows
from pipelines.data.stores.store_base import SPATIAL_SETS, note_split
from pipelines.data.stores.writer import SPLITS

LATLON = SPATIAL_SETS[:2]  # the reader's (latitude, longitude) dim pairs


class Reconstructor(abc.ABC):
    """A classical reconstructor fitted on the train split (see the module docstring).

    Attributes:
        name: the row's key (``eof``, ``mv_eof``, ``gp``, ``linear``, ``nearest``).
        label: the table's row label (what was fitted, how).
        min_points: support points a signal needs per modality (fewer: NaN, ``n_failed``).
    """

    name: str = ""
    label: str = ""
    min_points: int = 1

    @abc.abstractmethod
    def predict(self, episode: Episode, index: np.ndarray) -> dict[str, np.ndarray]:
        """Modality -> ``(B, P, C)`` float64 predictions at every query point.

        Args:
            episode: one evaluation batch (CPU tensors; every query point of each signal).
            index: ``(B,)`` global signal indices (seed per-signal subsampling).

        Returns:
            NaN rows for the signals the method could not run on.
        """


def support_of(mb: ModalityBatch, b: int) -> np.ndarray:
    """Query-point indices of signal ``b``'s support set (valid points only)."""
    sup = mb.query_support[b].numpy() > 0
    return np.flatnonzero(sup & (mb.query_mask[b].numpy() > 0))


def values_of(mb: ModalityBatch) -> np.ndarray:
    """``(B, P, C)`` float64 query values of a modality batch."""
    return mb.query_y.double().numpy()


def check_points(name: str, m: str, mb: ModalityBatch, points: int) -> None:
    """Refuse an episode whose query points are not the fitted grid's (one line)."""
    if mb.query_y.shape[1] != points:
        raise ValueError(
            f"classical {name!r}: variable {m!r} has {mb.query_y.shape[1]} query points, "
            f"the fitted grid {points}: evaluate every point with the fitting's spatial_stride"
        )


def refuse_unshared(store: Store, method: str) -> None:
    """One-line ConfigError when a variable of ``store`` has no shared coordinates.

    Raises:
        ConfigError: a patch store, or a variable with per-signal points (names the
            store, the variable and the method).
    """
    where = store.location.display
    if isinstance(store, PatchStore):
        raise ConfigError(
            f"classical baseline {method!r} needs whole grids; {where} is read as patches: "
            "set data.patch to [] or drop the classical rows"
        )
    for m in store.modalities:
        if store.info[m].per_signal:
            raise ConfigError(
                f"classical baseline {method!r} needs shared coordinates; variable {m!r} of "
                f"{where} has per-signal points: drop {method!r} from the classical rows "
                "for this store"
            )


def grid_points(store: Store, m: str, spatial_stride: int = 1) -> tuple[np.ndarray, bool]:
    """``(P, d)`` float64 coordinates of ``m``'s query points, and whether in degrees.

    Latitude and longitude in degrees (reader order, latitude ascending) on lat-lon field
    stores with both coordinates, else the normalised grid coordinates; kept by
    ``spatial_stride`` like the episodes' query points.
    """
    info = store.info[m]
    keep = stride_index(tuple(info.grid_shape), spatial_stride)
    layout = getattr(store, "layout", {})
    ds = getattr(store, "ds", None)
    sdims = tuple(layout[m][3]) if m in layout else ()
    if sdims in LATLON and all(d in ds.coords for d in sdims):
        lat = np.asarray(ds[sdims[0]].values, np.float64)
        lat = lat[::-1] if store.flipped.get(m) else lat
        lon = np.asarray(ds[sdims[1]].values, np.float64)
        mesh = np.meshgrid(lat, lon, indexing="ij")
        return np.stack([g.reshape(-1) for g in mesh], -1)[keep], True
    return np.asarray(info.coords, np.float64)[keep], False


def read_split(
    store: Store,
    split: str,
    spatial_stride: int = 1,
    time_stride: int = 1,
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """Modality -> ``(n, P, C)`` float64 values of ``split``'s signals (NaN: missing).

    The signals a reader of ``split`` serves (valid, every ``time_stride``-th), at most
    ``limit`` of them (evenly strided), at the points ``spatial_stride`` keeps.
    """
    note_split(split)
    keep = keep_rows(store.split, store.valid, 0, SPLITS[split], time_stride)
    idx = np.flatnonzero(keep)
    if limit is not None and len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    points = {m: stride_index(tuple(store.info[m].grid_shape), spatial_stride) for m in store.info}
    parts: dict[str, list[np.ndarray]] = {m: [] for m in store.modalities}
    for start, stop in store.chunk_ranges():
        sel = idx[(idx >= start) & (idx < stop)]
        if len(sel):
            chunk = store.read(start, stop)
            for m in store.modalities:
                parts[m].append(chunk[m][sel - start][:, points[m]].astype(np.float64))
    return {
        m: np.concatenate(v) if v else np.empty((0, len(points[m]), store.info[m].channels))
        for m, v in parts.items()
    }


def nan_like(values: np.ndarray) -> np.ndarray:
    """A NaN array shaped like ``values`` (the prediction of signals that could not run)."""
    return np.full(values.shape, math.nan)


__all__ = [
    "Reconstructor",
    "check_points",
    "grid_points",
    "nan_like",
    "read_split",
    "refuse_unshared",
    "support_of",
    "values_of",
]

"""Quality of a decoded field set, one definition for every codec (INR codes, ZFP, SZ3...).

:func:`quality` scores decoded values against the store's normalised values:

- **PSNR** exactly as the encoder defines it (:func:`pipelines.codecs.meta_model.field_metrics`
  with :func:`mia_core.meta.metrics.masked_mse`): per (time step, variable) the squared error
  averaged over channels, then over the valid points (a point is valid when every channel is
  finite), ``10 log10(psnr_range**2 / max(mse, 1e-20))``; NaN for a variable without valid
  points; mean over variables, then over time steps (NaN-skipping).
- **area-weighted RMSE in physical units** per variable: the normalised error times the
  normalisation's scale of its channel (``max - min`` for ``minmax01``, ``std`` for
  ``zscore``: :func:`pipelines.data.stores.writer.norm_affine`), weighted by ``cos(latitude)``
  on latitude-longitude grids and uniformly otherwise, pooled over time steps, channels and
  valid points.
- **maximum absolute error in physical units** per variable (and in normalised units, which
  is what a compressor's absolute error bound controls).

:func:`store_geometry` gives a store variable's weights, scales and units
(:mod:`pipelines.data.stores.geometry`, re-exported here with :class:`EncodeError`);
:func:`read_fields`
reads a store's time steps into the :class:`RDFields` every codec is measured on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import geometry as store_geo
from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.geometry import LAT_DIMS, Geometry
from pipelines.data.stores.reader import read_steps

MSE_FLOOR = 1e-20  # mia_core.meta.metrics.psnr clamps the MSE here (200 dB at range 1)


def latitude_weights(lat_deg: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """:func:`pipelines.data.stores.geometry.latitude_weights`, raising :class:`EncodeError`.

    Raises:
        EncodeError: latitudes outside [-90, 90] (not degrees) or the wrong length.
    """
    try:
        return store_geo.latitude_weights(lat_deg, grid_shape)
    except StoreError as err:
        raise EncodeError(str(err)) from err


def store_geometry(store: Any, var: str) -> Geometry:
    """:func:`pipelines.data.stores.geometry.store_geometry`, raising :class:`EncodeError`.

    Raises:
        EncodeError: a latitude coordinate that is not in degrees.
    """
    try:
        return store_geo.store_geometry(store, var)
    except StoreError as err:
        raise EncodeError(str(err)) from err


@dataclass
class RDFields:
    """The time steps every codec is measured on, with how their errors are scored.

    Args:
        values: variable -> ``(T, C, *grid)`` normalised float32 values (NaN = missing).
        geometry: variable -> :class:`Geometry` (default: uniform weights, scale 1).
        data_range: the meta-model's ``psnr_range``.

    Attributes:
        valid: variable -> ``(T, *grid)`` points where every channel is finite.
        span: peak-to-peak of the valid values, largest over variables (the unit of the
            compressors' relative error bounds).
    """

    values: dict[str, np.ndarray]
    geometry: dict[str, Geometry] = field(default_factory=dict)
    data_range: float = 1.0

    def __post_init__(self) -> None:
        self.values = {v: np.asarray(a, np.float32) for v, a in self.values.items()}
        self.valid = {v: np.isfinite(a).all(1) for v, a in self.values.items()}
        for v, a in self.values.items():
            if a.ndim not in (4, 5):
                raise EncodeError(
                    f"variable {v!r}: values of shape {a.shape}; expected (T, C, lat, lon) "
                    "or (T, C, z, y, x)"
                )
            if v not in self.geometry:
                self.geometry[v] = Geometry(np.ones(a.shape[2:]), np.ones(a.shape[1]))
        spans = [
            float(np.ptp(a.transpose(0, *range(2, a.ndim), 1)[self.valid[v]]))
            for v, a in self.values.items()
            if self.valid[v].any()
        ]
        self.span = max(spans, default=0.0) or 1.0

    @property
    def raw_bytes(self) -> int:
        """float32 bytes of every time step, channel and variable."""
        return sum(a.size * 4 for a in self.values.values())

    def score(self, decoded: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """:func:`quality` of ``decoded`` (same shapes as ``values``) against these fields."""
        return quality(
            self.values,
            decoded,
            self.valid,
            {v: g.weights for v, g in self.geometry.items()},
            {v: g.scale for v, g in self.geometry.items()},
            self.data_range,
        )


def quality(
    reference: Mapping[str, np.ndarray],
    decoded: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    scale: Mapping[str, np.ndarray | float],
    data_range: float = 1.0,
) -> dict[str, Any]:
    """PSNR, area-weighted physical RMSE and physical max-abs error (module docstring).

    Args:
        reference: variable -> ``(T, C, *grid)`` normalised values.
        decoded: variable -> the same shape, decoded (anything at invalid points).
        valid: variable -> ``(T, *grid)`` bool, the points scored.
        weights: variable -> grid-shaped area weights.
        scale: variable -> ``(C,)`` (or a float) physical units per normalised unit.
        data_range: PSNR's peak-to-peak range (the meta-model's ``psnr_range``).

    Returns:
        Plain floats: ``psnr`` (mean over variables, then time steps), ``psnr_per_step``,
        ``psnr_per_variable`` (mean over time steps), ``rmse`` and ``max_abs`` (physical),
        ``max_abs_normalised``; NaN where nothing is valid.
    """
    names = list(reference)
    per_tv = np.full((_steps(reference), len(names)), np.nan)
    out: dict[str, Any] = {"rmse": {}, "max_abs": {}, "max_abs_normalised": {}}
    for j, v in enumerate(names):
        ref = np.asarray(reference[v], np.float64)
        err = np.asarray(decoded[v], np.float64).reshape(ref.shape) - ref
        ok = np.asarray(valid[v], bool)
        err = np.where(ok[:, None], err, 0.0)
        count = ok.reshape(len(ok), -1).sum(1)
        se = np.square(err).mean(1).reshape(len(ok), -1).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mse = np.where(count > 0, se / np.maximum(count, 1), np.nan)
            per_tv[:, j] = 10.0 * np.log10(data_range**2 / np.maximum(mse, MSE_FLOOR))
        s = np.broadcast_to(np.asarray(scale[v], np.float64), (ref.shape[1],))
        phys = np.abs(err) * s.reshape(1, -1, *[1] * (ref.ndim - 2))
        w = np.broadcast_to(np.asarray(weights[v], np.float64), ref.shape[2:]) * ok
        wsum = float(w.sum()) * ref.shape[1]
        wse = float((np.square(phys) * w[:, None]).sum())
        out["rmse"][v] = math.sqrt(wse / wsum) if wsum > 0 else math.nan
        any_ok = bool(ok.any())
        out["max_abs"][v] = float(phys.max()) if any_ok else math.nan
        out["max_abs_normalised"][v] = float(np.abs(err).max()) if any_ok else math.nan
    with warnings.catch_warnings():  # all-NaN means: a step or variable without valid points
        warnings.simplefilter("ignore", RuntimeWarning)
        per_step = np.nanmean(per_tv, 1)
        out["psnr"] = float(np.nanmean(per_step)) if np.isfinite(per_step).any() else math.nan
        out["psnr_per_step"] = [float(p) for p in per_step]
        out["psnr_per_variable"] = {v: float(np.nanmean(per_tv[:, j])) for j, v in enumerate(names)}
    return out


def _steps(reference: Mapping[str, np.ndarray]) -> int:
    steps = {np.shape(a)[0] for a in reference.values()}
    if len(steps) != 1:
        raise EncodeError(f"variables have different numbers of time steps: {sorted(steps)}")
    return steps.pop()


def field_values(store: Any, frames: Sequence[int]) -> dict[str, np.ndarray]:
    """Variable -> ``(T, C, *grid)`` normalised values of ``frames`` (NaN = missing)."""
    rows = read_steps(store, frames)  # (n, P, C)
    return {
        m: np.moveaxis(v, -1, 1).reshape(v.shape[0], v.shape[-1], *store.info[m].grid_shape)
        for m, v in rows.items()
    }


def read_fields(store: Any, frames: Sequence[int], data_range: float = 1.0) -> RDFields:
    """The normalised values of ``frames`` of a field store, with each variable's geometry.

    Raises:
        EncodeError: a latitude coordinate that is not in degrees.
        StoreError: an unreadable chunk.
    """
    values = field_values(store, frames)
    geometry = {m: store_geometry(store, m) for m in store.modalities}
    return RDFields(values, geometry, data_range)


__all__ = [
    "LAT_DIMS",
    "Geometry",
    "RDFields",
    "field_values",
    "latitude_weights",
    "quality",
    "read_fields",
    "store_geometry",
]

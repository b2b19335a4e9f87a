"""Patch signals: a grid store seen as one signal per (time step, patch).

``data.patch`` (e.g. ``[32, 32]`` for lat/lon fields, ``[16, 16, 16]`` for volumes) cuts
every grid signal of a store into tiles. :class:`PatchStore` wraps the opened store and
presents the same :class:`~pipelines.data.stores.reader.Store` interface, so episodes,
the local and Ray Data training paths, validation and evaluation run unchanged:

* signal ``s`` is patch ``s % K`` of base signal (time step) ``s // K``, ``K`` patches per
  step in row-major order of the patch grid; ``run.batch_size`` therefore counts patches;
* every modality (variable) of a patch is that tile of the variable, as for whole signals;
* a patch's coordinates (``data.patch_coords``) are by default **local**: every patch
  lies on the same ``[-1, 1]^d`` frame (shared coordinates, like a whole signal's), so
  the network's sine frequencies span one patch whatever the grid size, and each patch's
  own code (its adapted weights or context) says what lies there; decoding maps a
  patch's code back to its place. ``global`` gives the points' coordinates in the whole
  grid's ``[-1, 1]^d`` domain instead (per-signal coordinates, ``info.coords is None``):
  position reaches the shared network through its input, but a 32-cell patch of a
  1440-cell axis spans 1/45 of the domain, below a SIREN's lowest useful frequency
  (``docs/scale.md`` has the measurement);
* a grid that the patch size does not divide gets edge patches padded with NaN, which
  episodes mask as missing values (as NaNs in the data already are), so any grid works;
  a patch larger than the grid along an axis is cut to the grid there;
* split, scale and validity of a patch are those of its time step; a patch with no finite
  value in some modality at the first valid time step (e.g. all land for a sea variable)
  is marked invalid at every step (missing-value masks are assumed static);
* reads follow the base store's chunks: reading patches ``[a, b)`` reads only the time
  steps ``[a // K, ceil(b / K))`` and tiles them, never more than those steps' chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mia_core.config import ConfigError
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.reader import ModalityInfo, Store, grid_coords, open_store


def _check(base: Store, patch: Sequence[int]) -> tuple[int, ...]:
    """The base store's common grid shape, or a one-line ConfigError naming data.patch."""
    where = base.location.display
    kinds = base.attrs.get("info", {}) if isinstance(base.attrs.get("info"), dict) else {}
    for m in base.modalities:
        if base.info[m].coords is None or kinds.get(m, {}).get("kind") == "points":
            raise ConfigError(
                f"data.patch needs grid variables; {m!r} of {where} is a point set: "
                "set data.patch to [] for this store"
            )
    shapes = {m: tuple(base.info[m].grid_shape) for m in base.modalities}
    grids = set(shapes.values())
    if len(grids) != 1:
        raise ConfigError(
            f"data.patch needs one grid for all data.modalities; {where} has {shapes}"
        )
    grid = grids.pop()
    if len(patch) != len(grid) or not all(
        isinstance(p, int | np.integer) and p >= 1 for p in patch
    ):
        raise ConfigError(
            f"data.patch {list(patch)} does not fit the grid {list(grid)} of {where}: "
            f"give {len(grid)} positive sizes, one per grid axis"
        )
    return grid


class PatchStore(Store):
    """A grid store whose signals are patches of its time steps (see the module docstring).

    Args:
        base: the opened signal or field store (grid modalities sharing one grid).
        patch: patch size per grid axis.
        coords: ``local`` (one ``[-1, 1]^d`` frame shared by every patch) or ``global``.

    Raises:
        ConfigError: wrong rank, a non-positive size, point-set modalities or modalities
            on different grids.
    """

    def __init__(self, base: Store, patch: Sequence[int], coords: str = "local") -> None:
        grid = _check(base, patch)
        if coords not in ("local", "global"):
            raise ConfigError(f"data.patch_coords must be local or global, got {coords!r}")
        self.coords_mode = coords
        self.base, self.location, self.grid = base, base.location, grid
        self.modalities = list(base.modalities)
        self.patch = tuple(min(int(p), g) for p, g in zip(patch, grid, strict=True))
        self.counts = tuple(-(-g // p) for g, p in zip(grid, self.patch, strict=True))
        self.per_step = math.prod(self.counts)
        k = self.per_step
        # Per-modality scale arrays of the base store are indexed by base signal: patches
        # use the per-signal scale instead (extra arrays are not carried over).
        self.attrs = {key: v for key, v in base.attrs.items() if key != "extra_arrays"}
        self.attrs["mia_patch"] = {"patch": list(self.patch), "grid": list(grid), "coords": coords}
        shared = grid_coords(self.patch) if coords == "local" else None
        self.group = getattr(base, "group", None)
        self.ds = getattr(base, "ds", None)
        self.info = {
            m: ModalityInfo(m, self.patch, i.channels, shared, i.extent, i.norm)
            for m, i in base.info.items()
        }
        self.num_signals = base.num_signals * k
        self.chunk_size = base.chunk_size * k
        self.split = np.repeat(base.split, k)
        self.scale = np.repeat(base.scale, k)
        self.valid = np.repeat(base.valid, k) & np.tile(self._patches_with_data(), base.num_signals)
        axes = [np.linspace(-1.0, 1.0, g) if g > 1 else np.zeros(1) for g in grid]
        self._axes = [a.astype(np.float32) for a in axes]

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """The base store's chunk ranges in patch signals (whole time steps)."""
        k = self.per_step
        return [(a * k, b * k) for a, b in self.base.chunk_ranges()]

    def tiles(self, values: np.ndarray) -> np.ndarray:
        """``(n, G, C)`` whole signals -> ``(n * K, prod(patch), C)`` patches (NaN padded)."""
        n, _, c = values.shape
        padded_shape = tuple(p * q for p, q in zip(self.patch, self.counts, strict=True))
        full = np.full((n, *padded_shape, c), np.nan, np.float32)
        full[(slice(None), *(slice(0, g) for g in self.grid))] = values.reshape(n, *self.grid, c)
        split = [n]
        for q, p in zip(self.counts, self.patch, strict=True):
            split += [q, p]
        d = len(self.grid)
        order = [0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1]
        tiled = full.reshape(*split, c).transpose(order)
        return tiled.reshape(n * self.per_step, math.prod(self.patch), c)

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """See :meth:`Store.read`: reads only the time steps that hold these patches."""
        k = self.per_step
        t0, t1 = start // k, -(-stop // k)
        data = self.base.read(t0, t1)
        off = start - t0 * k
        return {m: self.tiles(v)[off : off + stop - start] for m, v in data.items()}

    def patch_coords(self, index: int) -> np.ndarray:
        """``(prod(patch), d)`` global ``[-1, 1]`` coordinates of patch ``index`` of a step.

        Padded points beyond the grid repeat the edge coordinate (their values are NaN,
        so they are masked and never reach a loss).
        """
        corner = np.unravel_index(index, self.counts)
        per_axis = [
            ax[np.minimum(c * p + np.arange(p), g - 1)]
            for ax, c, p, g in zip(self._axes, corner, self.patch, self.grid, strict=True)
        ]
        mesh = np.meshgrid(*per_axis, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], -1)

    def read_coords(self, modality: str, start: int, stop: int) -> np.ndarray:
        """Local: the shared ``(prod(patch), d)`` frame; global: ``(n, prod(patch), d)``."""
        if self.coords_mode == "local":
            return super().read_coords(modality, start, stop)
        index = np.arange(start, stop) % self.per_step
        table = {int(i): self.patch_coords(int(i)) for i in np.unique(index)}
        return np.stack([table[int(i)] for i in index])

    def _patches_with_data(self) -> np.ndarray:
        """``(K,)`` bool: patches with a finite value in every modality at a valid step."""
        ok = np.ones(self.per_step, bool)
        steps = np.flatnonzero(self.base.valid)
        if not steps.size:
            return ok
        t = int(steps[0])
        for v in self.base.read(t, t + 1).values():
            ok &= np.isfinite(self.tiles(v)).all(-1).any(-1)
        return ok


def patched(store: Store, patch: Sequence[int] = (), coords: str = "local") -> Store:
    """``store`` seen as patch signals when ``patch`` is not empty, else ``store`` itself."""
    return PatchStore(store, patch, coords) if patch else store


def open_patched(
    location: StoreLocation,
    modalities: list[str] | None,
    patch: Sequence[int] = (),
    coords: str = "local",
) -> Store:
    """:func:`open_store`, seen as patch signals when ``patch`` is not empty."""
    return patched(open_store(location, modalities), patch, coords)

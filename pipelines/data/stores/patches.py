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
  a patch larger than the grid along an axis is an error, unless the store was built with
  exactly that patch (``mia_built_patch``): then it is cut to the grid there;
* a field store must be built for patches (``mia-inr build ... --patch 32x32``: chunks of
  whole patches, :mod:`~pipelines.data.stores.patch_chunks`), and its spatial chunks must
  hold whole ``data.patch`` patches; otherwise a one-line ConfigError names data.patch,
  the store and the fix. Signal stores (small images, whole signals per chunk) need not;
* split, scale and validity of a patch are those of its time step; a patch with no finite
  value in some modality at the first valid time step (e.g. all land for a sea variable)
  is marked invalid at every step (missing-value masks are assumed static);
* reads follow the patches: reading patches of part of a step reads only the spatial
  region of those patches (the chunks holding them) of that step; whole steps are read
  whole. :meth:`PatchStore.chunk_ranges` (Ray Data read tasks, episode reads) are the
  patches of one spatial chunk row of one step, or whole time chunks when the store has
  one spatial chunk, so a read's memory does not grow with the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mia_core.config import ConfigError
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.patch_chunks import BUILT_PATCH_ATTR, chunk_edges, splitting_axis
from pipelines.data.stores.reader import ModalityInfo, Store, grid_coords, open_store


def _check(base: Store, patch: Sequence[int]) -> tuple[int, ...]:
    """The base store's common grid shape, or a one-line ConfigError naming data.patch."""
    where = base.location.display
    kinds = base.attrs.get("info", {}) if isinstance(base.attrs.get("info"), dict) else {}
    for m in base.modalities:
        if base.info[m].per_signal or kinds.get(m, {}).get("kind") == "points":
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


def _fit(base: Store, patch: Sequence[int], grid: tuple[int, ...]) -> tuple[int, ...]:
    """The patch used on ``grid``, or a one-line ConfigError naming data.patch and the fix.

    Refused: a patch larger than the grid (unless the store was built with exactly it:
    cut to the grid), a field store built without ``--patch``, spatial chunks that cut a
    patch (the last chunk along an axis may end with the grid).
    """
    where, want = base.location.display, [int(p) for p in patch]
    built = base.attrs.get(BUILT_PATCH_ATTR)
    built = [int(p) for p in built] if isinstance(built, list | tuple) else None
    flag = "x".join(str(p) for p in want)
    if any(p > g for p, g in zip(want, grid, strict=True)) and built != want:
        small = "x".join(str(min(p, g)) for p, g in zip(want, grid, strict=True))
        raise ConfigError(
            f"data.patch {want} does not fit the grid {list(grid)} of {where}: "
            f"use at most the grid per axis (e.g. data.patch: [{small.replace('x', ', ')}])"
        )
    cut = tuple(min(p, g) for p, g in zip(want, grid, strict=True))
    chunks = getattr(base, "spatial_chunks", None)
    if chunks is None:  # a signal store: whole (small) signals per chunk
        return cut
    if built is None:
        raise ConfigError(
            f"data.patch {want}: {where} was built without patches (chunks of whole time "
            f"steps): rebuild it with --patch {flag}, or set data.patch: []"
        )
    for m in base.modalities:
        axis = splitting_axis(grid, cut, chunks[m], base.flipped[m])
        if axis is not None:
            raise ConfigError(
                f"data.patch {want} splits the chunks {list(chunks[m])} of {m!r} in {where} "
                f"(axis {axis}): use the built patch {built}, or rebuild with --patch {flag}"
            )
    return cut


class PatchStore(Store):
    """A grid store whose signals are patches of its time steps (see the module docstring).

    Args:
        base: the opened signal or field store (grid modalities sharing one grid).
        patch: patch size per grid axis.
        coords: ``local`` (one ``[-1, 1]^d`` frame shared by every patch) or ``global``.

    Raises:
        ConfigError: wrong rank, a non-positive size, a patch larger than the grid (but
            the built one), point-set modalities, modalities on different grids, a field
            store built without ``--patch`` or whose spatial chunks cut a patch.
    """

    def __init__(self, base: Store, patch: Sequence[int], coords: str = "local") -> None:
        grid = _check(base, patch)
        if coords not in ("local", "global"):
            raise ConfigError(f"data.patch_coords must be local or global, got {coords!r}")
        self.coords_mode = coords
        self.base, self.location, self.grid = base, base.location, grid
        self.modalities = list(base.modalities)
        self.patch = _fit(base, patch, grid)
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
        self._ranges = self._plan_ranges()
        self.chunk_size = max(b - a for a, b in self._ranges)
        self.split = np.repeat(base.split, k)
        self.scale = np.repeat(base.scale, k)
        self.valid = np.repeat(base.valid, k) & np.tile(self._patches_with_data(), base.num_signals)
        axes = [np.linspace(-1.0, 1.0, g) if g > 1 else np.zeros(1) for g in grid]
        self._axes = [a.astype(np.float32) for a in axes]

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """Patch ranges a read task or an episode cache reads at once (see the module doc).

        The patches of one spatial chunk row of one step (rows of patches along the first
        axis that one chunk holds), or the base store's time chunks when one spatial chunk
        covers the grid: never more than one step of one chunk row of a large grid.
        """
        return list(self._ranges)

    def _plan_ranges(self) -> list[tuple[int, int]]:
        k = self.per_step
        chunks = getattr(self.base, "spatial_chunks", None)
        whole = chunks is None or all(tuple(c) == tuple(self.grid) for c in chunks.values())
        if whole:
            return [(a * k, b * k) for a, b in self.base.chunk_ranges()]
        edges = set()
        for m in self.modalities:
            flipped = self.base.flipped[m]
            edges |= {e // self.patch[0] for e in chunk_edges(self.grid[0], chunks[m][0], flipped)}
        rows = [0, *sorted(edges), self.counts[0]]
        per_row = math.prod(self.counts[1:])
        spans = [(a * per_row, b * per_row) for a, b in zip(rows, rows[1:], strict=False)]
        return [(t * k + a, t * k + b) for t in range(self.base.num_signals) for a, b in spans]

    def tiles(self, values: np.ndarray) -> np.ndarray:
        """``(n, G, C)`` whole signals -> ``(n * K, prod(patch), C)`` patches (NaN padded)."""
        return self._tile(values, self.grid, self.counts)

    def _tile(
        self, values: np.ndarray, shape: tuple[int, ...], counts: tuple[int, ...]
    ) -> np.ndarray:
        """``(n, prod(shape), C)`` values of a box of ``counts`` patches -> its patches.

        ``shape`` may end short of ``counts * patch`` (the grid's end): NaN padded.
        Returns ``(n * prod(counts), prod(patch), C)``, patches row-major in the box.
        """
        n, _, c = values.shape
        padded_shape = tuple(p * q for p, q in zip(self.patch, counts, strict=True))
        full = np.full((n, *padded_shape, c), np.nan, np.float32)
        full[(slice(None), *(slice(0, g) for g in shape))] = values.reshape(n, *shape, c)
        split = [n]
        for q, p in zip(counts, self.patch, strict=True):
            split += [q, p]
        d = len(shape)
        order = [0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1]
        tiled = full.reshape(*split, c).transpose(order)
        return tiled.reshape(n * math.prod(counts), math.prod(self.patch), c)

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """See :meth:`Store.read`; reads only the steps of these patches.

        Whole steps are read whole; of a part of a step only the region of its patches
        (the chunks holding them).
        """
        k, parts, pos = self.per_step, [], start
        while pos < stop:
            t, a = divmod(pos, k)
            if a == 0 and stop - pos >= k:  # whole steps: read whole
                n = (stop - pos) // k
                parts.append({m: self.tiles(v) for m, v in self.base.read(t, t + n).items()})
                pos += n * k
            else:
                b = min(k, stop - t * k)
                parts.append(self._read_patches(t, a, b))
                pos += b - a
        if len(parts) == 1:
            return parts[0]
        if not parts:  # an empty range
            size = math.prod(self.patch)
            return {m: np.zeros((0, size, self.info[m].channels), np.float32) for m in self.info}
        return {m: np.concatenate([p[m] for p in parts]) for m in self.modalities}

    def _read_patches(self, t: int, a: int, b: int) -> dict[str, np.ndarray]:
        """Patches ``[a, b)`` of step ``t``: the box of patches holding them, read alone."""
        if getattr(self.base, "spatial_chunks", None) is None:  # no region reads
            return {m: self.tiles(v)[a:b] for m, v in self.base.read(t, t + 1).items()}
        idx = np.unravel_index(np.arange(a, b), self.counts)
        lo = [int(i.min()) for i in idx]
        box = tuple(int(i.max()) + 1 - low for i, low in zip(idx, lo, strict=True))
        region = [
            slice(low * p, min((low + q) * p, g))
            for low, q, p, g in zip(lo, box, self.patch, self.grid, strict=True)
        ]
        shape = tuple(r.stop - r.start for r in region)
        local = np.ravel_multi_index(tuple(i - low for i, low in zip(idx, lo, strict=True)), box)
        data = self.base.read(t, t + 1, region=region)
        return {m: self._tile(v, shape, box)[local] for m, v in data.items()}

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

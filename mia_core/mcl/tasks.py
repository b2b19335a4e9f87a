"""Signals as sequences of tasks, and the router that maps a coordinate to its task.

A signal on a grid is cut into ``T`` tasks along one coordinate axis: spatial patches
(strips of an image or field along ``x``), temporal frames (the ``t`` axis of a stacked
window of time steps) or audio segments (the only axis of a 1-D signal). The same
:class:`AxisPartition` assigns every point to a task while the sequence is built and
routes query coordinates to their module at inference, ``G_i(x) = 1[bin(x_axis) = i]``.

A :class:`TaskStream` hands the tasks of a sequence out once, in order: a learner
iterating it cannot go back to an earlier task (the continual-learning constraint).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AxisPartition:
    """Equal bins of ``[-1, 1]`` along one coordinate axis, one task per bin.

    Attributes:
        axis: coordinate axis the signal is cut along.
        num_tasks: ``T``.
        drop_axis: feed modules the coordinates without ``axis`` (temporal frames: each
            frame's module is a spatial field; the time coordinate only routes).
    """

    axis: int
    num_tasks: int
    drop_axis: bool = False

    def __post_init__(self) -> None:
        if self.num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {self.num_tasks}")
        if self.axis < 0:
            raise ValueError(f"axis must be >= 0, got {self.axis}")

    def route(self, coords: Tensor) -> Tensor:
        """Task (module) index of every coordinate.

        Args:
            coords: ``(..., d)`` in ``[-1, 1]``.

        Returns:
            ``(...)`` long in ``[0, T)``; the upper edge ``+1`` belongs to the last bin.
        """
        if coords.shape[-1] <= self.axis:
            raise ValueError(
                f"partition axis {self.axis} but coordinates have {coords.shape[-1]} dims"
            )
        u = (coords[..., self.axis] + 1.0) * 0.5 * self.num_tasks
        return u.floor().long().clamp(0, self.num_tasks - 1)

    def module_input(self, coords: Tensor) -> Tensor:
        """Coordinates as a module sees them (``axis`` removed when ``drop_axis``)."""
        if not self.drop_axis:
            return coords
        keep = [i for i in range(coords.shape[-1]) if i != self.axis]
        return coords[..., keep]

    def module_dim(self, d: int) -> int:
        """Input dimension of a module for ``d``-dimensional signal coordinates."""
        return d - 1 if self.drop_axis else d


@dataclass
class Task:
    """One task of a sequence for a batch of signals (shared coordinates).

    Attributes:
        index: position ``i`` in the sequence.
        coords: ``(1, P_i, d_m)`` module-input coordinates of the task's points.
        values: ``(B, P_i, C)`` targets (0 where missing).
        mask: ``(B, P_i)`` float, 1 where the value is observed.
        points: ``(P_i,)`` indices of the task's points in the full signal.
        signal_coords: ``(1, P_i, d)`` the same points' full signal coordinates (what a
            single network trained on the whole sequence sees).
    """

    index: int
    coords: Tensor
    values: Tensor
    mask: Tensor
    points: Tensor
    signal_coords: Tensor


@dataclass
class TaskSequence:
    """A batch of ``B`` signals on shared coordinates, cut into ``T`` tasks.

    Attributes:
        coords: ``(P, d)`` signal coordinates in ``[-1, 1]``.
        values: ``(B, P, C)``; NaN marks missing values.
        partition: the router.
    """

    coords: Tensor
    values: Tensor
    partition: AxisPartition

    def __post_init__(self) -> None:
        if self.coords.dim() != 2 or self.values.dim() != 3:
            raise ValueError(
                f"coords must be (P, d) and values (B, P, C); got {tuple(self.coords.shape)} "
                f"and {tuple(self.values.shape)}"
            )
        if self.coords.shape[0] != self.values.shape[1]:
            raise ValueError(
                f"{self.coords.shape[0]} coordinates but values have {self.values.shape[1]} points"
            )
        self.task_of = self.partition.route(self.coords)
        counts = torch.bincount(self.task_of, minlength=self.num_tasks)
        if (counts == 0).any():
            empty = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"tasks {empty} get no points: the grid is too coarse along the axis")

    @property
    def num_tasks(self) -> int:
        """``T``."""
        return self.partition.num_tasks

    @property
    def batch_size(self) -> int:
        """``B``."""
        return self.values.shape[0]

    def task(self, i: int) -> Task:
        """Task ``i`` (the points routed to module ``i``)."""
        points = torch.nonzero(self.task_of == i).flatten()
        vals = self.values[:, points]
        mask = (~torch.isnan(vals)).all(-1).to(vals.dtype)
        full = self.coords[points].unsqueeze(0)
        coords = self.partition.module_input(full)
        return Task(i, coords, torch.nan_to_num(vals), mask, points, full)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskSequence:
        """Copy to ``device`` (and ``dtype``)."""
        return TaskSequence(
            self.coords.to(device, dtype), self.values.to(device, dtype), self.partition
        )


class TaskStream:
    """Yields the tasks of a sequence once, in order; going back is an error.

    Args:
        sequence: the task sequence.

    Attributes:
        served: indices of the tasks handed out so far.
    """

    def __init__(self, sequence: TaskSequence) -> None:
        self.sequence = sequence
        self.served: list[int] = []

    def __iter__(self) -> Iterator[Task]:
        if self.served:
            raise RuntimeError("a task stream can be iterated only once (no revisiting tasks)")
        for i in range(self.sequence.num_tasks):
            self.served.append(i)
            yield self.sequence.task(i)


def grid_task_sequence(
    values: Tensor, coords: Tensor, kind: str, num_tasks: int, axis: int = 1
) -> TaskSequence:
    """Build a task sequence from grid signals.

    Args:
        values: ``(B, P, C)`` for ``spatial``/``segments``; ``(B, T, P, C)`` windows of
            ``T`` consecutive time steps for ``temporal``.
        coords: ``(P, d)`` grid coordinates of one signal / frame.
        kind: ``spatial`` (strips along grid ``axis``), ``segments`` (1-D signals cut
            along axis 0) or ``temporal`` (one task per frame; modules see ``coords``).
        num_tasks: ``T`` (for ``temporal`` it must equal the window length).
        axis: grid axis cut by ``spatial``.
    """
    if kind in ("spatial", "segments"):
        ax = 0 if kind == "segments" else axis
        return TaskSequence(coords, values, AxisPartition(ax, num_tasks))
    if kind == "temporal":
        if values.dim() != 4 or values.shape[1] != num_tasks:
            raise ValueError(
                f"temporal sequences need values (B, T={num_tasks}, P, C), got "
                f"{tuple(values.shape)}"
            )
        b, t, p, c = values.shape
        # frame centres of T equal bins of [-1, 1], so routing recovers the frame index
        tc = (torch.arange(t, dtype=coords.dtype) + 0.5) * (2.0 / t) - 1.0
        full = torch.cat(
            [tc.repeat_interleave(p).unsqueeze(1), coords.repeat(t, 1)], dim=1
        )  # (T*P, 1 + d), time-major like the values
        return TaskSequence(full, values.reshape(b, t * p, c), AxisPartition(0, t, True))
    raise ValueError(f"unknown task kind {kind!r}; expected spatial, segments or temporal")

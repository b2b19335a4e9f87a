"""Modular INR: one small INR per task, every module initialised from a shared init.

The shared initialisation ``theta_shared`` is an ordinary context-free
:class:`~mia_core.inr.base.INR` (its weights are the meta-parameters). A module is a
set of per-signal weight tensors ``{name: (B, *shape)}`` evaluated functionally through
that INR, so a batch of signals adapts its modules in one autograd call. Modules are
appended as tasks arrive (no fixed count), and a coordinate is answered by the module
its partition routes it to: ``s(x) = sum_i G_i(x) f_{theta_i}(x)`` with one-hot ``G``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mia_core.inr.base import INR
from mia_core.mcl.tasks import AxisPartition

Module = dict[str, Tensor]


class ModularINR:
    """The modules of a batch of signals, grown one task at a time.

    Args:
        inr: the shared initialisation (context-free INR whose inputs are the
            partition's module coordinates).
        partition: the router ``G``.
        batch: ``B`` signals.
    """

    def __init__(self, inr: INR, partition: AxisPartition, batch: int) -> None:
        if inr.context_init is not None:
            raise ValueError("modules are context-free INRs (model.context_tokens is ignored)")
        self.inr, self.partition, self.batch = inr, partition, int(batch)
        self.modules: list[Module] = []

    def new_module(self, detach: bool = False) -> Module:
        """A module initialised from the shared init (``(B, *shape)`` expanded views).

        Args:
            detach: start from a copy cut from the graph (evaluation); otherwise the
                module stays differentiable w.r.t. the shared init (meta-training).
        """
        mod = {}
        for name, w in self.inr.weights().items():
            w = w.unsqueeze(0).expand(self.batch, *w.shape)
            mod[name] = w.detach().clone().requires_grad_(True) if detach else w
        return mod

    def add_module(self, module: Module) -> int:
        """Append a (trained) module; returns its index ``i``."""
        if len(self.modules) >= self.partition.num_tasks:
            raise ValueError(
                f"the partition routes to {self.partition.num_tasks} modules; cannot add more"
            )
        self.modules.append(module)
        return len(self.modules) - 1

    def module_forward(self, module: Mapping[str, Tensor], coords: Tensor, features=False):
        """One module on module coordinates ``(1 or B, P, d_m)`` -> ``(B, P, C)``."""
        return self.inr(coords, None, module, features)

    def __call__(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """Evaluate the composed field at signal coordinates.

        Args:
            coords: ``(P, d)`` signal coordinates (shared by the batch).

        Returns:
            ``(B, P, C)`` values and a ``(P,)`` bool mask of points whose module exists
            (points routed to a module not yet added are 0).
        """
        ids = self.partition.route(coords)
        out = coords.new_zeros(self.batch, coords.shape[0], self.inr.d_out)
        covered = torch.zeros(coords.shape[0], dtype=torch.bool, device=coords.device)
        for i, mod in enumerate(self.modules):
            sel = torch.nonzero(ids == i).flatten()
            if sel.numel() == 0:
                continue
            x = self.partition.module_input(coords[sel]).unsqueeze(0)
            out = out.index_copy(1, sel, self.module_forward(mod, x))
            covered[sel] = True
        return out, covered

    def num_parameters(self) -> int:
        """Parameters of all modules of one signal."""
        per = sum(w.numel() for w in self.inr.weights().values())
        return per * len(self.modules)

"""Meta-learned SIREN with per-step, per-parameter learning rates (MWT, Sec. 3.1).

The initialisation ``theta`` and the learning rates ``alpha`` (``k x |theta|``, one rate
per parameter and inner step, Meta-SGD style) are module parameters.

Two layouts (``method.mwt.layout``):

* ``project``: ``sin(omega_0 (W h + b))`` in every sine layer with the SIREN paper's bounds
  (``sqrt(6/fan)/omega_0`` for hidden layers) and an adapted linear output layer.
* ``official`` (the MWT authors' code): ``omega_0`` only in the first layer, hidden layers
  ``sin(W h + b)`` drawn from ``U(+-sqrt(6/fan))``, zero biases; the output is a *shared*
  linear layer times a learned per-channel scale (init 0.1), meta-learned but not adapted.
  At initialisation both compute the same kind of function, but in the project layout a
  hidden weight's inner step moves the pre-activation ``omega_0^2`` times further for the
  same rate, so rates tuned for one layout do not transfer (the paper's ``U(0.1, 1)`` and
  ``lambda = 500`` are for the official one). ``adapt`` fits a
batch of images in ``k`` plain SGD steps on the pixel MSE, all images at once: the
weights become per-image tensors with a leading batch dimension and every step takes
**one** ``autograd.grad`` for the whole batch (``mia_core.inr.functional.linear``
dispatches to ``bmm``). With ``create_graph`` the steps stay differentiable, so the
outer losses reach ``theta`` and ``alpha`` through the inner loop (second order).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mia_core.inr.functional import linear, siren_bounds
from mia_core.runtime import autocast_off, host_to_device

LAYOUTS = ("project", "official")


class MetaSiren(nn.Module):
    """``depth`` sine layers of ``width`` units and a linear head, adapted in ``steps`` steps.

    Parameters are ordered ``[w0, b0, w1, b1, ..., w_out, b_out]`` (the official layout has
    no ``w_out, b_out``: its head is not adapted); layer ``i`` weights are ``(out, in)``.
    Layers ``1 .. depth-1`` are the *hidden* layers (``width`` inputs) whose neurons the
    classifier reads.

    Args:
        d_in: coordinate dimension.
        d_out: channels.
        width: hidden units.
        depth: sine layers (>= 2 so that there is at least one hidden layer).
        omega0: sine frequency factor (first and hidden layers, SIREN initialisation).
        steps: inner SGD steps ``k``.
        lr_init: ``(low, high)``: initial rates drawn from ``U(low, high)``.
        layout: ``project`` or ``official`` (module docstring).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        width: int,
        depth: int,
        omega0: float,
        steps: int,
        lr_init: tuple[float, float] = (0.1, 1.0),
        layout: str = "project",
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"MWT needs a SIREN with depth >= 2 (a hidden layer), got {depth}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.width, self.depth, self.omega0, self.steps = width, depth, omega0, steps
        self.layout = layout
        official = layout == "official"
        shapes = [(width, d_in)] + [(width, width)] * (depth - 1)
        if not official:
            shapes.append((d_out, width))
        params = []
        for i, (out, fan) in enumerate(shapes):
            bound = siren_bounds(fan, 1.0 if official else omega0, first=i == 0)
            params.append(nn.Parameter(torch.empty(out, fan).uniform_(-bound, bound)))
            b = torch.zeros(out) if official else torch.empty(out).uniform_(-1.0 / fan, 1.0 / fan)
            params.append(nn.Parameter(b))
        self.theta = nn.ParameterList(params)
        # The official layout's shared (not adapted) head: linear times a per-channel scale.
        self.head = nn.Linear(width, d_out) if official else None
        self.head_scale = nn.Parameter(torch.full((d_out,), 0.1)) if official else None
        lo, hi = lr_init
        self.alpha = nn.ParameterList(
            nn.Parameter(torch.empty(steps, *p.shape).uniform_(lo, hi)) for p in params
        )

    def forward(self, params: list[Tensor], coords: Tensor) -> Tensor:
        """Evaluate per-image (or shared) weights.

        Args:
            params: ``theta``-ordered tensors, each ``(B, *shape)`` or unbatched.
            coords: ``(B or 1, P, d_in)``.

        Returns:
            ``(B, P, d_out)``.
        """
        h = coords
        n_sine = self.depth
        for i in range(n_sine):
            pre = linear(h, params[2 * i], params[2 * i + 1])
            h = torch.sin(pre if self.layout == "official" and i > 0 else self.omega0 * pre)
        if self.head is not None:
            return self.head(h) * self.head_scale
        return linear(h, params[-2], params[-1])

    def shared_parameters(self) -> list[nn.Parameter]:
        """``theta`` plus the official layout's shared head (the outer loop's SIREN group)."""
        extra = [] if self.head is None else [*self.head.parameters(), self.head_scale]
        return [*self.theta, *extra]

    def hidden(self, params: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """``(weight (B, width, width), bias (B, width))`` of every hidden layer."""
        return [(params[2 * i], params[2 * i + 1]) for i in range(1, self.depth)]

    def adapt(
        self,
        coords: Tensor,
        values: Tensor,
        sample_fraction: float = 1.0,
        generator: torch.Generator | None = None,
        create_graph: bool = True,
        first_order: bool = False,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Fit every image of a batch in ``steps`` SGD steps from ``theta``.

        Args:
            coords: ``(P, d_in)`` pixel coordinates shared by the batch.
            values: ``(B, P, C)`` pixel values.
            sample_fraction: ``s``: each step uses a fresh random ``ceil(s P)`` pixels
                per image (1 = all pixels).
            generator: RNG of the pixel subsets (CPU generator; its random keys are
                copied to ``values``' device and sorted there).
            create_graph: keep the steps differentiable (meta-training); ``False`` for
                evaluation, where only ``phi`` is needed.
            first_order: with ``create_graph``, treat the inner gradients as constants
                (first-order MAML): ``theta`` still gets the outer gradient through the
                identity path and ``alpha`` through ``alpha * g``, without second-order
                terms.

        Returns:
            The adapted weights ``phi`` (each ``(B, *shape)``) and the inner losses
            ``(B,)`` before each step.
        """
        b, p = values.shape[:2]
        params = [t.unsqueeze(0).expand(b, *t.shape) for t in self.theta]
        if not create_graph:
            params = [t.detach().requires_grad_(True) for t in params]
        n_sub = max(1, min(p, int(round(sample_fraction * p))))
        losses = []
        with autocast_off(values.device):  # the inner loop stays float32 under autocast
            for k in range(self.steps):
                if n_sub < p:
                    # Keys from the (CPU) generator, sorted where the values are: no host
                    # sort and no blocking copy per step.
                    keys = host_to_device(torch.rand(b, p, generator=generator), values.device)
                    idx = keys.argsort(1)[:, :n_sub]
                    x = coords[idx]
                    y = torch.gather(values, 1, idx.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
                else:
                    x, y = coords.unsqueeze(0), values
                err = ((self(params, x) - y) ** 2).mean(dim=(1, 2))
                # Summed over images: each image's gradient is that of its own mean MSE.
                second = create_graph and not first_order
                grads = torch.autograd.grad(err.sum(), params, create_graph=second)
                params = [t - a[k] * g for t, a, g in zip(params, self.alpha, grads, strict=True)]
                if not create_graph:
                    params = [t.detach().requires_grad_(k + 1 < self.steps) for t in params]
                losses.append(err.detach())
        return params, losses

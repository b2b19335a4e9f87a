"""MWT: meta-learned SIREN + weight-space Transformer, trained end to end (Algorithm 1).

One backward of ``L_rec + L_cls`` gives exactly the paper's gradients:

* SIREN ``theta`` and rates ``alpha``: ``grad L_rec + w_cls * grad L_cls`` through the
  inner loop. The classifier reads its inputs through :func:`scale_grad`, which is the
  identity forward and multiplies the gradient by ``w_cls`` backward; with
  ``w_cls = 0`` (the WT baseline) the inputs are detached, so no classification
  gradient (and no second-order work for it) reaches the SIREN.
* classifier ``psi`` (including ``beta``): ``grad L_cls`` only; ``L_rec`` does not
  depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mia_core.mwt.classifier import WeightTransformer
from mia_core.mwt.siren import MetaSiren


def scale_grad(x: Tensor, w: float) -> Tensor:
    """``x`` forward; gradient times ``w`` backward (``w = 0`` detaches)."""
    if w == 0.0:
        return x.detach()
    if w == 1.0:
        return x
    return w * x + (1.0 - w) * x.detach()


def grid_coords(shape: tuple[int, ...]) -> Tensor:
    """``(prod(shape), d)`` row-major pixel coordinates in ``[-1, 1]``."""
    axes = [torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], -1)


@dataclass
class MWTOutput:
    """Result of one forward pass over a batch of ``B`` images.

    Attributes:
        loss: ``L_rec + L_cls`` (backward once; see the module docstring).
        rec_loss: mean pixel MSE of the adapted SIRENs.
        cls_loss: mean cross-entropy.
        logits: ``(B, num_classes)``.
        mse: ``(B,)`` per-image MSE after adaptation (detached).
        inner_losses: ``(B,)`` per-image MSE before each inner step.
        value_range: the span of the fitted values (1, or 2 for ``[-1, 1]``).
    """

    loss: Tensor
    rec_loss: Tensor
    cls_loss: Tensor
    logits: Tensor
    mse: Tensor
    inner_losses: list[Tensor]

    value_range: float = 1.0

    def psnr(self) -> Tensor:
        """``(B,)`` PSNR in dB for data spanning ``value_range``."""
        value_range = self.value_range
        return 10.0 * torch.log10(value_range**2 / self.mse.clamp_min(1e-12))


class MWT(nn.Module):
    """SIREN fitted per image in ``k`` steps, classified from its adapted weights.

    Args:
        siren: the meta-learned SIREN (``theta``, ``alpha``).
        classifier: the weight-space Transformer.
        image_shape: ``(H, W)`` of the images.
        w_cls: weight of the classification gradient on ``theta`` and ``alpha``
            (0 = WT baseline).
        sample_fraction: pixel fraction ``s`` per inner step during training.
        first_order: drop the second-order terms of the meta-gradient.
        signed: fit the images mapped from ``[0, 1]`` to ``[-1, 1]`` (the official code);
            ``mse`` is then on that scale and PSNR uses a data range of 2.
        eval_subsample: evaluation fits on ``sample_fraction`` of the pixels too (the
            official code); otherwise on all pixels. PSNR is always over all pixels.
    """

    def __init__(
        self,
        siren: MetaSiren,
        classifier: WeightTransformer,
        image_shape: tuple[int, int],
        w_cls: float = 1.0,
        sample_fraction: float = 1.0,
        first_order: bool = False,
        signed: bool = False,
        eval_subsample: bool = False,
    ) -> None:
        super().__init__()
        self.siren, self.classifier = siren, classifier
        self.w_cls, self.sample_fraction = float(w_cls), float(sample_fraction)
        self.first_order, self.signed, self.eval_subsample = first_order, signed, eval_subsample
        self.value_range = 2.0 if signed else 1.0
        self.image_shape = tuple(image_shape)
        self.register_buffer("coords", grid_coords(self.image_shape), persistent=False)

    def meta_parameters(self) -> list[nn.Parameter]:
        """SIREN initialisation ``theta`` (and the official layout's shared head)."""
        return self.siren.shared_parameters()

    def lr_parameters(self) -> list[nn.Parameter]:
        """Inner learning rates ``alpha``."""
        return list(self.siren.alpha)

    def forward(
        self,
        images: Tensor,
        labels: Tensor,
        generator: torch.Generator | None = None,
        create_graph: bool | None = None,
    ) -> MWTOutput:
        """Adapt, reconstruct and classify.

        Args:
            images: ``(B, H, W, C)`` or ``(B, H*W, C)`` pixel values in ``[0, 1]``.
            labels: ``(B,)`` integer classes.
            generator: RNG of the pixel subsets.
            create_graph: differentiate through the inner loop; defaults to
                ``self.training``. Evaluation (``False``) fits on all pixels unless
                ``eval_subsample``.
        """
        create_graph = self.training if create_graph is None else create_graph
        values = images.reshape(images.shape[0], -1, images.shape[-1])
        if self.signed:
            values = values * 2.0 - 1.0
        frac = self.sample_fraction if create_graph or self.eval_subsample else 1.0
        with torch.enable_grad():
            phi, inner = self.siren.adapt(
                self.coords, values, frac, generator, create_graph, self.first_order
            )
        mse = ((self.siren(phi, self.coords.unsqueeze(0)) - values) ** 2).mean(dim=(1, 2))
        theta = self.siren.hidden(list(self.siren.theta))
        hidden = self.siren.hidden(phi)
        logits = self.classifier(
            [(scale_grad(w, self.w_cls), scale_grad(b, self.w_cls)) for w, b in hidden],
            [(scale_grad(w, self.w_cls), scale_grad(b, self.w_cls)) for w, b in theta],
        )
        rec = mse.mean()
        cls = F.cross_entropy(logits, labels)
        return MWTOutput(rec + cls, rec, cls, logits, mse.detach(), inner, self.value_range)


def count_lrs(siren: MetaSiren) -> tuple[int, int]:
    """``(learning rates, k * |theta|)``: equal by construction; for reports and tests."""
    n_theta = sum(p.numel() for p in siren.theta)
    return sum(a.numel() for a in siren.alpha), siren.steps * n_theta


__all__ = ["MWT", "MWTOutput", "count_lrs", "grid_coords", "scale_grad"]

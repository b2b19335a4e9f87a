"""Spatial augmentations in image space (MWT, Sec. 4): crop, flip, shift, rotate, scale.

Possible because an image's INR is fitted in ``k`` steps inside every training step:
the augmented image is simply fitted instead of the original. ``crop_pad`` is the
official code's random crop: reflect-pad by ``crop_pad`` pixels, cut a random window of
the original size (integer shifts, no interpolation). The rest is one random affine map
per image, applied with ``grid_sample`` (bilinear, zeros outside the image).

The random parameters (a few numbers per image) are drawn on the CPU from the CPU
generator; the images are transformed where they are (on the training device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mia_core.runtime import host_to_device


@dataclass(frozen=True)
class Augment:
    """Random affine augmentation settings.

    Attributes:
        flip: horizontal flip with probability 1/2.
        shift: maximal translation as a fraction of the image size (each axis, uniform).
        rotate: maximal rotation in degrees (uniform in ``[-rotate, rotate]``).
        scale: ``(low, high)`` zoom factor range (uniform; > 1 zooms in).
        crop_pad: random crop after reflect padding by this many pixels (0 = off).
    """

    flip: bool = False
    shift: float = 0.0
    rotate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    crop_pad: int = 0

    @property
    def affine(self) -> bool:
        """Whether the affine part (flip, shift, rotate, scale) is switched on."""
        return self.flip or self.shift > 0 or self.rotate > 0 or tuple(self.scale) != (1.0, 1.0)

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return self.affine or self.crop_pad > 0

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``(B, H, W, C)`` images on their device; identity when nothing is on.

        ``generator`` is a CPU generator: it draws the parameters, which are then copied
        to the images' device (same results on every device for the same seed).
        """
        if self.crop_pad > 0:
            images = self.crop(images, generator)
        if not self.affine:
            return images
        b = images.shape[0]

        def uniform(lo: float, hi: float) -> Tensor:
            return torch.rand(b, generator=generator, dtype=torch.float64) * (hi - lo) + lo

        angle = uniform(-self.rotate, self.rotate) * math.pi / 180.0
        zoom = uniform(*self.scale)
        sx = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if self.flip else 1.0
        tx, ty = uniform(-self.shift, self.shift) * 2, uniform(-self.shift, self.shift) * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # Output pixel -> input location (affine_grid's convention), x horizontal.
        theta = torch.stack(
            [torch.stack([cos * sx, -sin, tx], -1), torch.stack([sin * sx, cos, ty], -1)], 1
        )
        theta = host_to_device(theta.to(images.dtype), images.device)
        x = images.permute(0, 3, 1, 2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.permute(0, 2, 3, 1)

    def crop(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Random ``H x W`` windows of the reflect-padded ``(B, H, W, C)`` images."""
        b, h, w, _ = images.shape
        p = self.crop_pad
        padded = F.pad(images.permute(0, 3, 1, 2), (p, p, p, p), mode="reflect")
        # Offsets as host ints (a CPU draw, no device sync): the windows are views, and
        # the stack is one copy on the images' device.
        dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=generator).tolist()
        offsets = enumerate(zip(dy, dx, strict=True))
        windows = [padded[i, :, y : y + h, x : x + w] for i, (y, x) in offsets]
        return torch.stack(windows).permute(0, 2, 3, 1)

"""Device work: timers wait for CUDA, MWT augments and sorts where the images are.

No GPU here: ``torch.cuda.synchronize`` is counted through monkeypatch, and the MWT
changes are checked bit for bit against copies of the former host-side functions.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mia_core.mwt.augment import Augment
from mia_core.mwt.siren import MetaSiren
from mia_core.runtime import host_to_device, synchronize
from pipelines.codecs import fitting
from pipelines.tasks.mwt import MWTTask


def test_synchronize_waits_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    synchronize(torch.device("cuda", 1))
    synchronize("cuda")
    synchronize("cpu")
    synchronize(torch.device("meta"))
    assert calls == [torch.device("cuda", 1), torch.device("cuda")]


def test_fit_steps_are_timed_after_a_sync_on_the_fields_device(monkeypatch, make_learner):
    seen = []
    monkeypatch.setattr(fitting, "synchronize", seen.append)
    learner = make_learner("cavia", modalities=("sine",), dtype=torch.float32)
    coords = {"sine": torch.linspace(-1, 1, 16)[:, None]}
    values = {"sine": torch.randn(2, 16, 1)}
    valid = {"sine": torch.ones(2, 16)}
    out = fitting.fit_batch(learner, coords, values, valid, 3, 1e-2, "adam")
    assert out.steps == 3 and seen == [torch.device("cpu")] * 3


def test_host_to_device_is_a_plain_move_off_cuda():
    t = torch.arange(4)
    assert host_to_device(t, "cpu") is t
    assert host_to_device(t, "meta").device.type == "meta"


# --- the former host-side MWT functions (main 31b4a9c), kept to compare bit for bit ---


def old_crop(aug: Augment, images, generator):
    b, h, w, _ = images.shape
    p = aug.crop_pad
    padded = F.pad(images.permute(0, 3, 1, 2), (p, p, p, p), mode="reflect")
    dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=generator).tolist()
    offsets = enumerate(zip(dy, dx, strict=True))
    windows = [padded[i, :, y : y + h, x : x + w] for i, (y, x) in offsets]
    return torch.stack(windows).permute(0, 2, 3, 1)


def old_augment(aug: Augment, images, generator):
    if aug.crop_pad > 0:
        images = old_crop(aug, images, generator)
    if not aug.affine:
        return images
    b = images.shape[0]

    def uniform(lo, hi):
        return torch.rand(b, generator=generator, dtype=torch.float64) * (hi - lo) + lo

    angle = uniform(-aug.rotate, aug.rotate) * math.pi / 180.0
    zoom = uniform(*aug.scale)
    sx = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if aug.flip else 1.0
    tx, ty = uniform(-aug.shift, aug.shift) * 2, uniform(-aug.shift, aug.shift) * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * sx, -sin, tx], -1), torch.stack([sin * sx, cos, ty], -1)], 1
    ).to(images)
    x = images.permute(0, 3, 1, 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.permute(0, 2, 3, 1)


@pytest.mark.parametrize(
    "aug",
    [
        Augment(crop_pad=3),
        Augment(flip=True, shift=0.1, rotate=15.0, scale=(0.9, 1.1)),
        Augment(flip=True, rotate=10.0, crop_pad=2),
    ],
)
def test_augment_on_device_equals_the_former_cpu_augment(aug):
    images = torch.rand(5, 9, 7, 3, generator=torch.Generator().manual_seed(1))
    got = aug(images, torch.Generator().manual_seed(7))
    want = old_augment(aug, images, torch.Generator().manual_seed(7))
    assert got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(got, want)


def test_augment_runs_on_the_images_device():
    """A ``meta`` batch stands in for CUDA: the CPU generator only draws the parameters."""
    images = torch.empty(4, 8, 8, 1, device="meta")
    for aug in (Augment(crop_pad=2), Augment(flip=True, rotate=5.0, crop_pad=1)):
        out = aug(images, torch.Generator().manual_seed(0))
        assert out.device.type == "meta" and out.shape == images.shape


def test_the_mwt_step_augments_on_the_training_device():
    """The images reach the device before the augmentation (``meta`` stands in for CUDA)."""
    seen = []

    def augment(images, gen):
        seen.append(images.device.type)
        return images

    def model(images, labels, gen):
        logits = torch.zeros(len(labels), 2, device=images.device)
        zero = logits.sum()
        return SimpleNamespace(logits=logits, loss=zero, rec_loss=zero, cls_loss=zero)

    task = SimpleNamespace(
        cfg=SimpleNamespace(run=SimpleNamespace(seed=0)),
        ctx=SimpleNamespace(rank=0, device=torch.device("meta")),
        data=SimpleNamespace(
            images=torch.rand(6, 4, 4, 1), labels=torch.zeros(6, dtype=torch.long)
        ),
        augment=augment,
        model=model,
    )
    MWTTask.loss(task, np.arange(3), 1)
    assert seen == ["meta"]


def test_inner_subsets_are_sorted_where_the_values_are(monkeypatch):
    """Same subsets as the former CPU argsort; the sort runs on ``values``' device."""
    torch.manual_seed(0)
    siren = MetaSiren(2, 1, 8, 2, 3.0, steps=2)
    coords, values = torch.rand(30, 2), torch.rand(3, 30, 1)
    phi, _ = siren.adapt(coords, values, 0.4, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    params = [t.unsqueeze(0).expand(3, *t.shape) for t in siren.theta]
    for k in range(2):  # the former loop: argsort on the CPU, then the indices moved
        idx = torch.rand(3, 30, generator=gen).argsort(1)[:, :12]
        y = torch.gather(values, 1, idx.unsqueeze(-1))
        err = ((siren(params, coords[idx]) - y) ** 2).mean(dim=(1, 2))
        grads = torch.autograd.grad(err.sum(), params, create_graph=True)
        params = [t - a[k] * g for t, a, g in zip(params, siren.alpha, grads, strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(phi, params, strict=True))

    sorted_on = []
    argsort = torch.Tensor.argsort
    monkeypatch.setattr(
        torch.Tensor,
        "argsort",
        lambda t, *a, **k: sorted_on.append(t.device) or argsort(t, *a, **k),
    )
    on_meta = siren.to("meta")
    on_meta.adapt(coords.to("meta"), values.to("meta"), 0.4, torch.Generator().manual_seed(5))
    assert [d.type for d in sorted_on] == ["meta", "meta"]


def test_cuda_without_a_gpu_is_a_one_line_config_error():
    from mia_core.config import ConfigError
    from mia_core.runtime import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(ConfigError, match="run.device=auto"):
        resolve_device("cuda")

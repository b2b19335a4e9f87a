"""Build an :class:`~mia_core.mwt.model.MWT` from the typed config sections."""

from __future__ import annotations

from mia_core.config.schema import MethodConfig, ModelConfig, MWTConfig
from mia_core.mwt.augment import Augment
from mia_core.mwt.classifier import WeightTransformer
from mia_core.mwt.model import MWT
from mia_core.mwt.siren import MetaSiren


def build_mwt(
    model: ModelConfig,
    method: MethodConfig,
    image_shape: tuple[int, int],
    channels: int,
    num_classes: int,
) -> MWT:
    """The MWT (or WT, ``method.mwt.w_cls = 0``) for ``(H, W, channels)`` images.

    Raises:
        ValueError: ``model.family`` is not ``siren`` or the SIREN has no hidden layer.
    """
    if model.family != "siren":
        raise ValueError(f"method.name=mwt needs model.family=siren, got {model.family!r}")
    m = method.mwt
    siren = MetaSiren(
        len(image_shape),
        channels,
        model.width,
        model.depth,
        model.omega0,
        method.inner_steps,
        (float(m.lr_init[0]), float(m.lr_init[1])),
        m.layout,
    )
    classifier = WeightTransformer(
        model.width,
        model.depth - 1,
        num_classes,
        m.cls_dim,
        m.cls_depth,
        m.cls_heads,
        m.cls_mlp_dim,
        m.input_scale,
        m.input_norm,
        m.layerscale_init,
        beta_std=_beta_std(m),
    )
    return MWT(
        siren,
        classifier,
        image_shape,
        m.w_cls,
        m.sample_fraction,
        method.first_order,
        signed=m.signed,
        eval_subsample=m.eval_subsample,
    )


def _beta_std(m: MWTConfig) -> float:
    """Initial spread of the positional term: zero in the official code."""
    if m.layout == "official":
        return 0.0
    return 1.0 / m.input_scale if m.input_norm == "scale" else 2e-3


def build_augment(method: MethodConfig) -> Augment:
    """The training augmentation of ``method.mwt``."""
    m = method.mwt
    return Augment(m.flip, m.shift, m.rotate, (float(m.scale[0]), float(m.scale[1])), m.crop_pad)

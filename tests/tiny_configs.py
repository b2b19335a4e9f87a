"""Tiny config overrides shared by the tests that train (seconds per run on 2 cores)."""

# Composers + SFT small enough for a few steps on CPU; used with the synthetic store.
TINY_META_MODEL = [
    "model.width=16",
    "model.context_dim=16",
    "model.context_tokens=4",
    "method.inner_steps=2",
    "method.sft.dim=16",
    "method.sft.mlp_dim=16",
    "method.sft.heads=2",
]

# An MWT with an 8-wide SIREN and a one-block classifier (method.name=mwt not included).
TINY_MWT_MODEL = [
    "model.family=siren",
    "model.width=8",
    "model.depth=3",
    "model.omega0=10.0",
    "method.inner_steps=2",
    "method.mwt.lr_init=[0.01,0.1]",
    "method.mwt.cls_dim=8",
    "method.mwt.cls_depth=1",
    "method.mwt.cls_heads=2",
    "method.mwt.cls_mlp_dim=8",
]

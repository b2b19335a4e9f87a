"""Calibrating the per-channel quantiser of entropy-coded codes (``encode.code_bits``).

Before a new entropy-coded code store is created, the driver fits the codes of a few
time steps exactly as the encoder will (same meta-model, settings and fit function,
float32, every step from the meta-learned start) and calibrates a
:class:`~pipelines.codecs.entropy.Quantiser` on them: each channel's centre, step and
symbol spread. The steps are ``encode.calibration_codes`` code vectors' worth (time
steps, or whole time steps of patches), evenly spaced over the steps being encoded and
taken among those with data. The quantiser is stored with the codes, so it is fitted
once per store: a resumed job reuses it (:func:`existing_quantiser`) and every chunk is
quantised alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import zarr

from mia_core.meta.codes import params_to_codes
from pipelines.codecs.codestore import FORMATS
from pipelines.codecs.entropy import Quantiser
from pipelines.codecs.fitting import fit_encoder
from pipelines.codecs.meta_model import MetaModel, batch_tensors
from pipelines.codecs.patch_encode import encode_patch_steps
from pipelines.data.stores import StoreLocation
from pipelines.data.stores.output import output_state
from pipelines.data.stores.patches import PatchStore
from pipelines.data.stores.reader import FieldStore, read_steps

# Whole time steps fitted together during calibration (patches use the encoder's batch).
CALIBRATION_BATCH = 32


def calibration_steps(
    valid: np.ndarray, lo: int, hi: int, per_step: int, n_codes: int
) -> list[int]:
    """Time steps in ``[lo, hi)`` whose codes calibrate the quantiser.

    Args:
        valid: the field store's per-step data flag.
        lo: first step being encoded.
        hi: end (exclusive) of the steps being encoded.
        per_step: code vectors per time step (patches per step; 1 for whole steps).
        n_codes: code vectors wanted.
    """
    pool = np.arange(lo, hi)
    ok = pool[np.asarray(valid, bool)[lo:hi]] if np.asarray(valid, bool)[lo:hi].any() else pool
    n = min(ok.size, max(1, math.ceil(n_codes / max(1, per_step))))
    return ok[np.unique(np.linspace(0, ok.size - 1, n).round().astype(int))].tolist()


def calibration_codes(
    model: MetaModel,
    store: FieldStore,
    patches: PatchStore | None,
    steps: list[int],
    settings: Mapping[str, Any],
    seed: int = 0,
) -> np.ndarray:
    """Float32 codes of ``steps`` as the encoder fits them: ``(n, D)`` or ``(n, K, D)``."""
    enc = {**settings, "code_dtype": "float32", "chain_length": 0}
    device = torch.device("cpu")
    learner = model.learner
    out = []
    if patches is not None:
        for i in steps:
            rows = store.read(i, i + 1)
            out.append(encode_patch_steps(model, patches, rows, enc, device, seed + i).codes)
        return np.concatenate(out)
    coords = {m: torch.from_numpy(store.info[m].coords) for m in learner.modalities}
    for a in range(0, len(steps), CALIBRATION_BATCH):
        part = steps[a : a + CALIBRATION_BATCH]
        values, valid = batch_tensors(read_steps(store, part))
        fit = fit_encoder(learner, coords, values, valid, enc, seed=seed + part[0])
        out.append(params_to_codes(learner, fit.params).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def existing_quantiser(location: StoreLocation) -> dict[str, Any] | None:
    """The quantiser of an entropy-coded code store already at ``location`` (to resume)."""
    if output_state(location) not in ("codes", "zarr"):
        return None
    try:
        group = zarr.open_group(location.zarr_store("r"), mode="r")
        attrs = dict(group.attrs.get("mia_codes", {}))
    except Exception:  # not readable as a code store: create_code_store decides
        return None
    return attrs.get("quantiser") if attrs.get("format") in FORMATS else None


def calibrate(
    model: MetaModel,
    store: FieldStore,
    patches: PatchStore | None,
    lo: int,
    hi: int,
    bits: int,
    n_codes: int,
    settings: Mapping[str, Any],
    log: Any = print,
) -> Quantiser:
    """Fit calibration codes (see the module docstring) and the quantiser on them."""
    per_step = patches.per_step if patches is not None else 1
    steps = calibration_steps(store.valid, lo, hi, per_step, n_codes)
    log(
        f"calibrating {bits}-bit codes on {len(steps)} time step(s) ({len(steps) * per_step} codes)"
    )
    codes = calibration_codes(model, store, patches, steps, settings, int(settings.get("seed", 0)))
    return Quantiser.fit(codes, bits)


__all__ = ["calibrate", "calibration_codes", "calibration_steps", "existing_quantiser"]

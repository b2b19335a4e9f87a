"""The encoding worker: one :class:`ChunkEncoder` per Ray actor (or the local process).

An encoder opens the field store, the code store and the meta-model once; each unit of
time steps (whole store chunks, never crossing a code-store chunk) is read, adapted in
vectorised batches of ``batch_size`` time steps (or, warm-started in time, in chains:
:func:`unit_batches`), measured at full resolution from the
codes as stored (after the ``code_dtype`` cast or quantisation), written, and only then
flagged ``done``: a crash between the two leaves the unit pending, so a rerun writes it
again with the same codes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mia_core.config import config_from_dict
from mia_core.meta.codes import code_layout, codes_to_params, params_to_codes
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.codecs.codestore import mark_done, open_code_store, write_unit
from pipelines.codecs.fitting import fit_encoder
from pipelines.codecs.meta_model import (
    EncodeError,
    MetaModel,
    batch_tensors,
    field_metrics,
    load_meta_model,
)
from pipelines.codecs.missing_mask import write_masks
from pipelines.codecs.patch_encode import encode_patch_steps, patch_store_for
from pipelines.codecs.quantise import dequantise, quantise, spec_quantiser
from pipelines.data.stores import StoreLocation, open_store
from pipelines.data.stores.reader import FieldStore


def open_field_store(location: StoreLocation, variables: list[str]) -> FieldStore:
    """Open a field store for encoding, with errors naming the store and variables."""
    store = open_store(location)
    if not isinstance(store, FieldStore):
        raise EncodeError(f"{location}: encoding needs a field store with a time axis")
    missing = [v for v in variables if v not in store.modalities]
    if missing:
        raise EncodeError(
            f"{location}: the meta-model encodes variables {variables}; the store lacks "
            f"{missing} (it has {store.modalities})"
        )
    store = FieldStore(location, store.ds, variables, store.group)
    mdims = {store.layout[v][1] for v in variables}
    if len(mdims) > 1:
        raise EncodeError(
            f"{location}: variables {variables} disagree on the member dimension ({mdims}); "
            "encode them separately"
        )
    return store


def encode_device(name: str) -> torch.device:
    """``encode.device`` resolved where the encoding runs (in an actor: on its node).

    ``auto`` is CUDA only where this process sees a GPU: a Ray actor sees the GPUs it
    reserved (``encode.gpus_per_actor``) and none otherwise.

    Raises:
        EncodeError: ``cuda`` where no CUDA device is visible.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise EncodeError(
            "encode.device=cuda but this encoder sees no CUDA device: use encode.device=auto "
            "or cpu, or run where a GPU is visible"
        )
    return resolve_device(name)


def store_dims(store: FieldStore) -> dict[str, tuple[int, int]]:
    """Variable -> ``(d_in, channels)``."""
    return {v: (len(store.info[v].grid_shape), store.info[v].channels) for v in store.modalities}


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` runs of consecutive ``True`` entries of a 1-D ``mask``."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask, np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, stops, strict=True))


def unit_batches(n: int, batch_size: int, chain_length: int) -> list[tuple[list[int], bool]]:
    """The batches a unit of ``n`` time steps is adapted in: ``(indices, warm)`` pairs.

    Without chains: consecutive blocks of ``batch_size`` (0: all ``n``), all cold. With
    ``chain_length`` ``L``: chains ``[0, L), [L, 2L), ...``; batch ``l`` holds position
    ``l`` of every chain long enough, in chain order, so its rows are a prefix of batch
    ``l - 1``'s, and every batch after the first is warm (starts from the one before).
    """
    if chain_length <= 0:
        step = batch_size or n
        return [(list(range(a, min(a + step, n))), False) for a in range(0, n, step)]
    starts = list(range(0, n, chain_length))
    out = []
    for pos in range(min(chain_length, n)):
        idx = [a + pos for a in starts if a + pos < min(a + chain_length, n)]
        out.append((idx, pos > 0))
    return out


class ChunkEncoder:
    """Encodes units of time steps; one instance per Ray actor (or the local process).

    Args:
        spec: picklable settings from :func:`run_encode` (locations, the meta-model's
            state and config, encoder options).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        threads = max(1, int(round(spec["threads"])))
        torch.set_num_threads(threads)
        self.device = encode_device(spec["device"])
        cfg = config_from_dict(spec["config"], "meta-model config")
        set_matmul_precision(cfg.run.matmul_precision)
        self.store = open_field_store(spec["store"], spec["variables"])
        self.model: MetaModel = load_meta_model(
            spec["reference"],
            store_dims(self.store),
            state=spec["state"],
            cfg=cfg,
            sha256=spec["sha256"],
            device=self.device,
        )
        self.group = open_code_store(spec["out"], "r+")
        self.patches = patch_store_for(self.store, self.model)  # None: whole time steps
        # whole time steps share the grid's coordinates (patches have their own frame)
        self.coords = {
            m: torch.from_numpy(self.store.info[m].coords).to(self.device)
            for m in (self.model.modalities if self.patches is None else [])
        }

    def encode_unit(self, start: int, stop: int) -> dict[str, float]:
        """Encode the pending steps of ``[start, stop)`` (inside one code chunk).

        Each contiguous run of steps whose ``done`` flag is unset is encoded and
        published in turn, by this actor only: two actors never read-modify-write the
        same chunk. Returns a progress record (``encoded`` steps, mean PSNR, seconds).
        """
        t0 = time.perf_counter()
        done = np.asarray(self.group["done"][start:stop]).astype(bool)
        psnrs: list[float] = []
        for a, b in runs_of(~done):
            psnrs.append(self._encode_run(start + a, start + b))
        n = int((~done).sum())
        return {
            "start": start,
            "stop": stop,
            "encoded": n,
            "seconds": time.perf_counter() - t0,
            "psnr": float(np.mean(psnrs)) if psnrs else float("nan"),
        }

    def _encode_run(self, start: int, stop: int) -> float:
        """Encode steps ``[start, stop)`` and publish them; returns their mean PSNR."""
        s = self.spec
        rows = self.store.read(start, stop)
        write_masks(self.group, start, rows)  # where the source had no value
        if self.patches is not None:
            res = encode_patch_steps(
                self.model, self.patches, rows, s, self.device, s["seed"] + start
            )
            write_unit(self.group, start, res.codes, res.mse, res.psnr, res.seconds, res.scales)
            self._publish(start, stop)
            return float(np.nanmean(res.psnr))
        learner = self.model.learner
        bsz = s["batch_size"] or (stop - start)
        sizes = code_layout(learner).sizes
        quant = spec_quantiser(s)
        codes, scales, mses, psnrs, secs = [], [], [], [], []
        order: list[int] = []
        prev: dict[str, torch.Tensor] | None = None
        for idx, warm in unit_batches(stop - start, bsz, s.get("chain_length", 0)):
            part = {m: rows[m][idx] for m in learner.modalities}
            values, valid = batch_tensors(part, self.device)
            init = None
            if warm and prev is not None:
                init = {k: v[: len(idx)] for k, v in prev.items()}
            fit = fit_encoder(
                learner, self.coords, values, valid, s, seed=s["seed"] + start + idx[0],
                init=init,
            )  # fmt: skip
            prev = fit.params
            code, scale = quantise(
                params_to_codes(learner, fit.params), s["code_dtype"], sizes, quant
            )
            stored = codes_to_params(learner, dequantise(code, scale, sizes))
            mse, p_db = field_metrics(
                learner, self.coords, values, valid, stored, self.model.cfg.data.psnr_range
            )
            n = code.shape[0]
            order += idx
            codes.append(code.cpu().numpy())
            if scale is not None:
                scales.append(scale.cpu().numpy())
            mses.append(mse.cpu().numpy())
            psnrs.append(p_db.cpu().numpy())
            secs.append(np.full(n, fit.seconds / n))
        back = np.argsort(np.asarray(order))  # batches -> time order
        write_unit(
            self.group,
            start,
            np.concatenate(codes)[back],
            np.concatenate(mses)[back],
            np.concatenate(psnrs)[back],
            np.concatenate(secs)[back],
            np.concatenate(scales)[back] if scales else None,
        )
        self._publish(start, stop)
        return float(np.nanmean(np.concatenate(psnrs)))

    def _publish(self, start: int, stop: int) -> None:
        """Set the ``done`` flags of steps whose codes are written (after the fault hook)."""
        s = self.spec
        if s["fault_at"] is not None and start <= s["fault_at"] < stop:
            if s.get("fault_kind") == "kill":  # dies once; the retried unit goes on
                _kill_once(s["out"].display, start)
            else:
                raise RuntimeError(
                    f"injected fault after writing the codes of time steps {start}:{stop} "
                    "(run_encode(fault_at=...))"
                )
        mark_done(self.group, start, stop)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data entry: ``batch`` has ``start``/``stop`` columns (one row per unit)."""
        recs = [
            self.encode_unit(int(a), int(b))
            for a, b in zip(batch["start"], batch["stop"], strict=True)
        ]
        return {k: np.asarray([r[k] for r in recs]) for k in recs[0]}


__all__ = ["ChunkEncoder", "open_field_store", "runs_of", "store_dims", "unit_batches"]


def _kill_once(out: str, start: int) -> None:
    """SIGKILL this process the first time unit ``start`` of ``out`` gets here (testing aid)."""
    digest = hashlib.sha256(f"{out}:{start}".encode()).hexdigest()[:16]
    marker = Path(tempfile.gettempdir()) / f"mia-encode-fault-{digest}"
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)

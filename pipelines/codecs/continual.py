"""Continual encoding: time steps of a field store, as they arrive, become new modules.

A meta-trained MCL-NF run provides the shared initialisation. Every time step of the
store is one signal; it is cut into the run's tasks (the run's strips for
``spatial``/``segments``; one task, the whole frame, for ``temporal`` runs, whose
modules are spatial fields) and each task gets a new module initialised from the shared
init and fitted for ``method.mcl.encode_steps`` steps (test-time optimiser and FIM loss
of the run). Past time steps are never re-encoded: each one is written atomically to
``<out>/modules/t<index>.pt`` and skipped on the next run, so re-running the job after the
store has grown (or after an interruption) encodes only the new time steps.

``<out>/encoder.json`` pins the run, checkpoint, store and modality; a later run that
names different ones fails instead of mixing encodings. ``<out>/index.json`` lists the
encoded time steps with their PSNR.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mia_core.config import load_config
from mia_core.mcl import ModularINR, SequenceLearner, TaskSequence, grid_task_sequence
from mia_core.mcl.tasks import AxisPartition
from pipelines.cluster.connect import init_ray
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import Store, StoreError, make_location, open_store
from pipelines.data.stores.location import redact_url
from pipelines.data.stores.reader import grid_coords
from pipelines.engine.checkpoint import load_checkpoint, save_checkpoint
from pipelines.engine.run_dir import selected_checkpoint
from pipelines.tasks.continual import build_learner_for


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def frame_sequence(cfg, values: torch.Tensor, coords: torch.Tensor) -> TaskSequence:
    """The tasks of a batch of frames ``(b, P, C)`` under the run's task layout."""
    mcl = cfg.method.mcl
    if mcl.tasks == "temporal":  # one frame = one task; modules take spatial coordinates
        return TaskSequence(coords, values, AxisPartition(0, 1))
    return grid_task_sequence(values, coords, mcl.tasks, mcl.num_tasks, mcl.axis)


class ContinualEncoder:
    """A meta-trained MCL-NF initialisation applied to new time steps.

    Args:
        run_dir: a finished ``mcl_nf`` run of ``ray_jobs/continual.py``.
        overrides: config overrides (e.g. ``method.mcl.encode_steps=64``).

    Raises:
        FileNotFoundError: no ``config.yaml``, or no ``best.pt``/``last.pt`` (then a
            :class:`~pipelines.engine.run_dir.CheckpointMissing`).
        EncodeError: the run is not an ``mcl_nf`` run (a ``ValueError``).
    """

    def __init__(self, run_dir: str | Path, overrides: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"{self.run_dir}: no config.yaml (not a continual run)")
        self.cfg = load_config(self.run_dir / "config.yaml", overrides or [])
        if self.cfg.method.name != "mcl_nf":
            raise EncodeError(
                f"{self.run_dir}: method.name={self.cfg.method.name!r}; continual encoding "
                "needs an mcl_nf run (one module per task from a shared init)"
            )
        self.checkpoint = selected_checkpoint(self.run_dir)
        self.state = load_checkpoint(self.checkpoint)["model"]
        self.learner: SequenceLearner | None = None

    def fingerprint(self) -> str:
        """Hash of the shared initialisation (pins encodings to one init)."""
        h = hashlib.sha1()
        for k in sorted(self.state):
            h.update(k.encode())
            h.update(self.state[k].detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def learner_for(self, seq: TaskSequence) -> SequenceLearner:
        """The learner with the run's weights (built once)."""
        if self.learner is None:
            d_signal = seq.coords.shape[1] + (1 if self.cfg.method.mcl.tasks == "temporal" else 0)
            probe = TaskSequence(
                torch.zeros(1, d_signal),
                seq.values[:1, :1],
                AxisPartition(0, 1, self.cfg.method.mcl.tasks == "temporal"),
            )
            self.learner = build_learner_for(self.cfg, probe)
            self.learner.load_state_dict(self.state)
        return self.learner

    def encode(self, values: torch.Tensor, coords: torch.Tensor) -> tuple[list, torch.Tensor]:
        """Fit new modules to frames ``(b, P, C)``.

        Returns:
            Per frame, its modules' weights (one dict per task), and ``(T, b)`` PSNR.
        """
        seq = frame_sequence(self.cfg, values, coords)
        learner = self.learner_for(seq)
        mcl = self.cfg.method.mcl
        with torch.enable_grad():
            st = learner.run(
                seq,
                mcl.encode_steps,
                meta=False,
                lr=mcl.eval_lr or self.cfg.method.inner_lr,
                optimizer=mcl.eval_optimizer,
            )
        quality = learner.task_psnr(st, seq, self.cfg.data.psnr_range)
        frames = [
            [{n: w[b].detach().cpu() for n, w in mod.items()} for mod in st.modular.modules]
            for b in range(values.shape[0])
        ]
        return frames, quality

    @torch.no_grad()
    def decode(self, modules: list[dict[str, torch.Tensor]], coords: torch.Tensor) -> torch.Tensor:
        """``(P, C)`` field of one encoded frame at coordinates ``(P, d)``."""
        values = torch.zeros(1, coords.shape[0], 1)
        seq = frame_sequence(self.cfg, values, coords)
        learner = self.learner_for(seq)
        mod = ModularINR(learner.inr, seq.partition, 1)
        for m in modules:
            mod.add_module({n: w.unsqueeze(0) for n, w in m.items()})
        return mod(coords)[0][0]


def encode_continual(
    run_dir: str | Path,
    store_url: str,
    out: str | Path,
    modality: str | None = None,
    endpoint_url: str | None = None,
    overrides: list[str] | None = None,
    limit: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Encode the time steps of ``store_url`` not yet in ``out`` (module docstring).

    Args:
        run_dir: the meta-trained ``mcl_nf`` run.
        store_url: field (or signal) store; every signal is one time step.
        out: output directory (local).
        modality: variable to encode (default: the run's ``data.modalities[0]``).
        endpoint_url: S3 endpoint of the store.
        overrides: config overrides for encoding settings (``method.mcl.encode_*``).
        limit: encode at most this many new time steps (0 = all).
        log: line printer.

    Returns:
        Summary: ``encoded`` (new this call), ``skipped`` (already there), ``total``.
    """
    enc = ContinualEncoder(run_dir, overrides)
    modality = modality or enc.cfg.data.modalities[0]
    store: Store = open_store(make_location(store_url, endpoint_url=endpoint_url), [modality])
    info = store.info[modality]
    if info.coords is None:
        raise StoreError(f"{store.location}: modality {modality!r} has per-signal coordinates")
    out = Path(out)
    (out / "modules").mkdir(parents=True, exist_ok=True)
    pin = {
        "run_dir": str(Path(run_dir).resolve()),
        "init": enc.fingerprint(),
        "store": redact_url(store_url),
        "modality": modality,
        "grid_shape": list(info.grid_shape),
        "tasks": enc.cfg.method.mcl.tasks,
        "num_tasks": enc.cfg.method.mcl.num_tasks,
    }
    pin_file = out / "encoder.json"
    if pin_file.exists():
        old = json.loads(pin_file.read_text())
        diff = sorted(k for k in pin if old.get(k) != pin[k] and k != "run_dir")
        if diff:
            before = {k: old.get(k) for k in diff}
            raise EncodeError(
                f"{out}: encodings were made with other {diff} ({before}); "
                "use a new output directory"
            )
    else:
        _atomic_json(pin_file, pin)
    index_file = out / "index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    done = {int(p.stem[1:]) for p in (out / "modules").glob("t*.pt")}
    pending = [t for t in range(store.num_signals) if t not in done]
    if limit:
        pending = pending[:limit]
    coords = torch.from_numpy(info.coords)
    batch = enc.cfg.method.mcl.encode_batch
    t0 = time.perf_counter()
    for s in range(0, len(pending), batch):
        group = pending[s : s + batch]
        vals = store.read(group[0], group[-1] + 1)[modality][np.asarray(group) - group[0]]
        frames, quality = enc.encode(torch.from_numpy(np.ascontiguousarray(vals)), coords)
        for k, t in enumerate(group):
            q = quality[:, k].tolist()
            save_checkpoint(
                {"time_index": t, "modules": frames[k], "psnr": q}, out / "modules" / f"t{t:07d}.pt"
            )
            index[str(t)] = {"psnr": float(np.nanmean(q)), "psnr_per_task": q}
        _atomic_json(index_file, dict(sorted(index.items(), key=lambda kv: int(kv[0]))))
        log(
            f"encoded time steps {group[0]}..{group[-1]} "
            f"(mean psnr {float(quality.nanmean()):.2f} dB)"
        )
    summary = {
        "encoded": len(pending),
        "skipped": len(done),
        "total": len(done) + len(pending),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log(
        f"{summary['encoded']} new time steps encoded, {summary['skipped']} already encoded "
        f"(skipped), in {summary['seconds']}s -> {out}"
    )
    return summary


def load_frame(out: str | Path, t: int, run_dir: str | Path | None = None) -> np.ndarray:
    """Decode time step ``t`` of an encoding directory to ``(P, C)`` (normalised units)."""
    out = Path(out)
    pin = json.loads((out / "encoder.json").read_text())
    enc = ContinualEncoder(run_dir or pin["run_dir"])

    frame = load_checkpoint(out / "modules" / f"t{t:07d}.pt")
    coords = torch.from_numpy(grid_coords(tuple(pin["grid_shape"])))
    return enc.decode(frame["modules"], coords).numpy()


def encode_continual_on_ray(
    run_dir: str | Path, store_url: str, out: str | Path, address: str | None = None, **kwargs
) -> dict[str, Any]:
    """Run :func:`encode_continual` as one Ray task (one CPU) on ``address`` or locally."""
    import ray

    init_ray(address)
    task = ray.remote(num_cpus=1)(encode_continual)
    return ray.get(task.remote(str(run_dir), store_url, str(out), **kwargs))

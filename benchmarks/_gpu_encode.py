"""The GPU check's encoding step: a tiny field store, a tiny Meta-INR, codes on a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from mia_core.config import load_config
from pipelines.codecs.encode import run_encode
from pipelines.codecs.encode_spec import EncodeSpec
from pipelines.codecs.encode_summary import EncodeSummary
from pipelines.data.stores import make_location
from pipelines.data.stores.field_writer import split_by_time, write_field_store
from pipelines.jobs import train

ROOT = Path(__file__).resolve().parents[1]
T, NLAT, NLON = 8, 8, 10


def _fields() -> xr.Dataset:
    """Smooth moving 2-D temperature fields, 6-hourly, descending latitudes."""
    lat, lon = np.linspace(60.0, 20.0, NLAT), np.linspace(0.0, 90.0, NLON)
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    t = np.arange(T)[:, None, None]
    t2m = 280 + 10 * np.sin(2 * la + 0.3 * t) * np.cos(lo - 0.2 * t)
    times = np.datetime64("2020-01-01T00") + np.arange(T) * np.timedelta64(6, "h")
    return xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K"})},
        coords={"time": times, "latitude": lat, "longitude": lon},
    )


def encode_tiny(work: Path, device: str, local: bool) -> EncodeSummary:
    """Encode the tiny store with a Meta-INR meta-trained on it (trained once per ``work``).

    Args:
        work: working folder (store, run and code stores are kept there).
        device: ``cpu`` or ``cuda`` for the encoder.
        local: encode in this process; otherwise on Ray encoder actors.
    """
    store = work / "fields.zarr"
    if not store.exists():
        write_field_store(
            _fields(), make_location(str(store)), chunk_time=4, split=split_by_time(T, 0.25, 0.25)
        )
    run_dir = work / "runs" / "gpu_meta_inr"
    if not (run_dir / "checkpoints" / "last.pt").exists():
        cfg = load_config(
            ROOT / "configs/experiments/meta_inr_gray_scott.yaml",
            [
                f"data.store={store}",
                "data.modalities=[t2m]",
                "model.width=16",
                "model.depth=2",
                "model.omega0=10.0",
                "method.inner_steps=2",
                "run.steps=3",
                "run.batch_size=2",
                "run.eval_every=3",
                "run.checkpoint_every=3",
                "run.eval_batch_size=4",
                f"run.out_dir={work / 'runs'}",
                "run.name=gpu_meta_inr",
                f"run.device={device}",
            ],
        )
        train(cfg, local=True, log=lambda _s: None, figures=False)
    spec = EncodeSpec(
        store=str(store),
        checkpoint=str(run_dir),
        out=str(work / f"codes_{'local' if local else 'ray'}.zarr"),
        steps=20,
        lr=1e-2,
        optimizer="adam",
        progress=False,
        larger_codes="warn",
        device=device,
        overwrite=True,
        concurrency=1,
    )
    return run_encode(spec, log=lambda _s: None, local=local)

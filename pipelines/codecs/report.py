"""``mia-inr encode report``: is a code store worth it, against fitting and compressors?

For any code store (and the field store it encodes) the report measures, on ``frames``
test-split time steps (never the validation steps that chose the checkpoint):

1. **speed**: seconds per time step to reach each target PSNR (30 / 35 / 40 dB by
   default) for the encoder cold (meta-init) and warm (previous step's code) and the same
   INR fitted by Adam cold (random init) and warm (its own fit of the previous step), each
   Adam sweep grown until its best learning rate is interior; cold/cold and warm/warm
   speedups, meta-pretraining time and the break-even number of time steps
   (:mod:`pipelines.codecs.comparison`);
2. **size**: compression ratio of the stored codes against ZFP and SZ3 at the codes' PSNR
   and at each target, on the same normalised arrays (:mod:`pipelines.codecs.compressors`).

It writes ``report.json``, ``report.md`` and the figures to ``out_dir``, logs them to the
encoding run in MLflow when it has one, and with ``results_json`` + ``name`` adds or
replaces the dataset's entry of a results file such as ``benchmarks/results/encode.json``,
whose README table ``readme_block`` renders.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mia_core.config import config_from_dict
from pipelines.codecs.codestore import open_code_store
from pipelines.codecs.comparison import (
    DEFAULT_LRS,
    DEFAULT_TARGETS,
    MAX_EXTENSIONS,
    compare_fits,
    select_frames,
    speed_at,
)
from pipelines.codecs.compressors import CompressorMissing, FieldSet, rate_distortion
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encoder import open_field_store
from pipelines.codecs.evaluation import (
    plot_code_projection,
    plot_fit_curves,
    plot_psnr_over_time,
    plot_rate_distortion,
    report_markdown,
)
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rd_metrics import field_values
from pipelines.data.stores import make_location
from pipelines.data.stores.results_file import read_results, write_results
from pipelines.tracking.run_groups import log_artifacts, log_metrics

RESULT_KEYS = (
    "name", "grid", "variables", "frames", "speed", "code_compression", "zfp_compression",
    "sz3_compression", "timesteps_per_s",
)  # fmt: skip


@dataclasses.dataclass
class ReportSpec:
    """What to report on (``mia-inr encode report`` flags).

    Attributes:
        codes: code store URL.
        store: field store URL (default: the one recorded in the code store).
        out_dir: report folder (default: ``runs/encode_report/<code store name>``).
        frames: test-split time steps to fit and compress.
        lrs: baseline Adam learning rates the sweeps start from.
        targets: PSNRs (dB) of the time-to-equal-PSNR comparison.
        headline_db: the target whose ``speed`` goes into ``results_json``.
        max_steps / eval_every: baseline budget and PSNR tracking period (1: every
            step, as the encoder; larger rounds the baseline's steps up).
        max_extensions: learning rates each baseline sweep may add to ``lrs``.
        compressors: among ``zfp``, ``sz3``.
        threads: torch threads (both sides run in this process).
        seed: point sampling and baseline initialisation.
        endpoint_url: S3-compatible endpoint for both stores.
        results_json / name: the results file and this dataset's entry name.
    """

    codes: str
    store: str = ""
    out_dir: str = ""
    frames: int = 8
    lrs: tuple[float, ...] = DEFAULT_LRS
    targets: tuple[float, ...] = DEFAULT_TARGETS
    headline_db: float = 35.0
    max_steps: int = 2000
    eval_every: int = 1
    compressors: tuple[str, ...] = ("zfp", "sz3")
    threads: int = 1
    seed: int = 0
    endpoint_url: str = ""
    results_json: str = ""
    name: str = ""
    max_extensions: int = MAX_EXTENSIONS


def run_report(spec: ReportSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure and write the report; returns its dict (see the module docstring).

    Raises:
        EncodeError: unreadable code store, no encoded time step, a missing compressor.
        StoreError: the field store cannot be opened.
    """
    endpoint = spec.endpoint_url or None
    codes_loc = make_location(spec.codes, endpoint_url=endpoint)
    group = open_code_store(codes_loc)
    attrs = dict(group.attrs["mia_codes"])
    if "summary" not in attrs:
        raise EncodeError(f"{codes_loc}: no encoding summary yet; finish `mia-inr encode` first")
    if attrs.get("patch"):
        raise EncodeError(
            f"{codes_loc}: `encode report` compares whole-field fits and does not read patch "
            "codes yet; see docs/results/scale.md for patch codes' quality and speed"
        )
    store = open_field_store(
        make_location(spec.store or attrs["store"], endpoint_url=endpoint), attrs["variables"]
    )
    meta = Decoder(codes_loc).model
    torch.set_num_threads(max(1, spec.threads))
    frames = select_frames(group, store, spec.frames)
    log(f"report: {len(frames)} test time steps {frames}")
    cmp = compare_fits(
        meta, store, group, frames, spec.lrs, spec.targets, spec.max_steps,
        spec.eval_every, spec.seed, spec.max_extensions,
    )  # fmt: skip
    psnr = np.asarray(group["psnr"].get_orthogonal_selection((frames, slice(None))))
    codes_db = float(np.nanmean(np.nanmean(psnr, 1)))
    fields = FieldSet(field_values(store, frames), float(meta.cfg.data.psnr_range))
    try:
        rd = [rate_distortion(fields, c, [codes_db, *spec.targets]) for c in spec.compressors]
    except CompressorMissing as err:
        raise EncodeError(str(err)) from err
    out = Path(spec.out_dir or Path("runs/encode_report") / Path(codes_loc.url.rstrip("/")).stem)
    summary = attrs["summary"]
    figs = [
        plot_fit_curves(cmp, out / "psnr_vs_fit_time.png"),
        plot_rate_distortion((codes_db, summary["compression_codes"]), rd, out / "rate.png"),
        plot_psnr_over_time(group, out / "psnr_over_time.png"),
        plot_code_projection(group, out / "codes_pca.png", "pca"),
    ]
    report = {
        "codes": codes_loc.display,
        "store": attrs["store"],
        "num_time": attrs["num_time"],
        "code": f"{attrs['mode']}, {attrs['code_dim']} x {attrs['code_dtype']}",
        "encoder": attrs["encoder"],
        "threads": spec.threads,
        "summary": summary,
        "codes_psnr_db": codes_db,
        "comparison": dataclasses.asdict(cmp),
        "rate_distortion": [dataclasses.asdict(r) for r in rd],
        "figures": [str(f) for f in figs],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(report_markdown(report, figs))
    log(f"report: {out / 'report.md'}")
    _log_to_mlflow(report, attrs, out, log)
    if spec.results_json:
        entry = result_entry(report, store, spec)
        upsert_result(Path(spec.results_json), entry)
        log(f"report: {spec.results_json} entry {entry['name']!r} written")
    return report


def _log_to_mlflow(
    report: dict[str, Any], attrs: dict[str, Any], out: Path, log: Callable[[str], None]
) -> None:
    """Attach the report to the encoding's MLflow run (when it has one); never fatal."""
    run_id = report["summary"].get("mlflow_run_id")
    if not run_id:
        return
    cfg = config_from_dict(attrs["meta_config"], "meta_config")
    metrics = {}
    for t in report["comparison"]["targets"]:
        speed = speed_at(report["comparison"], t["target_db"])
        for k in ("speedup_cold", "speedup_warm", *(k for k in speed if k.endswith("_s"))):
            metrics[f"report/{k}_{t['target_db']:g}db"] = speed[k]
    for r in report["rate_distortion"]:
        metrics[f"report/{r['name']}_at_codes_psnr"] = r["at_psnr"][report["codes_psnr_db"]]
    try:
        log_metrics(cfg, run_id, metrics)
        log_artifacts(cfg, run_id, [out], "report")
    except Exception as err:  # the report on disk is the result; tracking is a copy
        log(f"report: not logged to MLflow run {run_id}: {type(err).__name__}: {err}")


def result_entry(report: dict[str, Any], store: Any, spec: ReportSpec) -> dict[str, Any]:
    """The dataset's entry of the results JSON (``RESULT_KEYS`` first, then details)."""
    levels = [t["target_db"] for t in report["comparison"]["targets"]]
    head = speed_at(
        report["comparison"], spec.headline_db if spec.headline_db in levels else max(levels)
    )
    at_codes = {r["name"]: r["at_psnr"][report["codes_psnr_db"]] for r in report["rate_distortion"]}
    first = store.modalities[0]
    return {
        "name": spec.name or Path(report["codes"]).stem,
        "grid": list(store.info[first].grid_shape),
        "variables": list(store.modalities),
        "frames": len(report["comparison"]["frames"]),
        "speed": head,
        "code_compression": report["summary"]["compression_codes"],
        "zfp_compression": at_codes.get("zfp", math.nan),
        "sz3_compression": at_codes.get("sz3", math.nan),
        "timesteps_per_s": report["summary"]["timesteps_per_s"],
        "codes_psnr_db": report["codes_psnr_db"],
        "split": report["comparison"]["split"],
        "lr_grid": {k: report["comparison"][k]["lrs"] for k in ("baseline_cold", "baseline_warm")},
        "code": report["code"],
        "targets": [speed_at(report["comparison"], v) for v in levels],
    }


def upsert_result(path: Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` to ``path``'s ``datasets`` (replacing one of the same name)."""
    data = read_results(path, {"datasets": []})
    data["datasets"] = [d for d in data.get("datasets", []) if d["name"] != entry["name"]]
    data["datasets"].append(entry)
    write_results(path, json.dumps(data, indent=2, default=float) + "\n")


def _cell(v: float, fmt: str = "{:.1f}x", bound: bool = False) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "-"
    return (">= " if bound else "") + fmt.format(v)


def _target_cell(t: dict[str, Any] | None) -> str:
    """``cold / warm`` speedups of one ``speed`` entry (``-``: the encoder's median misses)."""
    if t is None:
        return "-"
    lb = t.get("lower_bound", {})
    cold = _cell(t["speedup_cold"], bound=bool(lb.get("cold")))
    warm = _cell(t["speedup_warm"], bound=bool(lb.get("warm")))
    return f"{cold} / {warm}" + ("" if t["best_lr_interior"] else " (lr at grid edge)")


def _speeds(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """An entry's per-target ``speed`` dicts (none in entries written before them)."""
    return [t for t in entry.get("targets", []) if "psnr_db" in t]


def readme_block(results: dict[str, Any], source: str) -> str:
    """The README table of a results JSON written by :func:`upsert_result`.

    One column per target PSNR found in any entry (each entry's ``targets``), so the
    speedups a dataset reaches at 30 dB show beside the headline target it misses.
    """
    levels = sorted({t["psnr_db"] for d in results["datasets"] for t in _speeds(d)})
    head = "".join(f" {v:g} dB: speedup cold / warm |" for v in levels)
    rows = [
        f"| dataset | grid x variables | frames |{head} codes (PSNR) | ZFP | SZ3 | time steps/s |",
        "|---|---|---|" + "---|" * len(levels) + "---|---|---|---|",
    ]
    for d in results["datasets"]:
        by_level = {t["psnr_db"]: t for t in _speeds(d)}
        grid = "x".join(map(str, d["grid"]))
        cells = "".join(f" {_target_cell(by_level.get(v))} |" for v in levels)
        rows.append(
            f"| {d['name']} | {grid} x {len(d['variables'])} | {d['frames']} |{cells} "
            f"{_cell(d['code_compression'])} ({d.get('codes_psnr_db', math.nan):.1f} dB) | "
            f"{_cell(d['zfp_compression'])} | {_cell(d['sz3_compression'])} | "
            f"{_cell(d['timesteps_per_s'], '{:.2f}')} |"
        )
    return (
        "Per target PSNR, on test-split time steps: the median seconds per time step the "
        "same INR fitted with Adam takes to reach it over the encoder's, cold (meta-init vs "
        "random init) / warm (each from its own fit of the previous time step), Adam at "
        "the best lr of a sweep grown until that lr is interior (`lr at grid edge`: the "
        "sweep's cap stopped it); `-`: the encoder's median time step misses the target; "
        "`>=`: the baseline's missed its step budget. ZFP / SZ3: their compression at the "
        "codes' PSNR on the same normalised "
        "arrays. time steps/s: the encode job end to end (its settings in "
        f"`configs/encode/`). Generated from `{source}` by `mia-inr encode report --readme`.\n\n"
        + "\n".join(rows)
    )


__all__ = [
    "RESULT_KEYS",
    "ReportSpec",
    "readme_block",
    "result_entry",
    "run_report",
    "upsert_result",
]

"""``mia-inr encode report`` with several code stores: the rate-distortion study of a dataset.

:func:`run_rd_report` measures one dataset (:mod:`pipelines.codecs.rd_report`), writes
``rd.json``, ``rd.md`` and ``rd.png`` to its folder and, with ``results_json``, replaces the
dataset's entry of a results file (``benchmarks/results/rate_distortion.json``), whose
page :func:`render_page` generates (``docs/results/rate_distortion.md``). An entry holds
the issue's keys first: ``name``, ``real``, ``curves`` (``codes`` with the meta-model
counted, ``codes_only``, ``sz3``, ``sz3_series``, ``zfp``: ``[ratio, psnr_db]`` pairs),
``meta_model_counted`` and ``speed``; then every point in full.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.codecs.codestore import open_code_store
from pipelines.codecs.comparison import compare_fits, select_frames
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encoder import open_field_store
from pipelines.codecs.meta_model import EncodeError
from pipelines.codecs.rate_distortion import compressor_curve, lossless_point, plot_rd
from pipelines.codecs.rd_metrics import read_fields
from pipelines.codecs.rd_report import (
    HIGH_RATIO,
    STANDARD,
    break_even,
    code_point,
    compare_fronts,
    psnr_at,
)
from pipelines.codecs.speed_rows import speed_at
from pipelines.data.stores import make_location
from pipelines.data.stores.results_file import read_results, write_results


@dataclasses.dataclass
class RDSpec:
    """A dataset's rate-distortion study.

    Attributes:
        codes: two or more code stores of one field store.
        name: the dataset's name in the results file.
        real: the field store holds real data (not simulated).
        store: field store (default: the one the first code store encoded).
        out_dir: report folder (default ``runs/encode_report/rd_<name>``).
        speed_frames: test time steps of the speed comparison (0: skip it).
        lrs / max_steps / max_extensions: the baseline sweep (:mod:`comparison`).
        threads: torch threads.
        results_json: results file to add the entry to (empty: none).
    """

    codes: Sequence[str]
    name: str
    real: bool = True
    store: str = ""
    out_dir: str = ""
    speed_frames: int = 8
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    max_steps: int = 2000
    max_extensions: int = 6
    threads: int = 1
    results_json: str = ""


def _pairs(points: Sequence[dict]) -> list[list[float]]:
    return [[float(p["ratio"]), float(p["psnr"])] for p in points]


def run_rd_report(spec: RDSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the dataset, write its report and (optionally) its results entry.

    Raises:
        EncodeError: fewer than two code stores, code stores of different field stores
            or of patch codes, a field store without test steps, or test steps not encoded.
    """
    if len(spec.codes) < 2:
        raise EncodeError("a rate-distortion report needs two or more --codes (sizes, bits)")
    locs = [make_location(c) for c in spec.codes]
    metas = [dict(open_code_store(loc).attrs["mia_codes"]) for loc in locs]
    for loc, attrs in zip(locs, metas, strict=True):
        if attrs.get("patch"):
            raise EncodeError(
                f"{loc}: the rate-distortion study scores whole-field codes and does not read "
                "patch codes yet; see docs/results/scale.md for patch codes' quality"
            )
    stores = {attrs["store"] for attrs in metas}
    if len(stores) > 1 and not spec.store:
        raise EncodeError(f"the --codes encode different field stores {sorted(stores)}")
    first = metas[0]
    store = open_field_store(make_location(spec.store or first["store"]), first["variables"])
    frames = np.flatnonzero(np.asarray(store.split) == 2).tolist()
    if not frames:
        raise EncodeError(f"{store.location}: no test time steps (split 2) to score on")
    torch.set_num_threads(max(1, spec.threads))
    fields = read_fields(store, frames, float(first.get("psnr_range", 1.0)))
    log(f"rd {spec.name}: {len(frames)} test time steps, {len(locs)} code stores")
    curves: dict[str, list[dict]] = {c: compressor_curve(c, fields) for c in STANDARD}
    points = [code_point(loc, store, fields, frames) for loc in locs]
    raw = float(first["raw_bytes_per_step"])
    for p in points:
        p["break_even_steps"] = break_even(p, curves, raw)
    fronts = compare_fronts(points, curves)
    entry: dict[str, Any] = {
        "name": spec.name,
        "real": spec.real,
        "curves": {
            "codes": _pairs(points),
            "codes_only": [[p["ratio_codes"], p["psnr"]] for p in points],
            **{c: _pairs(curves[c]) for c in STANDARD},
        },
        "meta_model_counted": True,
        "speed": _speed(spec, locs, points, store, log),
        "store": store.location.display,
        "variables": list(store.modalities),
        "grid": list(store.info[store.modalities[0]].grid_shape),
        "time_steps": int(first["num_time"]),
        "test_steps": len(frames),
        "fronts": fronts,
        "points": {"codes": points, **curves, "lossless": lossless_point(fields)},
    }
    out = Path(spec.out_dir or Path("runs/encode_report") / f"rd_{spec.name}")
    out.mkdir(parents=True, exist_ok=True)
    plot_rd({"codes": points, **curves}, out / "rd.png", title=spec.name)
    (out / "rd.json").write_text(json.dumps(entry, indent=1, default=float))
    log(f"rd {spec.name}: {out / 'rd.json'}")
    if spec.results_json:
        data = read_results(spec.results_json, {"datasets": []})
        rest = [d for d in data.get("datasets", []) if d.get("name") != spec.name]
        data["datasets"] = sorted([*rest, entry], key=lambda d: d["name"])
        write_results(spec.results_json, json.dumps(data, indent=1, default=float))
        log(f"rd {spec.name}: entry written to {spec.results_json}")
    return entry


def _speed(spec: RDSpec, locs, points, store, log) -> dict[str, Any]:
    """The four-row speed comparison at the PSNR the codes' front holds at 100x.

    When the front does not reach 100x, at its highest-ratio point's PSNR (``psnr_db``
    says which; ``at_ratio`` the ratio).
    """
    if spec.speed_frames <= 0:
        return {}
    target = psnr_at(points, HIGH_RATIO)
    at_ratio = HIGH_RATIO
    if math.isnan(target):
        top = max(points, key=lambda p: p["ratio"])
        target, at_ratio = float(top["psnr"]), float(top["ratio"])
    target = round(float(target), 2)
    # The code store nearest that point on the ratio axis runs the comparison.
    pick = min(range(len(points)), key=lambda i: abs(math.log(points[i]["ratio"] / at_ratio)))
    group = open_code_store(locs[pick])
    meta = Decoder(locs[pick]).model
    frames = select_frames(group, store, spec.speed_frames)
    log(f"rd speed: {points[pick]['label']} at {target} dB on test steps {frames}")
    cmp = compare_fits(
        meta, store, group, frames, spec.lrs, (target,), spec.max_steps, 1, 0,
        spec.max_extensions,
    )  # fmt: skip
    return {**speed_at(cmp, target), "at_ratio": at_ratio, "codes": points[pick]["codes"]}


def _cell(x: float, fmt: str = "{:.1f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "never" if x == math.inf else fmt.format(x)


def _versus(front: dict[str, Any]) -> str:
    """One compressor's cell of the targets table."""
    if not front["compared_at"]:
        return f"no point >= 100x (reaches {front['max_ratio']:.0f}x)"
    worst = min(m for m in front["margin_db"] if m is not None)
    verdict = "above" if front["above_where_both"] else "below"
    return f"{verdict} (worst {worst:+.1f} dB, {front['compared_at']} ratios)"


def _targets(datasets: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's targets, per dataset: the codes' front at >= 100x and the speedups."""
    lines = [
        "## Targets",
        "",
        "Codes' Pareto front (meta-model counted) at 100x and at each of its points beyond, "
        "against each compressor where that compressor has a point at the same ratio; speed at "
        "the codes' PSNR at 100x (target: warm against warm >= 10x).",
        "",
        "| dataset | real | codes reach 100x | SZ3 per field | SZ3 series | ZFP | "
        "speedup warm / cold |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in datasets:
        f, s = d["fronts"], d.get("speed") or {}
        speed = (
            f"{_cell(s.get('speedup_warm'), '{:.2f}x')} / {_cell(s.get('speedup_cold'), '{:.2f}x')}"
            if s
            else "-"
        )
        lines.append(
            f"| {d['name']} | {'yes' if d['real'] else 'no'} | "
            f"{'yes' if f['codes_reach_100x'] else 'no'} | "
            + " | ".join(_versus(f[c]) if c in f else "-" for c in STANDARD)
            + f" | {speed} |"
        )
    return [*lines, ""]


def render_page(results: dict[str, Any], source: str) -> str:
    """The generated docs page of a rate-distortion results file."""
    lines = [
        "# Rate-distortion of the codes against SZ3, ZFP and lossless",
        "",
        f"Generated from `{source}` by `mia-inr encode report --codes ... --results {source}` "
        "(see docs/codec.md). Scored on each field store's test time steps. Ratios of the "
        "codes count the meta-model's stored bytes spread over the store's time steps.",
        "",
        *_targets(results.get("datasets", [])),
    ]
    for d in results.get("datasets", []):
        f = d["fronts"]
        lines += [
            f"## {d['name']} ({'real' if d['real'] else 'simulated'}; "
            f"{'x'.join(map(str, d['grid']))}, {', '.join(d['variables'])}; "
            f"{d['time_steps']} time steps, {d['test_steps']} scored)",
            "",
            "| codes | meta-model bytes | ratio (with meta-model) | codes alone | PSNR dB | "
            "RMSE | max abs err | break-even steps vs best standard |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in sorted(d["points"]["codes"], key=lambda p: p["ratio"]):
            rmse = ", ".join(f"{v} {r:.3g}" for v, r in p["rmse"].items())
            mx = ", ".join(f"{v} {r:.3g}" for v, r in p["max_abs"].items())
            lines.append(
                f"| {p['label']} | {p['meta_bytes']:,} | {p['ratio']:.1f}x | "
                f"{p['ratio_codes']:.1f}x | "
                f"{p['psnr']:.2f} | {rmse} | {mx} | {_cell(p['break_even_steps'], '{:.0f}')} |"
            )
        lines += ["", "| compressor | largest ratio | PSNR at 100x | codes at 100x: margin dB |"]
        lines.append("|---|---|---|---|")
        for c in STANDARD:
            pts = d["points"][c]
            margin = f[c]["margin_db"][0] if c in f else None
            lines.append(
                f"| {c} | {max(p['ratio'] for p in pts):.1f}x | "
                f"{_cell(psnr_at(pts, HIGH_RATIO), '{:.2f}')} | {_cell(margin, '{:+.2f}')} |"
            )
        loss = ", ".join(f"{p['codec']} {p['ratio']:.2f}x" for p in d["points"]["lossless"])
        lines += ["", f"Lossless: {loss}."]
        s = d.get("speed") or {}
        if s:
            lines += [
                "",
                f"Speed at {s['psnr_db']:.2f} dB (the codes' PSNR at {s['at_ratio']:.0f}x), "
                "median seconds per time step: encoder cold "
                f"{_cell(s['encoder_cold_s'], '{:.3g}')}, "
                f"warm {_cell(s['encoder_warm_s'], '{:.3g}')}; "
                f"Adam from scratch cold {_cell(s['baseline_cold_s'], '{:.3g}')}, warm "
                f"{_cell(s['baseline_warm_s'], '{:.3g}')}; best learning rate interior: "
                f"{s['best_lr_interior']}.",
            ]
        lines += ["", f"![{d['name']}](rate_distortion_{d['name']}.png)", ""]
    return "\n".join(lines)


def write_page(results_json: str | Path, page: str | Path) -> Path:
    """Regenerate the docs page and its figures (one per dataset) from the results file."""
    results = read_results(results_json, {"datasets": []})
    page = Path(page)
    for d in results.get("datasets", []):
        plot_rd(
            {"codes": d["points"]["codes"], **{c: d["points"][c] for c in STANDARD}},
            page.parent / f"rate_distortion_{d['name']}.png",
            title=d["name"],
        )
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render_page(results, str(results_json)) + "\n")
    return page


__all__ = ["RDSpec", "render_page", "run_rd_report", "write_page"]

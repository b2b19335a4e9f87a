"""The encode report's figures and markdown (the measurements: :mod:`pipelines.codecs.report`).

Figures: the encoder's PSNR over the store's time steps, a 2-D projection of the codes,
PSNR against fitting time for the encoder and every from-scratch Adam fit, cold and warm
(the four-row speed table: :mod:`pipelines.codecs.comparison`), and
compression against PSNR for the codes, ZFP and SZ3.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.codecs.codestore import read_codes  # noqa: E402
from pipelines.codecs.comparison import Comparison  # noqa: E402
from pipelines.codecs.compressors import RateDistortion  # noqa: E402
from pipelines.reports.plots import save_figure  # noqa: E402


def plot_psnr_over_time(group: Any, path: Path) -> Path:
    """PSNR per time step and variable (done steps only)."""
    done = np.asarray(group["done"][...]).astype(bool)
    psnr = np.asarray(group["psnr"][...])
    variables = group.attrs["mia_codes"]["variables"]
    fig, ax = plt.subplots(figsize=(7, 3))
    t = np.flatnonzero(done)
    for i, v in enumerate(variables):
        ax.plot(t, psnr[done, i], ".-", label=v, ms=3)
    ax.set(xlabel="time step", ylabel="PSNR (dB)", title="encoder PSNR over time")
    ax.legend()
    return save_figure(fig, path, dpi=120)


def plot_code_projection(group: Any, path: Path, method: str = "pca", seed: int = 0) -> Path:
    """2-D projection (PCA or t-SNE) of the codes, coloured by time step."""
    done = np.flatnonzero(np.asarray(group["done"][...]).astype(bool))
    codes = read_codes(group, done).astype(np.float64)
    codes = codes - codes.mean(0)
    if method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(
            2, perplexity=min(30.0, max(2.0, len(done) / 4)), random_state=seed
        ).fit_transform(codes)
    else:
        from sklearn.decomposition import PCA

        xy = PCA(2, random_state=seed).fit_transform(codes)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(xy[:, 0], xy[:, 1], "-", color="0.8", lw=0.8, zorder=0)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=done, cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="time step")
    ax.set(title=f"codes over time ({method.upper()})", xticks=[], yticks=[])
    return save_figure(fig, path, dpi=120)


def plot_fit_curves(cmp: Comparison, path: Path) -> Path:
    """Mean PSNR of the test time steps against fitting seconds per time step.

    The encoder cold / warm (markers) and every Adam fit of both sweeps (cold: solid,
    warm: dashed, one colour per learning rate).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    lrs = sorted({b.lr for s in (cmp.baseline_cold, cmp.baseline_warm) for b in s.fits})
    colour = dict(zip(lrs, plt.cm.viridis(np.linspace(0, 0.9, len(lrs))), strict=True))
    fits = [(cmp.encoder_cold, dict(fmt="ko-")), (cmp.encoder_warm, dict(fmt="ks--"))]
    for sweep, ls in ((cmp.baseline_cold, "-"), (cmp.baseline_warm, "--")):
        fits += [(b, dict(fmt=ls, color=colour[b.lr], lw=1)) for b in sweep.fits]
    for fc, style in fits:
        steps = np.asarray([k for k, _ in fc.curve], float)
        secs = np.maximum(steps, 1) * fc.seconds_per_step / cmp.batch
        ax.plot(secs, [v for _, v in fc.curve], style.pop("fmt"), label=fc.label, ms=3, **style)
    for t in cmp.targets:
        ax.axhline(t.target_db, color="0.8", lw=0.8, zorder=0)
    ax.set(xscale="log", xlabel="fitting seconds per time step", ylabel="mean PSNR (dB)")
    ax.set_title(f"{cmp.batch} test time steps")
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path, dpi=120)


def plot_rate_distortion(
    codes_point: tuple[float, float], curves: list[RateDistortion], path: Path
) -> Path:
    """Compression ratio against PSNR: the codes (one point) and each compressor's curve."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rd in curves:
        pts = sorted((p, r) for _, p, r in rd.curve if 0 < p < 150)
        ax.plot([p for p, _ in pts], [r for _, r in pts], ".-", label=rd.name.upper())
    ax.plot(*codes_point, "k*", ms=12, label="INR codes")
    ax.set(yscale="log", xlabel="mean PSNR (dB)", ylabel="compression (raw / stored)")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def _secs_cell(row: dict[str, Any], lr: bool = False) -> str:
    """``seconds (reached share)`` of one speed row, with the baseline's rate."""
    v = row["seconds"]
    time = "never" if math.isnan(v) else f"{v:.3g} s"
    rate = f" @ lr {row['lr']:.2g}" if lr else ""
    return f"{time}{rate} ({row['reached']:.0%})"


def _speed_lines(c: dict[str, Any]) -> list[str]:
    """The four-row speed table of ``report.md`` and what its sweeps covered."""
    every = "every step" if c["eval_every"] == 1 else f"every {c['eval_every']} steps"
    lines = [
        "Median wall seconds per time step to reach each PSNR (share of time steps that "
        "do): the encoder from the meta-init (cold) or from the previous time step's stored "
        "code (warm), against Adam from random weights (cold) or from its own fit of the "
        f"previous time step (warm, that fit at lr {c['warm_from_lr']:.2g}). PSNR checked "
        f"{every} on the baselines, every step on the encoder. Speedups: baseline / "
        "encoder, `>=` where the baseline's median missed its budget.",
        "",
        "| target | encoder cold | encoder warm | baseline cold | baseline warm | "
        "speedup cold/cold | speedup warm/warm | best lr interior | break-even time steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in c["targets"]:
        r, inner = t["rows"], t["best_lr_interior"]
        flag = " / ".join(
            ("yes" if inner[k] else "NO") for k in ("baseline_cold", "baseline_warm")
        )  # fmt: skip
        lines.append(
            f"| {t['target_db']:g} dB | {_secs_cell(r['encoder_cold'])} | "
            f"{_secs_cell(r['encoder_warm'])} | {_secs_cell(r['baseline_cold'], True)} | "
            f"{_secs_cell(r['baseline_warm'], True)} | "
            f"{_x(t['speedup_cold'], t['lower_bound_cold'])} | "
            f"{_x(t['speedup_warm'], t['lower_bound_warm'])} | {flag} | "
            f"{_count(t['break_even_frames'])} |"
        )
    lines.append("")
    for side in ("baseline_cold", "baseline_warm"):
        s = c[side]
        grid = ", ".join(f"{v:.2g}" for v in s["lrs"])
        cap = (
            f"; CAP HIT after {s['extensions']} added rates: the best lr is still at the "
            "grid's edge for some target, the optimum is not bracketed"
            if s["cap_hit"]
            else f"; {s['extensions']} rates added, best lr interior at every target"
        )
        lines.append(f"- {side.replace('_', ' ')} lr grid: {grid}{cap}.")
    return lines


def _x(v: float, bound: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{'>= ' if bound else ''}{v:.1f}x"


def report_markdown(report: dict[str, Any], figures: list[Path]) -> str:
    """The ``report.md`` of :func:`pipelines.codecs.report.run_report`'s dict."""
    s, c = report["summary"], report["comparison"]
    held = "the test split, never the validation steps that chose the checkpoint"
    lines = [
        f"# Encoding report: {report['store']}",
        "",
        f"Codes `{report['codes']}`: {report['code']}; encoder {report['encoder']}.",
        f"Compared on {c['batch']} time steps {c['frames']} ({held}), "
        f"{c['points_per_step'] or 'all'} points per step, one process, "
        f"{report['threads']} thread(s).",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| time steps encoded | {s['done']} / {report['num_time']} |",
        f"| throughput (end to end) | {s['timesteps_per_s']:.3f} time steps/s |",
        f"| PSNR of the stored codes, mean / min (dB) | {s['psnr']['mean']:.2f} / "
        f"{s['psnr']['min']:.2f} |",
        f"| compression, codes / incl. meta-model | {s['compression_codes']:.2f}x / "
        f"{s['compression_total']:.2f}x |",
        f"| meta-pretraining | {_secs(c['pretrain_seconds'])} |",
        "",
        *_speed_lines(c),
    ]
    rd = report["rate_distortion"]
    lines += [
        "",
        f"Rate-distortion on the same {c['batch']} time steps (normalised values; "
        "compression = raw float32 bytes / stored bytes):",
        "",
        "| PSNR | " + " | ".join(r["name"].upper() for r in rd) + " |",
        "|---|" + "---|" * len(rd),
    ]
    targets = [("codes' PSNR", report["codes_psnr_db"])] + [
        (f"{t['target_db']:g} dB", t["target_db"]) for t in c["targets"]
    ]
    for name, t in targets:
        cells = [_x(r["at_psnr"].get(str(t), r["at_psnr"].get(t))) for r in rd]
        lines.append(f"| {name} ({t:.1f}) | " + " | ".join(cells) + " |")
    lines += ["", *[f"![]({Path(f).name})" for f in figures], ""]
    return "\n".join(lines)


def _secs(v: float | None) -> str:
    return "unknown" if v is None or math.isnan(v) else f"{v:.0f} s"


def _count(v: float) -> str:
    if math.isnan(v):
        return "-"
    return "never" if math.isinf(v) else f"{v:.0f}"


__all__ = [
    "plot_code_projection",
    "plot_fit_curves",
    "plot_psnr_over_time",
    "plot_rate_distortion",
    "report_markdown",
]

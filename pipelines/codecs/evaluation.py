"""The encode report's figures and markdown (the measurements: :mod:`pipelines.codecs.report`).

Figures: the encoder's PSNR over the store's time steps, a 2-D projection of the codes,
PSNR against fitting time for the encoder and each from-scratch baseline, and
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
    """Mean PSNR of the held-out time steps against fitting seconds per time step."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for fc, style in [(cmp.encoder, "o-"), *[(b, "-") for b in cmp.baselines]]:
        steps = np.asarray([k for k, _ in fc.curve], float)
        secs = np.maximum(steps, 1) * fc.seconds_per_step / cmp.batch
        ax.plot(secs, [v for _, v in fc.curve], style, label=fc.label, ms=3)
    for t in cmp.targets:
        ax.axhline(t.target_db, color="0.8", lw=0.8, zorder=0)
    ax.set(xscale="log", xlabel="fitting seconds per time step", ylabel="mean PSNR (dB)")
    ax.set_title(f"{cmp.batch} time steps" + (" (held out)" if cmp.held_out else ""))
    ax.legend(fontsize=8)
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


def _x(v: float, bound: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{'>= ' if bound else ''}{v:.1f}x"


def report_markdown(report: dict[str, Any], figures: list[Path]) -> str:
    """The ``report.md`` of :func:`pipelines.codecs.report.run_report`'s dict."""
    s, c = report["summary"], report["comparison"]
    held = "held out from meta-training" if c["held_out"] else "NOT held out (no val/test split)"
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
        "| target | encoder reaches (K steps) | best baseline | baseline reaches | "
        "speedup, time | speedup, steps | break-even time steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in c["targets"]:
        lb = t["lower_bound"]
        lines.append(
            f"| {t['target_db']:g} dB | {t['encoder_reached']:.0%} | {t['baseline']} | "
            f"{t['baseline_reached']:.0%} | {_x(t['speedup_time'], lb)} | "
            f"{_x(t['speedup_steps'], lb)} | {_count(t['break_even_frames'])} |"
        )
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

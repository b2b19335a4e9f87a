"""Report on a code store: from-scratch baseline, speedup, PSNR over time, code projection.

The baseline is the same SIREN (architecture of the meta-model, every weight trained)
started from its random initialisation and fitted with the standard SIREN recipe (Adam,
lr 1e-3) and the encoder's point sampling, vectorised over the same time steps, until each
time step reaches the PSNR the encoder reached for it (checked every ``eval_every``
steps). The speedup compares adaptation time per time step (evaluations excluded on
both sides); a time step the baseline never reaches within its step budget makes the
speedup a lower bound.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mia_core.builders import build_learner  # noqa: E402
from pipelines.codecs.codestore import open_code_store, read_codes  # noqa: E402
from pipelines.codecs.encoder import open_field_store, store_dims  # noqa: E402
from pipelines.codecs.meta_model import MetaModel, batch_tensors, fit_batch  # noqa: E402
from pipelines.data.stores import StoreLocation  # noqa: E402
from pipelines.reports.plots import save_figure  # noqa: E402


@dataclasses.dataclass
class BaselineResult:
    """From-scratch fits of a few time steps.

    Attributes:
        indices: time steps fitted.
        target_psnr: the encoder's PSNR per time step (mean over variables).
        steps_to_target: baseline steps per time step (``-1``: not reached).
        seconds_to_target: baseline adaptation seconds for the batch until each was reached.
        seconds_per_step_encoder: the encoder's adaptation seconds per time step.
        encoder_steps: the encoder's ``K``.
        reached: fraction of time steps reaching their target.
        speedup_time: median baseline time per time step / encoder time per time step.
        speedup_steps: median steps to target / ``K``.
        lower_bound: some time step never reached its target (speedups are lower bounds).
        history: baseline ``(step, mean psnr)`` curve.
        optimizer: the baseline's optimiser and learning rate.
    """

    indices: list[int]
    target_psnr: list[float]
    steps_to_target: list[int]
    seconds_to_target: list[float]
    seconds_per_step_encoder: float
    encoder_steps: int
    reached: float
    speedup_time: float
    speedup_steps: float
    lower_bound: bool
    history: list[tuple[int, float]]
    optimizer: str = ""


def fit_from_scratch(
    meta: MetaModel,
    store_location: StoreLocation,
    codes_group: Any,
    indices: list[int],
    max_steps: int = 2000,
    eval_every: int = 10,
    seed: int = 0,
    optimizer: str = "adam",
    lr: float = 1e-3,
) -> BaselineResult:
    """Fit the baseline on ``indices`` (one vectorised batch).

    The baseline uses the standard SIREN recipe (Adam, ``lr`` 1e-3) by default and the
    encoder's point sampling; ``optimizer``/``lr`` change it.
    """
    attrs = dict(codes_group.attrs["mia_codes"])
    enc = attrs["encoder"]
    store = open_field_store(store_location, list(attrs["variables"]))
    cfg = meta.cfg
    torch.manual_seed(seed)
    scratch = build_learner(
        cfg.model, dataclasses.replace(cfg.method, name="maml"), store_dims(store)
    ).eval()
    for p in scratch.parameters():
        p.requires_grad_(False)
    rows = {m: [] for m in store.modalities}
    for i in indices:
        r = store.read(i, i + 1)
        for m in store.modalities:
            rows[m].append(r[m][0])
    values, valid = batch_tensors({m: np.stack(v) for m, v in rows.items()})
    coords = {m: torch.from_numpy(store.info[m].coords) for m in store.modalities}
    target = np.asarray(codes_group["psnr"].get_orthogonal_selection((indices, slice(None))))
    target = target.mean(1)
    fit = fit_batch(
        scratch,
        coords,
        values,
        valid,
        max_steps,
        lr,
        optimizer,
        enc["points_per_step"],
        seed=seed,
        target_psnr=torch.from_numpy(target),
        eval_every=eval_every,
        data_range=attrs.get("psnr_range", 1.0),
    )
    secs = np.asarray(codes_group["encode_seconds"].get_orthogonal_selection((indices,)))
    enc_s = float(secs.mean())
    steps = np.asarray(fit.steps_to_target)
    hit = steps >= 0
    bsz = len(indices)
    # The batch's step time is shared by its time steps, as for the encoder.
    base_s = np.where(hit, np.asarray(fit.seconds_to_target), fit.seconds) / bsz
    base_steps = np.where(hit, steps, fit.steps)
    return BaselineResult(
        list(map(int, indices)),
        target.tolist(),
        steps.tolist(),
        (base_s * bsz).tolist(),
        enc_s,
        int(enc["steps"]),
        float(hit.mean()),
        float(np.median(base_s) / enc_s),
        float(np.median(base_steps) / enc["steps"]),
        bool((~hit).any()),
        fit.history,
        f"{optimizer} lr={lr:g}",
    )


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


def write_report(
    codes: StoreLocation, baseline: BaselineResult, out_dir: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    """Plots + ``report.json`` + ``report.md`` under ``out_dir``; returns the report dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    group = open_code_store(codes)
    attrs = dict(group.attrs["mia_codes"])
    summary = attrs.get("summary", {})
    figs = [
        plot_psnr_over_time(group, out_dir / "psnr_over_time.png"),
        plot_code_projection(group, out_dir / "codes_pca.png", "pca"),
    ]
    if int(np.asarray(group["done"][...]).sum()) >= 8:
        figs.append(plot_code_projection(group, out_dir / "codes_tsne.png", "tsne"))
    report = {
        **extra,
        "summary": summary,
        "baseline": dataclasses.asdict(baseline),
        "figures": [str(f) for f in figs],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    bound = ">= " if baseline.lower_bound else ""
    lines = [
        f"# Encoding report: {attrs['store']}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| time steps encoded | {summary.get('done')} / {attrs['num_time']} |",
        f"| code | {attrs['mode']}, {attrs['code_dim']} x {attrs['code_dtype']} |",
        f"| encoder | {attrs['encoder']} |",
        f"| throughput | {summary.get('timesteps_per_s', float('nan')):.3f} time steps/s |",
        f"| PSNR (dB) mean / min / median / max | {summary['psnr']['mean']:.2f} / "
        f"{summary['psnr']['min']:.2f} / {summary['psnr']['median']:.2f} / "
        f"{summary['psnr']['max']:.2f} |",
        f"| compression (codes / incl. meta-model) | {summary['compression_codes']:.2f}x / "
        f"{summary['compression_total']:.2f}x |",
        f"| baseline ({baseline.optimizer}) reaching the encoder's PSNR | {baseline.reached:.0%} |",
        f"| speedup, adaptation time | {bound}{baseline.speedup_time:.1f}x |",
        f"| speedup, steps | {bound}{baseline.speedup_steps:.1f}x |",
        "",
        *[f"![]({Path(f).name})" for f in figs],
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    return report

"""Analyses of the ablation study: relative improvements, trajectories, MSFT attention.

* Relative improvement over CAVIA (MIA Sec. 6.1, after Maninis et al. 2019): per seed,
  ``100 * (nmse_CAVIA - nmse_X) / nmse_CAVIA`` averaged over modalities and support-ratio
  bins, on non-support points (generalisation, G) and support points (memorisation, M).
* Learning trajectories (MIA App. E.3): the target modality's context after every inner
  step, for a frozen CAVIA adapted by gradient descent and by the SFT meta-learned on top of
  it, while the other modalities' support ratio varies; the contexts live in the same
  space (same INR, same initial context), so one PCA per signal shows both.
* MSFT attention vs support size (MIA App. E.1): ``A_n`` is averaged over inner steps,
  blocks, heads and the token blocks of each modality pair into ``Abar_n (M x M)``
  (``Abar_n(i, j)``: attention from modality i's tokens to modality j's), and
  ``C_ij = pearson_n(Abar_n(i, j), |D_nj|)`` over the test signals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mia_core.builders import build_learner
from mia_core.config import load_config
from mia_core.meta import MetaLearner
from mia_core.meta.metrics import signal_metrics
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.resolve import modality_dims
from pipelines.data.stores import Store
from pipelines.data.streams import store_episodes
from pipelines.engine.checkpoint import load_checkpoint
from pipelines.engine.run_dir import selected_checkpoint
from pipelines.reports.plots import save_figure


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def fmt(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` of ``values``."""
    m, s = mean_std(values)
    return f"{m:.{digits}g} ± {s:.2g}"


def relative_improvement(test_x: list[dict], test_ref: list[dict], key: str) -> float:
    """Mean over (modality, bin) of ``100 (ref - x) / ref`` for metric ``key``.

    Args:
        test_x: the ``test`` list of the compared run's ``metrics.json``.
        test_ref: the same list of the reference (CAVIA) run, same bins.
        key: e.g. ``nmse_nonsupport``.
    """
    ref = {(r["modality"], r["r_min"], r["r_max"]): r[key] for r in test_ref}
    vals = []
    for r in test_x:
        base = ref.get((r["modality"], r["r_min"], r["r_max"]))
        if base is not None and base > 0 and r[key] == r[key]:
            vals.append(100.0 * (base - r[key]) / base)
    if not vals:
        raise ValueError(f"no common (modality, bin) with a finite '{key}' to compare")
    return float(np.mean(vals))


def load_learner(run_dir: Path, store: Store, device: torch.device) -> MetaLearner:
    """A finished run's validation-selected learner (``best.pt``, else ``last.pt``)."""
    cfg = load_config(run_dir / "config.yaml")
    learner = build_learner(cfg.model, cfg.method, modality_dims(store)).to(device)
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "last.pt"
    learner.load_state_dict(load_checkpoint(ckpt, "cpu")["model"])
    return learner.eval()


def freeze_inrs_hook(cavia_run: Path):
    """Training init hook: copy a trained CAVIA's INRs into ``trainer.model`` and freeze them.

    Only the update rule (the SFT) is then meta-learned, so the context trajectories of
    CAVIA and CAVIA + SFT share one space. The CAVIA run's selected checkpoint is read when
    the hook runs (the CAVIA run trains first).
    """

    def hook(trainer) -> None:
        cavia_ckpt = selected_checkpoint(cavia_run)
        state = load_checkpoint(cavia_ckpt, "cpu")["model"]
        inrs = {k: v for k, v in state.items() if k.startswith("inrs.")}
        own = {k for k in trainer.model.state_dict() if k.startswith("inrs.")}
        if set(inrs) != own:
            raise ValueError(
                f"{cavia_ckpt}: its INRs do not match the SFT run's model "
                f"(missing {sorted(own - set(inrs))[:3]}, extra {sorted(set(inrs) - own)[:3]})"
            )
        trainer.model.load_state_dict(inrs, strict=False)
        frozen = {id(p) for p in trainer.model.inrs.parameters()}
        for name, p in trainer.model.inrs.named_parameters():
            if name.endswith("context_init"):
                # The inner loop differentiates w.r.t. contexts started from this tensor,
                # so it keeps requires_grad; a zeroed gradient and no optimiser slot keep
                # it fixed.
                p.register_hook(torch.zeros_like)
            else:
                p.requires_grad_(False)
        for group in trainer.opt.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in frozen]

    return hook


def _episode(store: Store, ranges: dict, n: int, seed: int, stride: int, device):
    spec = EpisodeSpec(ranges, seed, stride, store.location.display)
    ep = next(iter(store_episodes(store, spec, n, "test", 0, shuffle=False)))
    return {m: b.to(device) for m, b in ep.items()}


def trajectory(learner: MetaLearner, episode, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Contexts of ``modality`` after each inner step and the final per-signal nmse.

    Returns:
        ``(traj, nmse)``: ``(B, K + 1, S * D)`` contexts (step 0 = initial) and ``(B,)``
        normalised MSE on all query points after ``K`` steps.
    """
    b = episode[modality].batch_size
    with torch.enable_grad():
        params = {k: v.detach().requires_grad_(True) for k, v in learner.initial_params(b).items()}
        state = learner.rule.init_state(params)
        steps = [params[modality].detach().reshape(b, -1)]
        for k in range(learner.inner_steps):
            params, state, _, _ = learner.step(episode, params, state, k, False, False)
            params = {key: v.detach().requires_grad_(True) for key, v in params.items()}
            steps.append(params[modality].detach().reshape(b, -1))
    mb = episode[modality]
    with torch.no_grad():
        pred = learner.predict(modality, mb.query_x, params)
        nmse = signal_metrics(pred, mb.query_y, mb.query_mask, mb.query_support, mb.scale)
    return torch.stack(steps, 1).cpu().numpy(), nmse["nmse_all"].cpu().numpy()


def trajectories(
    learners: dict[str, MetaLearner],
    store: Store,
    target: str,
    target_ratio: float,
    source_ratios: list[float],
    n: int,
    seed: int,
    stride: int = 1,
) -> dict:
    """Trajectories of ``target`` for every learner and source support ratio.

    Returns:
        ``{"traj": {name: {ratio: (B, K+1, S*D)}}, "nmse": {name: {ratio: mean nmse}}}``.
    """
    device = next(iter(learners.values())).inrs[target].context_init.device
    out: dict = {"traj": {k: {} for k in learners}, "nmse": {k: {} for k in learners}}
    for r in source_ratios:
        ranges = {m: (r, r) for m in store.modalities}
        ranges[target] = (target_ratio, target_ratio)
        ep = _episode(store, ranges, n, seed, stride, device)
        for name, learner in learners.items():
            tr, nmse = trajectory(learner, ep, target)
            out["traj"][name][r] = tr
            out["nmse"][name][r] = float(nmse.mean())
    return out


def plot_trajectories(
    result: dict, target: str, path: Path, signals: int = 3, title: str = ""
) -> Path:
    """PCA of each signal's context trajectories: CAVIA dashed, SFT coloured by source ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["traj"])
    ratios = list(result["traj"][names[0]])
    n = min(signals, next(iter(result["traj"][names[0]].values())).shape[0])
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for b, ax in enumerate(axes[0]):
        pts = np.concatenate([result["traj"][k][r][b] for k in names for r in ratios])
        mean = pts.mean(0)
        _, _, vt = np.linalg.svd(pts - mean, full_matrices=False)
        basis = vt[:2].T

        def proj(x: np.ndarray, mean=mean, basis=basis) -> np.ndarray:
            return (x - mean) @ basis

        for k in names:
            for i, r in enumerate(ratios):
                xy = proj(result["traj"][k][r][b])
                if k == "cavia":
                    if i == 0:  # GD ignores the other modalities: one trajectory
                        ax.plot(*xy.T, "--o", color="tab:red", ms=3, label="CAVIA (GD)")
                else:
                    c = cmap(i / max(1, len(ratios) - 1))
                    ax.plot(*xy.T, "-o", color=c, ms=3, label=f"+SFT, sources R={r:g}")
        ax.plot(*proj(result["traj"][names[0]][ratios[0]][b][:1]).T, "k*", ms=10)
        ax.set_title(f"signal {b}", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or f"{target}: inner-loop context trajectories (PCA)")
    return save_figure(fig, path)


def attention_correlation(
    learner: MetaLearner,
    store: Store,
    ratio_range: tuple[float, float],
    n: int,
    seed: int,
    stride: int = 1,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pearson ``C_ij`` between MSFT attention and support sizes (module docstring).

    Returns:
        ``(C, Abar, modalities)``: ``(M, M)`` correlations and the mean attention map.

    Raises:
        ValueError: when the learner has no MSFT (no attention to analyse).
    """
    device = next(learner.parameters()).device
    ep = _episode(store, {m: ratio_range for m in store.modalities}, n, seed, stride, device)
    with torch.enable_grad():
        _, auxs = learner.adapt(ep, create_graph=False, prune=False, track_graph=False)
    if not auxs or "msft_attention" not in auxs[0]:
        raise ValueError("the learner has no MSFT: attention analysis needs method.sft.use_msft")
    mods = list(auxs[0]["msft_tokens"])
    sizes = [auxs[0]["msft_tokens"][m] for m in mods]
    bounds = np.cumsum([0, *sizes])
    maps = torch.stack([a.detach() for aux in auxs for a in aux["msft_attention"]]).mean(0)
    abar = torch.zeros(maps.shape[0], len(mods), len(mods))
    for i in range(len(mods)):
        for j in range(len(mods)):
            blk = maps[:, bounds[i] : bounds[i + 1], bounds[j] : bounds[j + 1]]
            abar[:, i, j] = blk.mean((1, 2)).cpu()
    support = torch.stack([ep[m].support_mask.sum(1).cpu() for m in mods], 1)  # (B, M)
    corr = np.zeros((len(mods), len(mods)))
    for i in range(len(mods)):
        for j in range(len(mods)):
            corr[i, j] = _pearson(abar[:, i, j].numpy(), support[:, j].numpy())
    return corr, abar.mean(0).numpy(), mods


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else math.nan


def plot_matrix(mat: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    """Annotated heatmap of an ``(M, M)`` matrix (rows i, columns j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.4))
    im = ax.imshow(mat, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("j (support size of)")
    ax.set_ylabel("i (attention from)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)

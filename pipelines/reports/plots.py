"""Figures for evaluation: reconstructions with support points, MSFT attention maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mia_core.data import ModalityBatch  # noqa: E402


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (parent folders created), close it, return ``path``.

    Args:
        fig: the figure.
        path: PNG (or any format matplotlib infers from the suffix).
        dpi: resolution.
        tight: apply ``tight_layout`` first (off for figures with a shared colorbar).
    """
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_reconstruction(
    mb: ModalityBatch,
    pred: torch.Tensor,
    grid_shape: tuple[int, ...],
    title: str,
    path: Path,
    n: int = 4,
) -> Path:
    """Ground truth vs reconstruction for the first ``n`` signals of one modality.

    1-D grids are line plots with support points marked; 2-D grids are images (support
    points as dots on the ground truth); higher dimensions show the middle slice.
    """
    n = min(n, mb.batch_size)
    y = mb.query_y[:n].cpu().numpy()
    p = pred[:n].detach().cpu().numpy()
    sup = mb.query_support[:n].cpu().numpy() > 0
    fig, axes = plt.subplots(
        n, 2 if len(grid_shape) >= 2 else 1, figsize=(8, 2.2 * n), squeeze=False
    )
    for i in range(n):
        if len(grid_shape) == 1:
            x = np.arange(grid_shape[0])
            ax = axes[i, 0]
            ax.plot(x, y[i, :, 0], label="ground truth", color="k", lw=1)
            ax.plot(x, p[i, :, 0], label="reconstruction", color="tab:red", lw=1)
            ax.scatter(
                x[sup[i]], y[i, sup[i], 0], s=12, color="tab:blue", label="support", zorder=3
            )
            if i == 0:
                ax.legend(fontsize=7)
        else:
            shape = grid_shape[:2] if len(grid_shape) == 2 else grid_shape
            gt = y[i].reshape(*shape, -1)
            rc = p[i].reshape(*shape, -1)
            if len(shape) > 2:
                mid = shape[0] // 2
                gt, rc = gt[mid], rc[mid]
            show = (lambda a: a[..., 0]) if gt.shape[-1] != 3 else (lambda a: np.clip(a, 0, 1))
            axes[i, 0].imshow(show(gt), cmap="viridis")
            if len(shape) == 2:
                rr, cc = np.unravel_index(np.flatnonzero(sup[i]), shape)
                axes[i, 0].scatter(cc, rr, s=2, color="red")
            axes[i, 1].imshow(show(rc), cmap="viridis")
            axes[i, 0].set_title("ground truth + support", fontsize=7)
            axes[i, 1].set_title("reconstruction", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=90)


def plot_attention(maps: list[torch.Tensor], tokens: dict[str, int], path: Path) -> Path:
    """Modality x modality MSFT attention (mean over signals and tokens), one panel per step."""
    mods = list(tokens)
    bounds = np.cumsum([0, *tokens.values()])
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3), squeeze=False)
    for k, att in enumerate(maps):
        a = att.detach().float().mean(0).cpu().numpy()
        mat = np.array(
            [
                [
                    a[bounds[i] : bounds[i + 1], bounds[j] : bounds[j + 1]].sum(1).mean()
                    for j in range(len(mods))
                ]
                for i in range(len(mods))
            ]
        )
        ax = axes[0, k]
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="magma")
        ax.set_xticks(range(len(mods)), mods, rotation=45, fontsize=7)
        ax.set_yticks(range(len(mods)), mods, fontsize=7)
        ax.set_title(f"inner step {k + 1}", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    return save_figure(fig, path, dpi=90, tight=False)

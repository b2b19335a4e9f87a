"""synthetic1d: the multimodal 1-D synthetic benchmark written as a signal store."""

from __future__ import annotations

import argparse

from mia_core.config import load_config
from pipelines.data.resolve import build_synthetic_store
from pipelines.data.stores import StoreLocation


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Builder options (defaults: the paper's 1000 functions, 900 train, 200 points)."""
    p.add_argument("--num-functions", type=int, default=1000)
    p.add_argument("--num-train", type=int, default=900, help="first N functions are training")
    p.add_argument("--val-fraction", type=float, default=0.1, help="of the training functions")
    p.add_argument("--num-points", type=int, default=200)
    p.add_argument(
        "--noise-std",
        type=float,
        default=0.02,
        help="paper: per-modality parameter jitter; shared: observation noise",
    )
    p.add_argument(
        "--variant",
        choices=("paper", "shared"),
        default="paper",
        help="paper: MTNP ranges, parameters jittered per modality; shared: the earlier one",
    )
    p.add_argument("--modalities", default="sine,gaussian,tanh,relu")
    p.add_argument("--seed", type=int, default=0)


def build(args: argparse.Namespace, location: StoreLocation) -> dict:
    """Generate and write; values are not normalised (the paper scores MSE / a^2)."""
    mods = args.modalities.split(",")
    cfg = load_config(
        None,
        [
            f"data.num_functions={args.num_functions}",
            f"data.num_train={args.num_train}",
            f"data.val_fraction={args.val_fraction}",
            f"data.num_points={args.num_points}",
            f"data.noise_std={args.noise_std}",
            f"data.synthetic_variant={args.variant}",
            f"data.modalities=[{','.join(mods)}]",
            f"data.seed={args.seed}",
        ],
    )
    build_synthetic_store(cfg, location, args.chunk)
    return {
        "signals": args.num_functions,
        "modalities": mods,
        "points": args.num_points,
        "variant": args.variant,
    }

"""Evaluate a finished run: the validation-selected checkpoint on the test (or val) split.

Writes ``results.md`` (paper-shaped tables per metric), ``results.csv``,
``metrics.json``, reconstruction plots per modality and, for MIA, the MSFT attention
heatmap, then logs them to the run's MLflow run. The validation report (the end of
``mia-inr train``) writes ``results_val.md``, ``results_val.csv``, ``metrics_val.json``
and ``figures_val/`` and logs ``val/...`` metrics (docs/splits.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mia_core.builders import build_learner
from mia_core.runtime import resolve_device, set_matmul_precision
from pipelines.data.episode_base import subtract_base
from pipelines.data.resolve import episode_spec, modality_dims, open_training_store
from pipelines.data.streams import store_episodes
from pipelines.engine.checkpoint import OTHER_MODEL_HINT, check_model_state, load_checkpoint
from pipelines.engine.run_dir import load_run_config, selected_checkpoint
from pipelines.engine.task import check_split, split_file
from pipelines.reports.evaluation import (
    EvalRow,
    console_table,
    evaluate,
    markdown_table,
    write_csv,
)
from pipelines.reports.mlflow_model import log_dataset, log_meta_model
from pipelines.reports.plots import plot_attention, plot_reconstruction
from pipelines.reports.residual_base import fit_residual_base
from pipelines.tracking.tracker import Tracker


def evaluate_run(
    run_dir: str | Path,
    repeats: int | None = None,
    log: Callable[[str], None] = print,
    track: bool = True,
    figures: bool = True,
    checkpoint: Path | None = None,
    split: str = "test",
) -> list[EvalRow]:
    """Evaluate ``run_dir``'s best checkpoint (else its last) on ``split``.

    Args:
        run_dir: a run directory with ``config.yaml`` and ``checkpoints/``.
        repeats: bootstrap factor; ``run.eval_repeats`` by default.
        log: line printer.
        track: log the outputs to the run's MLflow run.
        figures: draw the reconstruction / attention figures (seconds per run; the
            ablation study turns them off for its many small runs).
        checkpoint: evaluate this checkpoint instead (e.g. a ``run.snapshot_steps``
            snapshot) and only return its rows: the run's ``results.md``,
            ``metrics.json``, figures and MLflow run are left as they are.
        split: ``test`` (the final report) or ``val`` (files with a ``_val`` suffix,
            MLflow metrics under ``val/``).
    """
    check_split(split)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    device = resolve_device(cfg.run.device)
    set_matmul_precision(cfg.run.matmul_precision)
    store = open_training_store(cfg)
    learner = build_learner(cfg.model, cfg.method, modality_dims(store)).to(device)
    ckpt = selected_checkpoint(run_dir if checkpoint is None else checkpoint)
    state = load_checkpoint(ckpt, "cpu")  # load_state_dict moves it to the device
    check_model_state(learner, state.get("model"), f"checkpoint {ckpt}", OTHER_MODEL_HINT)
    learner.load_state_dict(state["model"])
    learner.eval()
    repeats = repeats or cfg.run.eval_repeats
    bins = [(float(lo), float(hi)) for lo, hi in cfg.run.eval_bins]
    base = fit_residual_base(cfg, store)
    rows = evaluate(
        learner,
        store,
        split,
        bins,
        repeats,
        cfg.run.eval_batch_size,
        cfg.run.seed + 2,
        device,
        cfg.data.psnr_range,
        cfg.data.spatial_stride,
        cfg.data.time_stride,
        cfg.run.eval_protocol,
        base=base,
    )
    nmse = markdown_table(rows, "nmse_all", 100.0)
    log(
        f"{split} split, {ckpt.name} of step {state['step']} "
        f"(normalised MSE x 1e2, {repeats} repeats, {cfg.run.eval_protocol} protocol):"
    )
    log(console_table(rows, "nmse_all", 100.0))  # every metric: the report files
    if checkpoint is not None:
        return rows
    names = {n: split_file(n, split) for n in ("results.md", "results.csv", "metrics.json")}
    (run_dir / names["results.md"]).write_text(
        f"# {cfg.run.name}: {split} split ({ckpt.name}, step {state['step']}, {repeats} repeats, "
        f"{cfg.run.eval_protocol} protocol)\n\n"
        f"Normalised MSE x 1e2\n\n{nmse}\n\nMSE\n\n{markdown_table(rows, 'mse_all')}\n\n"
        f"PSNR (dB)\n\n{markdown_table(rows, 'psnr_all')}\n"
    )
    write_csv(rows, run_dir / names["results.csv"])
    (run_dir / names["metrics.json"]).write_text(
        json.dumps(
            {
                "checkpoint": ckpt.name,
                "step": state["step"],
                "best_step": state["best_step"],
                "best_val_nmse": state["best_val"],
                "repeats": repeats,
                "eval_protocol": cfg.run.eval_protocol,
                "split": split,
                split: [  # an empty bin: NaN metrics (Python's json writes NaN), n_signals 0
                    {
                        "modality": r.modality,
                        "r_min": r.r_min,
                        "r_max": r.r_max,
                        **r.metrics,
                        "n_signals": r.count,
                        "units": r.units,  # of rmse_phys_*
                        "weighting": r.weighting,
                    }
                    for r in rows
                ],
            },
            indent=1,
        )
    )
    out = run_dir / split_file("figures", split)
    figures = _figures(learner, store, cfg, device, out, split, base) if figures else []
    if track:
        tracker = Tracker(cfg, run_dir)
        for r in rows:
            tag = f"{r.modality}_{r.r_min:g}-{r.r_max:g}"
            tracker.metrics(
                {f"{split}/{k}/{tag}": v for k, v in {**r.metrics, "n_signals": r.count}.items()},
                int(state["step"]),
            )
        for name in ("config.yaml", *names.values()):
            tracker.artifact(run_dir / name)
        tracker.artifact(run_dir / "checkpoints", "checkpoints")
        for f in figures:
            tracker.artifact(f, out.name)
        log_dataset(store)
        if cfg.run.log_model and base is not None:
            log(f"MLflow model not logged: it would lack data.residual_base {base.name!r}")
        elif cfg.run.log_model:
            log(f"MLflow model {log_meta_model(run_dir, ckpt, cfg, modality_dims(store), store)}")
        tracker.close()
        log(f"logged to MLflow run {tracker.run_id} at {tracker.display_uri}")
    return rows


def _figures(learner, store, cfg, device, out: Path, split: str, base=None) -> list[Path]:
    lo, hi = cfg.run.eval_bins[0]
    spec = episode_spec(cfg, store, seed_offset=3, ratio=(lo, hi))
    stream = store_episodes(store, spec, 4, split, 0, False, cfg.data.time_stride)
    episode = next(iter(stream), None)
    if episode is None:  # e.g. data.time_stride leaves no signal of the split to draw
        return []
    episode = {m: b.to(device) for m, b in episode.items()}
    seen, bases = episode, {}
    if base is not None:  # the INR adapts to y - base; the figure shows base + INR
        count = next(iter(episode.values())).batch_size
        seen, bases = subtract_base(episode, base, np.arange(count))
    with torch.enable_grad():
        params, auxs = learner.adapt(seen, create_graph=False, prune=False, track_graph=False)
    paths = []
    with torch.no_grad():
        for m, mb in episode.items():
            pred = learner.predict(m, mb.query_x, params)
            pred = pred + bases[m] if m in bases else pred
            shape = store.info[m].grid_shape
            if cfg.data.spatial_stride > 1:
                shape = tuple(len(range(0, n, cfg.data.spatial_stride)) for n in shape)
            paths.append(
                plot_reconstruction(
                    mb,
                    pred,
                    shape,
                    f"{cfg.run.name}: {m} (R in [{lo:g}, {hi:g}])",
                    out / f"reconstruction_{m}.png",
                )
            )
    maps = [a["msft_attention"][-1] for a in auxs if "msft_attention" in a]
    if maps:
        paths.append(plot_attention(maps, auxs[0]["msft_tokens"], out / "msft_attention.png"))
    return paths

"""MWT on Ray Train: ``run.num_workers`` data-parallel workers (``TorchTrainer``).

Every worker loads the (small, in-memory) labelled store itself and takes every
``world``-th image of each epoch's seeded permutation, so no Ray Data pipeline is
needed; gradients are averaged with one flat all-reduce per step (see
:class:`pipelines.tasks.mwt.MWTTrainer`). Rank 0 validates, writes ``best.pt``/``last.pt``
and reports ``last.pt`` to Ray Train, so ``FailureConfig(max_failures)`` restarts the
group from it; a new driver on the same run directory resumes from ``last.pt`` too.
The driver evaluates the selected checkpoint on the test split afterwards.
"""

from __future__ import annotations

from typing import Any

from mia_core.config import Config, config_from_dict, save_config
from pipelines.engine.loop import run_dir_of


def _mwt_worker(loop_config: dict[str, Any]) -> None:
    """Body of every Ray Train worker."""
    import ray.train
    import ray.train.torch as rtt
    import torch

    from mia_core.runtime import set_matmul_precision
    from pipelines.data.labelled_images import load_labelled
    from pipelines.engine.ray_train import report_to_ray, worker_resume_state
    from pipelines.tasks.mwt import mwt_loop
    from pipelines.tracking.tracker import Tracker

    cfg: Config = config_from_dict(loop_config["config"], "train_loop_config")
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    set_matmul_precision(cfg.run.matmul_precision)
    device = rtt.get_device()
    data = load_labelled(cfg)
    resume_state = worker_resume_state(device)
    report = report_to_ray
    tracker = Tracker(cfg, run_dir_of(cfg)) if rank == 0 else None
    try:
        mwt_loop(cfg, data, device, rank, report, resume_state, print, tracker)
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    if tracker is not None:
        tracker.close()


def run_mwt_ray(
    cfg: Config, address: str | None = None, resume: bool = True, evaluate_after: bool = True
):
    """Run MWT training for ``cfg`` on Ray Train; returns a :class:`pipelines.tasks.mwt.MWTResult`.

    Args:
        cfg: resolved config with ``method.name: mwt``.
        address: Ray cluster address (default: ``RAY_ADDRESS`` or a new local instance).
        resume: continue from the run directory's ``last.pt`` if present.
        evaluate_after: evaluate the selected checkpoint on the test split.
    """
    from pipelines.data.labelled_images import resolve_labelled_store
    from pipelines.engine.checkpoint import load_checkpoint
    from pipelines.engine.ray_train import _init_ray, fit_torch_trainer
    from pipelines.tasks.mwt import MWTResult, evaluate_mwt_run

    _init_ray(address)
    run_dir = run_dir_of(cfg)
    last = run_dir / "checkpoints" / "last.pt"
    if not resume and last.exists():
        last.unlink()
    resolve_labelled_store(cfg)  # build the digits store once, before the workers start
    save_config(cfg, run_dir / "config.yaml")
    fit_torch_trainer(cfg, _mwt_worker, run_dir)
    state = load_checkpoint(last)
    metrics = evaluate_mwt_run(run_dir) if evaluate_after else {}
    return MWTResult(
        run_dir,
        int(state["step"]),
        int(state["best_step"]),
        float(state["best_val"]),
        test_metrics=metrics,
    )

"""Meta-learning INRs of signal stores: CAVIA, MAML, MetaSGD, GAP, ALFA, MIA, Meta-INR.

The model is :func:`mia_core.builders.build_learner` for the store's modalities; a batch
is an episode (support / query points per modality) drawn from the store directly in one
process or from the worker's Ray Data shard on Ray Train (chunk-sharded reads, see
``pipelines.data.ray_source``). The loss is the learner's outer loss after its inner
loop; the statistics are the per-modality losses. Validation is the mean normalised MSE
on the validation split over the training support-ratio range; the evaluation report is
:func:`pipelines.reports.evaluate_run.evaluate_run` (paper-shaped tables per bin).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch

from mia_core.builders import build_learner
from mia_core.config import Config
from mia_core.data import Episode
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.prefetch import prefetch_episodes
from pipelines.data.ray_source import read_store
from pipelines.data.resolve import episode_spec, modality_dims, open_training_store
from pipelines.data.streams import dataset_episodes, store_episodes
from pipelines.engine.task import Task, WorkerContext
from pipelines.reports.evaluate_run import evaluate_run
from pipelines.reports.evaluation import evaluate, mean_metric
from pipelines.reports.residual_base import fit_residual_base


class MetaLearningTask(Task):
    """Optimisation-based meta-learning of INRs; see the module docstring."""

    nonfinite_hint = "Lower method.inner_lr or run.outer_lr."
    report = staticmethod(evaluate_run)

    def __init__(self, cfg: Config, ctx: WorkerContext) -> None:
        super().__init__(cfg, ctx)
        self.store = open_training_store(cfg)
        self.spec: EpisodeSpec = episode_spec(
            cfg,
            self.store,
            query_points=cfg.data.query_points,
            support_points=cfg.data.support_points,
        )
        self.spec.base = fit_residual_base(cfg, self.store)  # data.residual_base, or None
        self.model = build_learner(cfg.model, cfg.method, modality_dims(self.store)).to(ctx.device)

    @classmethod
    def prepare(cls, cfg: Config) -> None:
        """Resolve (and for the synthetic default, build) the store once."""
        open_training_store(cfg)

    @classmethod
    def ray_datasets(cls, cfg: Config, read_cpus: float) -> dict[str, Any]:
        """The training split as a Ray dataset, one read task per chunk range."""
        store = open_training_store(cfg)
        train = read_store(
            store.location,
            store.modalities,
            "train",
            cfg.data.time_stride,
            num_cpus=read_cpus,
            patch=tuple(cfg.data.patch),
            patch_coords=cfg.data.patch_coords,
        )
        return {"train": train}

    def batches(self, epoch: int, skip: int) -> Iterable[Episode]:
        """Episodes of this worker's signals (store order per epoch, or its Ray shard)."""
        cfg = self.cfg
        if self.ctx.shard is None:
            size, stride = cfg.run.batch_size, cfg.data.time_stride
            it = store_episodes(self.store, self.spec, size, "train", epoch, True, stride, skip)
        else:
            # Streaming shards have no stable order: skipping keeps the step count per epoch.
            it = dataset_episodes(
                self.ctx.shard, self.store, self.spec, cfg.run.batch_size, epoch, drop_last=True
            )
            it = itertools.islice(it, skip, None)
        # Built data.prefetch batches ahead on a thread, already on the device.
        return prefetch_episodes(it, self.ctx.device, cfg.data.prefetch)

    def loss(self, batch: Episode, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Outer loss of the episode batch; per-modality losses as ``loss/<modality>``."""
        episode = {m: b.to(self.ctx.device) for m, b in batch.items()}
        out = self.model(episode)
        return out.loss, {f"loss/{m}": v for m, v in out.losses.items()}

    def batch_size(self, batch: Episode) -> int:
        """Signals in the episode batch."""
        return next(iter(batch.values())).batch_size

    def validate(self) -> tuple[float, dict[str, float]]:
        """Mean normalised MSE on the validation split over the training ratio range."""
        cfg = self.cfg
        lo = min(r[0] for r in self.spec.ratio_ranges.values())
        hi = max(r[1] for r in self.spec.ratio_ranges.values())
        self.model.eval()
        rows = evaluate(
            self.model,
            self.store,
            "val",
            [(lo, hi)],
            1,
            cfg.run.eval_batch_size,
            cfg.run.seed + 1,
            self.ctx.device,
            cfg.data.psnr_range,
            cfg.data.spatial_stride,
            cfg.data.time_stride,
            base=self.spec.base,
        )
        self.model.train()
        nmse = mean_metric(rows, "nmse_all")
        return nmse, {"val_nmse": nmse}

    def describe(self) -> str:
        """Method, INR family, parameter count and store."""
        n = sum(p.numel() for p in self.model.parameters())
        missing = int((~self.store.valid).sum())
        skipped = f", {missing} signals with no finite value skipped" if missing else ""
        left = [v for v in getattr(self.store, "available", []) if v not in self.store.modalities]
        if left:  # a preset's data.modalities on a store with more variables: say so
            skipped += f", store variables {left} left out (not in data.modalities)"
        per_step = getattr(self.store, "per_step", 0)
        if per_step:
            skipped += f", patches {self.cfg.data.patch} ({per_step} per time step)"
        if self.spec.base is not None:
            skipped += f", learning the residual of {self.spec.base.label}"
        return (
            f"{self.cfg.method.name} on {self.cfg.model.family} ({n:,} meta-parameters), "
            f"store {self.store.location.display} modalities {self.store.modalities}{skipped}"
        )

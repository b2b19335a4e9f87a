"""Fit the base reconstruction a run's INR learns the residual of (``data.residual_base``).

The base is the study's own classical row (:func:`pipelines.reports.classical.fit_classical`:
``eof`` or ``mv_eof`` fitted on the train split, ``k`` chosen by validation nMSE with the
run's evaluation protocol and support-draw seed ``run.seed + 1``), so training, checkpoint
selection, the validation and test reports and a later ``mia-inr evaluate`` all refit the
same base from the store and the config: nothing but the config is saved.
"""

from __future__ import annotations

from collections.abc import Callable

from mia_core.config import Config
from pipelines.data.episode_base import SupportBase
from pipelines.data.stores import Store
from pipelines.reports.classical import EvalProtocol, fit_classical


def fit_residual_base(
    cfg: Config, store: Store, log: Callable[[str], None] | None = None
) -> SupportBase | None:
    """The fitted base of ``cfg.data.residual_base``, or ``None`` when it is ``none``.

    Raises:
        ConfigError: a store without shared coordinates, train or validation signals
            (one line naming the store, the variable and the base).
    """
    name = cfg.data.residual_base
    if name == "none":
        return None
    return fit_classical(store, [name], EvalProtocol.of(cfg), cfg.run.seed + 1, log=log)[name]


__all__ = ["fit_residual_base"]

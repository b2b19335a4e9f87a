"""The MLflow model *from code* that :func:`pipelines.reports.mlflow_model.log_meta_model` logs.

MLflow runs this file when the model is loaded (``mlflow.pyfunc.load_model``), so the
model is rebuilt from the project's code and its artifacts rather than unpickled. Its
codes are the code store's: one vector per signal over every modality (see
:mod:`pipelines.reports.mlflow_model`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from pipelines.reports.mlflow_model import adapt_and_predict, load_learner, meta_model_name


class MetaModelPyfunc(mlflow.pyfunc.PythonModel):
    """Adapt to each signal's support rows, predict its query rows (or encode / decode)."""

    def load_context(self, context: Any) -> None:
        """Rebuild the meta-learner from the checkpoint, config and dims artifacts."""
        self.learner, cfg = load_learner(context.artifacts)
        self.name = meta_model_name(context.artifacts, cfg)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """See :mod:`pipelines.reports.mlflow_model`.

        ``params["steps"]`` sets K (0: the model's); ``params["output"]``: ``predictions``
        (default) or ``codes`` (encode: one code-store vector per signal).
        """
        params = params or {}
        steps = int(params.get("steps") or 0)
        output = str(params.get("output") or "predictions")
        return adapt_and_predict(self.learner, model_input, steps or None, output, self.name)


mlflow.models.set_model(MetaModelPyfunc())

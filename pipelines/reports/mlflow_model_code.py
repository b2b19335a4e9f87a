"""The MLflow model *from code* that :func:`pipelines.reports.mlflow_model.log_meta_model` logs.

MLflow runs this file when the model is loaded (``mlflow.pyfunc.load_model``), so the
model is rebuilt from the project's code and its artifacts rather than unpickled. A model
of a field store (artifact ``geometry``) answers in physical terms
(:mod:`pipelines.reports.mlflow_physical`); others in the model's own frame, with the code
store's codes (see :mod:`pipelines.reports.mlflow_model`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from pipelines.reports.mlflow_geometry import Geometry
from pipelines.reports.mlflow_model import adapt_and_predict, load_learner, meta_model_name
from pipelines.reports.mlflow_physical import CodeTable, PhysicalModel


class MetaModelPyfunc(mlflow.pyfunc.PythonModel):
    """Physical values at physical points (field stores), or adapt / encode / decode."""

    def load_context(self, context: Any) -> None:
        """Rebuild the meta-learner from the checkpoint, config and dims artifacts."""
        artifacts = context.artifacts
        self.learner, cfg = load_learner(artifacts)
        self.name = meta_model_name(artifacts, cfg)
        self.physical = None
        if "geometry" in artifacts:
            codes = CodeTable.load(artifacts["codes"]) if "codes" in artifacts else None
            self.physical = PhysicalModel(self.learner, Geometry.load(artifacts["geometry"]), codes)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """See :mod:`pipelines.reports.mlflow_model`.

        ``params["steps"]`` sets K (0: the model's); without a geometry,
        ``params["output"]``: ``predictions`` (default) or ``codes`` (encode: one
        code-store vector per signal).
        """
        params = params or {}
        steps = int(params.get("steps") or 0)
        if self.physical is not None:
            return self.physical.predict(model_input, steps or None)
        output = str(params.get("output") or "predictions")
        return adapt_and_predict(self.learner, model_input, steps or None, output, self.name)


mlflow.models.set_model(MetaModelPyfunc())

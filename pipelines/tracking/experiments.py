"""MLflow experiments: find or create one, with artifacts beside a local store.

A local tracking store (sqlite or file) keeps its artifacts in ``<out_dir>/mlartifacts``
rather than in ``./mlruns`` of whatever directory the caller runs from. Creation tolerates
a concurrent creator (two trials or workers starting at once).
"""

from __future__ import annotations

from pathlib import Path

# MLflow 3's UI opens an experiment of this kind on its training-runs view (without it the
# UI guesses, and an empty or fresh experiment opens on the GenAI traces view).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def is_local_store(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine's disk (sqlite, file or a plain path)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def ensure_experiment(uri: str, name: str, out_dir: str | Path) -> str:
    """The id of experiment ``name`` at tracking URI ``uri``, created when missing.

    Args:
        uri: MLflow tracking URI.
        name: experiment name.
        out_dir: the run output root; a local store puts artifacts in ``out_dir/mlartifacts``.
    """
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if "mlflow.experimentKind" not in exp.tags:  # made before the tag existed
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_TAGS.items())))
        return exp.experiment_id
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    where = (out / "mlartifacts").as_uri() if is_local_store(uri) else None
    try:
        return client.create_experiment(name, artifact_location=where, tags=EXPERIMENT_TAGS)
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id

"""MLflow experiments made by the project open on MLflow 3's training-runs view."""

import mlflow

from pipelines.tracking.experiments import EXPERIMENT_TAGS, ensure_experiment


def test_experiments_are_marked_as_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp_id = ensure_experiment(uri, "fresh", tmp_path)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("old")  # made before the tag existed
    assert ensure_experiment(uri, "old", tmp_path) == old
    assert EXPERIMENT_TAGS.items() <= client.get_experiment(old).tags.items()

"""MLflow experiments made by the project open on MLflow 3's training-runs view."""

from pathlib import Path

import mlflow

from pipelines.tracking.experiments import EXPERIMENT_TAGS, announce_tracking, ensure_experiment


def test_experiments_are_marked_as_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp_id = ensure_experiment(uri, "fresh", tmp_path)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("old")  # made before the tag existed
    assert ensure_experiment(uri, "old", tmp_path) == old
    assert EXPERIMENT_TAGS.items() <= client.get_experiment(old).tags.items()


def _open_experiment(uri: str) -> str:
    return ensure_experiment(uri, "race", str(Path(uri.removeprefix("sqlite:///")).parent))


def test_processes_opening_a_fresh_sqlite_store_at_once_take_turns(tmp_path):
    # MLflow's schema migration run by two processes at once failed ("duplicate column
    # name", alembic "expected to match one row") without the init lock: 3 of 3 tries here
    import multiprocessing as mp

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_open_experiment, [uri] * 3)
    assert len(set(ids)) == 1


def test_tracking_uri_is_announced_once_per_process_without_credentials():
    lines: list[str] = []
    uri = "https://user:secret@mlflow.example.com/?token=abc"
    announce_tracking(uri, lines.append)
    announce_tracking(uri, lines.append)
    assert len(lines) == 1 and "secret" not in lines[0] and "abc" not in lines[0]
    assert "mlflow ui --backend-store-uri" in lines[0]

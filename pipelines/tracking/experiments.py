"""MLflow experiments: find or create one, with artifacts beside a local store.

A local tracking store (sqlite or file) keeps its artifacts in ``<out_dir>/mlartifacts``
rather than in ``./mlruns`` of whatever directory the caller runs from. Creation tolerates
a concurrent creator (two trials or workers starting at once), and two processes that open
a fresh sqlite store at once take turns (MLflow's schema migration is not safe to run
twice at the same time: the second failed with "duplicate column name"). The first time a
process uses a tracking URI it prints the URI and the ``mlflow ui`` command that browses it;
a tracking server that does not answer fails within ``MIA_CONNECT_TIMEOUT`` (``reach``).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipelines.data.stores.location import redact_url
from pipelines.tracking.reach import check_tracking

# MLflow 3's UI opens an experiment of this kind on its training-runs view (without it the
# UI guesses, and an empty or fresh experiment opens on the GenAI traces view).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def is_local_store(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine's disk (sqlite, file or a plain path)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


_ANNOUNCED: set[str] = set()


def announce_tracking(uri: str, log: Callable[[str], None] = print) -> None:
    """Print where MLflow runs go and how to browse them, once per process and URI."""
    shown = redact_url(uri)
    if shown not in _ANNOUNCED:
        _ANNOUNCED.add(shown)
        log(f"MLflow: {shown} (browse: mlflow ui --backend-store-uri {shown})")


@contextlib.contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a local sqlite store (no-op for other stores)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(unquote(urlparse(uri).path))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.init.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_experiment(uri: str, name: str, out_dir: str | Path) -> str:
    """The id of experiment ``name`` at tracking URI ``uri``, created when missing.

    Args:
        uri: MLflow tracking URI.
        name: experiment name.
        out_dir: the run output root; a local store puts artifacts in ``out_dir/mlartifacts``.
    """
    import mlflow

    announce_tracking(uri)
    check_tracking(uri)  # a server that does not answer: one line, not minutes of retries
    with _sqlite_init_lock(uri):
        return _ensure(mlflow.MlflowClient(uri), uri, name, out_dir)


def _ensure(client, uri: str, name: str, out_dir: str | Path) -> str:
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

"""MLflow experiments: find or create one, with artifacts beside a local store.

A local tracking store (sqlite or file) keeps its artifacts in ``mlartifacts`` next to it
(``runs/mlflow.db`` -> ``runs/mlartifacts``, :func:`artifact_root`), never in ``./mlruns``
of whatever directory the caller runs from (under Ray: a temporary copy of the working
directory, deleted when Ray stops). That holds for MLflow's own ``Default`` experiment
too: a fresh sqlite store is created with that artifact root. A database store used
directly (``postgresql://...``) keeps them in ``<out_dir>/mlartifacts``; a tracking
server decides itself. Every run-creating path goes through :func:`ensure_experiment`,
which also records the run's provenance (:mod:`pipelines.tracking.provenance`). Creation tolerates
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
from pipelines.tracking.provenance import install_run_context
from pipelines.tracking.reach import check_tracking

# MLflow 3's UI opens an experiment of this kind on its training-runs view (without it the
# UI guesses, and an empty or fresh experiment opens on the GenAI traces view).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


ARTIFACTS = "mlartifacts"
_DATABASES = ("postgresql", "mysql", "mssql", "sqlite")


def is_local_store(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine's disk (sqlite, file or a plain path)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _local_path(uri: str) -> Path | None:
    """The file (sqlite) or folder (file store) of a local tracking store."""
    if uri.startswith("sqlite:///"):  # sqlite:///rel.db, sqlite:////abs.db
        path = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
        return Path(path) if path and path != ":memory:" else None
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri) if "://" not in uri else None


def artifact_root(uri: str, out_dir: str | Path) -> str | None:
    """Where experiments of the store ``uri`` keep their artifacts (a ``file://`` URI).

    ``<store dir>/mlartifacts`` for a local store (sqlite file or file-store folder),
    ``<out_dir>/mlartifacts`` for a database used directly, ``None`` for a tracking
    server (its ``--artifacts-destination`` decides).
    """
    local = _local_path(uri)
    if local is not None:
        return (local.resolve().parent / ARTIFACTS).as_uri()
    if uri.split(":", 1)[0].split("+", 1)[0] in _DATABASES:
        return (Path(out_dir).resolve() / ARTIFACTS).as_uri()
    return None


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
    db = _local_path(uri) if uri.startswith("sqlite:///") else None
    if db is None:
        yield
        return
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
        out_dir: the run output root: where a database store's artifacts go
            (:func:`artifact_root`).
    """
    import mlflow

    announce_tracking(uri)
    install_run_context()
    check_tracking(uri)  # a server that does not answer: one line, not minutes of retries
    where = artifact_root(uri, out_dir)
    with _sqlite_init_lock(uri):
        _create_sqlite_store(uri, where)
        return _ensure(mlflow.MlflowClient(uri), name, where)


def _create_sqlite_store(uri: str, where: str | None) -> None:
    """Create a missing sqlite store with ``where`` as its ``Default`` experiment's root.

    MLflow would otherwise create it on first use with ``./mlruns`` of the current
    directory as that root. Call with the store's init lock held.
    """
    db = _local_path(uri) if uri.startswith("sqlite:") else None
    if db is None or where is None or (db.exists() and db.stat().st_size > 0):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore(uri, where)
    store.engine.dispose()


def _ensure(client, name: str, where: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if "mlflow.experimentKind" not in exp.tags:  # made before the tag existed
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_TAGS.items())))
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=where, tags=EXPERIMENT_TAGS)
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id

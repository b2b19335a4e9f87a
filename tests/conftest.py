"""Shared factories for the engine tests: tiny learners and synthetic episodes."""

import contextlib
import os
import shutil

import pytest
import torch

from mia_core.builders import build_learner
from mia_core.config import load_config
from mia_core.data import generate_synthetic1d, make_episode
from pipelines.cluster.local_run import moto_s3

# The tensors here are tiny: intra-op threads only add OpenMP spin-waiting, which turns
# into minutes when another process shares the two cores.
torch.set_num_threads(1)

# Ray Train's controller polls its worker group every 2 s, so every fit noticed its end (or
# a dead worker) up to 2 s late. Tests poll every 0.5 s; Ray Train hands the variable from
# the driver to its controller, and subprocesses (scripts, `ray start`) inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

TINY = [
    "model.width=16",
    "model.context_dim=16",
    "model.depth=3",
    "model.context_tokens=3",
    "model.context_init_std=0.5",
    "model.omega0=3.0",
    "method.inner_steps=2",
    "method.alfa_hidden=8",
    "method.sft.dim=8",
    "method.sft.mlp_dim=8",
    "method.sft.heads=2",
]


@contextlib.contextmanager
def default_dtype(dtype):
    """Build modules directly in ``dtype`` (no float32 rounding of their initial values)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _learner(
    method="cavia",
    family="composers",
    modalities=("sine", "tanh"),
    overrides=(),
    *,
    dtype=torch.float64,
    seed=0,
):
    cfg = load_config(None, [*TINY, f"method.name={method}", f"model.family={family}", *overrides])
    torch.manual_seed(seed)
    with default_dtype(dtype):
        return build_learner(cfg.model, cfg.method, {m: (1, 1) for m in modalities})


def _episode(
    batch=3,
    num_points=20,
    modalities=("sine", "tanh"),
    ratio=(0.2, 0.6),
    *,
    dtype=torch.float64,
    seed=0,
):
    signals = generate_synthetic1d(batch, num_points, modalities=tuple(modalities), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    episode = make_episode(signals, torch.arange(batch), {m: ratio for m in modalities}, gen)
    return {m: mb.to("cpu", dtype) for m, mb in episode.items()}


@pytest.fixture(autouse=True)
def _restore_matmul_precision():
    """Each test starts at the process's float32 matmul precision (``highest``).

    Training and encoding set ``run.matmul_precision`` (``medium`` by default) for the
    whole process; on AMX / AVX512-BF16 CPUs that means bf16 matmuls, which must not leak
    into the next test's exact comparisons.
    """
    previous = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(previous)


@pytest.fixture
def make_learner():
    """``make_learner(method, family, modalities, overrides, dtype=, seed=)``: tiny learner."""
    return _learner


@pytest.fixture
def make_ep():
    """``make_ep(batch, num_points, modalities, ratio, dtype=, seed=)``: synthetic episode."""
    return _episode


@pytest.fixture
def float64_default():
    """Run a test with float64 as the default dtype (restored afterwards)."""
    with default_dtype(torch.float64):
        yield


# --- shared services: one Ray instance and one S3 server per test session ---------------

S3_KEY, S3_SECRET = "testing-key-id", "testing-secret-value"
S3_CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """A local Ray instance shared by every test that needs one (2 CPUs, small store)."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    # The workers get the test S3 server's credentials from their node's environment,
    # as on a real cluster (exported before `ray start`), never through a runtime_env;
    # this process's environment is left as it was.
    saved = {k: os.environ.get(k) for k in S3_CREDENTIAL_ENV}
    os.environ.update(S3_CREDENTIAL_ENV)
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}},
        )
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's server mode) on 127.0.0.1:<free port>.

    Yields a dict with ``endpoint_url``, ``key``, ``secret`` and ``storage_options``
    (what fsspec/s3fs need), a boto3 ``client``, and ``make_bucket(name)`` (a bucket an
    earlier test of the session created is fine).
    """
    import boto3

    key, secret = S3_KEY, S3_SECRET
    with moto_s3("mia-test", credentials=(key, secret)) as env:
        endpoint = env["AWS_ENDPOINT_URL"]
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

        def make_bucket(name: str) -> None:
            try:
                client.create_bucket(Bucket=name)
            except client.exceptions.ClientError as err:
                if not err.response["Error"]["Code"].startswith("BucketAlready"):
                    raise

        yield {
            "endpoint_url": endpoint,
            "key": key,
            "secret": secret,
            "storage_options": {"key": key, "secret": secret, "endpoint_url": endpoint},
            "client": client,
            "make_bucket": make_bucket,
        }


# --- MLflow: a fresh sqlite store costs seconds of schema migrations (fsyncs) ----------------


@pytest.fixture(scope="session")
def mlflow_schema(tmp_path_factory):
    """An MLflow sqlite file with every table and migration but no experiment (made once)."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    path = tmp_path_factory.mktemp("mlflow-schema") / "mlflow.db"
    engine = create_sqlalchemy_engine(f"sqlite:///{path}")
    _initialize_tables(engine)
    engine.dispose()
    return path


@pytest.fixture
def mlflow_db(tmp_path, mlflow_schema):
    """``tmp_path/mlflow.db`` (the store of ``run.out_dir=tmp_path``) with its schema in place.

    What MLflow writes into a new store only after migrating it (the default experiment,
    the runs) is still written by the code under test; only the migrations are skipped.
    """
    shutil.copyfile(mlflow_schema, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"

"""Credentials inside URLs are stripped before anything is forwarded, saved or logged.

``AWS_ENDPOINT_URL`` / ``MLFLOW_TRACKING_URI`` with user info never reach Ray's runtime_env
(Ray shows it in ``ray list ... --detail``, ``/api/jobs/`` and its logs); a password in
``data.endpoint_url`` or ``run.tracking_uri`` never reaches ``config.yaml`` or MLflow params.
"""

from __future__ import annotations

import json
import uuid

import mlflow
import pytest
import yaml

from mia_core.config import Config, flatten_config, load_config, save_config
from mia_core.config.secrets import redact, redact_url, url_has_credentials
from pipelines.cluster import connect
from pipelines.cluster.connect import forwarded_env
from pipelines.data.stores.location import StoreLocation
from pipelines.data.stores.location import redact_url as location_redact_url
from pipelines.tracking.tracker import Tracker

PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://user:{PASSWORD}@127.0.0.1:9000", "http://***@127.0.0.1:9000"),
        (f"https://u:{PASSWORD}@x@host/p?a=1", "https://***@host/p?a=***"),
        (f"https://host/x?token={PASSWORD}&v=2#frag", "https://host/x?token=***&v=***"),
        (f"s3://bucket/k?{PASSWORD}", "s3://bucket/k?***"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("/data/a?b.zarr", "/data/a?b.zarr"),  # a local path is not a URL
    ],
)
def test_one_url_redaction_for_the_whole_project(url, shown):
    assert redact_url(url) == shown
    assert url_has_credentials(url) == (url != shown)
    assert location_redact_url is redact_url  # stores print URLs with the same function
    assert PASSWORD not in str(StoreLocation(url))


def test_saved_config_and_mlflow_params_hold_no_url_password(tmp_path):
    endpoint = f"http://minio:{PASSWORD}@127.0.0.1:9000"
    cfg = load_config(
        None,
        [
            f"data.endpoint_url={endpoint}",
            f"run.out_dir={tmp_path}",
            f"run.tracking_uri=sqlite:///{tmp_path}/mlflow.db?password={PASSWORD}",
        ],
    )
    assert cfg.data.endpoint_url == endpoint  # the run itself still uses it
    text = save_config(cfg, tmp_path / "config.yaml").read_text()
    assert PASSWORD not in text
    assert yaml.safe_load(text)["data"]["endpoint_url"] == "http://***@127.0.0.1:9000"
    assert PASSWORD not in json.dumps(flatten_config(cfg))
    assert PASSWORD not in json.dumps(redact({"nested": [{"url": endpoint}]}))
    # real MLflow (sqlite): the logged params carry no password
    cfg = load_config(
        None, [f"data.endpoint_url={endpoint}", f"run.out_dir={tmp_path}", "run.name=leak"]
    )
    tracker = Tracker(cfg, tmp_path / "leak")
    tracker.close()
    run = mlflow.MlflowClient(tracker.uri).get_run(tracker.run_id)
    assert run.data.params["data.endpoint_url"] == "http://***@127.0.0.1:9000"
    assert PASSWORD not in json.dumps(run.data.params)


def test_endpoint_url_with_password_is_not_forwarded_to_ray(monkeypatch):
    import ray

    endpoint = f"http://minio:{PASSWORD}@127.0.0.1:9000"
    env = forwarded_env({"AWS_ENDPOINT_URL": endpoint})
    assert "AWS_ENDPOINT_URL" not in env and PASSWORD not in json.dumps(env)
    assert env["RAY_AUTH_MODE"] == "disabled"  # the defaults still go (log levels too)
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://u:{PASSWORD}@mlflow.example.com")
    with pytest.warns(UserWarning, match="not forwarded") as warned:
        connect.init_ray(log=lambda line: None)
    text = " ".join(str(w.message) for w in warned)
    assert "AWS_ENDPOINT_URL (http://***@127.0.0.1:9000)" in text and "nodes' environment" in text
    assert "MLFLOW_TRACKING_URI" in text and PASSWORD not in text
    (kwargs,) = calls
    assert "AWS_ENDPOINT_URL" not in kwargs["runtime_env"]["env_vars"]
    assert PASSWORD not in json.dumps(kwargs)
    assert Config().data.endpoint_url == ""  # nothing to strip by default


def test_a_saved_tracking_uri_still_reaches_the_server(tmp_path, monkeypatch):
    """Evaluation after training reads config.yaml back: the redacted URI means the real one."""
    from pipelines.tracking.tracker import tracking_uri

    uri = f"https://u:{PASSWORD}@mlflow.example.com"
    cfg = load_config(None, [f"run.tracking_uri={uri}"])
    assert tracking_uri(cfg) == uri
    saved = load_config(save_config(cfg, tmp_path / "config.yaml"))
    assert saved.run.tracking_uri == "https://***@mlflow.example.com"
    assert tracking_uri(saved) == uri  # the one used in this process
    other = f"https://v:{PASSWORD}@other.example.com"  # another process: from the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert (
        tracking_uri(load_config(None, ["run.tracking_uri=https://***@other.example.com"])) == other
    )


def test_error_lines_hide_credentials_of_any_url_they_quote(capsys):
    from mia_core.config import ConfigError
    from ray_jobs.common import run_main

    def fail(_args):
        raise ConfigError('cannot reach "http://user:hunter2@127.0.0.1:9/b" (refused)')

    assert run_main(fail, []) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "http://***@127.0.0.1:9/b" in err

"""The run's checkpoint as an MLflow model: registry, pyfunc predictions, encode --model."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from test_encode import encode, meta_run, options  # noqa: F401  (meta_run: fixture)

from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.writer import ModalityData, write_signal_store
from pipelines.reports.mlflow_model import adapt_and_predict, code_layout, store_digest

NAME = "mia-inr-meta_inr_gray_scott"  # run.registered_model's default for that run


def tracking(run: dict) -> str:
    return f"sqlite:///{(run['root'] / 'runs' / 'mlflow.db').resolve()}"


def test_the_evaluated_run_is_a_registered_pyfunc_that_adapts_to_support_points(meta_run):  # noqa: F811
    uri = tracking(meta_run)
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version(NAME, "1")
    run = client.get_run(version.run_id)
    assert run.info.run_name == "meta_inr_gray_scott"
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "fields.zarr"
    store = open_store(make_location(meta_run["store"]))
    assert inputs[0].dataset.digest == store_digest(store)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    assert model.metadata.signature is not None
    # a test-split field: support on every 2nd point, queries on all of them
    values = store.read(10, 11)["t2m"][0]
    coords = store.info["t2m"].coords
    support = (coords[::2].reshape(-1).tolist(), values[::2].reshape(-1).tolist())
    frame = pd.DataFrame(
        [(0, "t2m", "support", *support), (0, "t2m", "query", coords.reshape(-1).tolist(), [])],
        columns=["signal", "modality", "role", "x", "y"],
    )
    out = model.predict(frame, params={"steps": 8})
    assert list(out.columns) == ["signal", "modality", "prediction"] and len(out) == 1
    pred = np.asarray(out["prediction"][0]).reshape(values.shape)
    start = model.predict(frame.assign(role="query").iloc[1:], params={"steps": 8})
    unadapted = np.asarray(start["prediction"][0]).reshape(values.shape)
    err = lambda p: float(np.mean((p - values) ** 2))  # noqa: E731
    assert err(pred) < err(unadapted)  # the support points were used
    with pytest.raises(ValueError, match="unknown modalities"):
        adapt_and_predict(model.unwrap_python_model().learner, frame.assign(modality="q"))


def test_the_registered_model_encodes_and_decodes(meta_run):  # noqa: F811
    mlflow.set_tracking_uri(tracking(meta_run))
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    store = open_store(make_location(meta_run["store"]))
    values = store.read(10, 11)["t2m"][0]
    coords = store.info["t2m"].coords.reshape(-1).tolist()
    field = (0, "t2m", "support", coords, values.reshape(-1).tolist())
    query = (0, "t2m", "query", coords, [])
    columns = ["signal", "modality", "role", "x", "y"]
    # encode: the adapted tensors (Meta-INR: the SIREN's weights) of the field
    codes = model.predict(pd.DataFrame([field], columns=columns), params={"output": "codes"})
    assert list(codes.columns) == ["signal", "modality", "code"] and len(codes) == 1
    code = list(codes["code"][0])
    learner = model.unwrap_python_model().learner
    assert len(code) == sum(int(np.prod(s)) for _, s in code_layout(learner)["t2m"])
    # decode: the code alone predicts what adapting to the field predicts
    decoded = model.predict(pd.DataFrame([(0, "t2m", "code", [], code), query], columns=columns))
    adapted = model.predict(pd.DataFrame([field, query], columns=columns))
    np.testing.assert_allclose(decoded["prediction"][0], adapted["prediction"][0], atol=1e-5)
    with pytest.raises(ValueError, match="a code has"):
        adapt_and_predict(
            learner, pd.DataFrame([(0, "t2m", "code", [], code[:-1])], columns=columns)
        )


def test_encode_takes_a_registered_model_uri(meta_run, tmp_path):  # noqa: F811
    uri = tracking(meta_run)
    by_model = dict(checkpoint="", tracking_uri=uri, steps=3)
    spec = options(meta_run, tmp_path / "codes.zarr", model=f"models:/{NAME}/1", **by_model)
    assert encode(spec).done == 12
    bad = options(meta_run, tmp_path / "x.zarr", model="models:/nope/1", **by_model)
    with pytest.raises(EncodeError, match="models:/nope/1 not found"):
        encode(bad)


def test_store_digest_follows_the_content_not_only_the_layout(tmp_path):
    values = np.random.default_rng(0).normal(size=(40, 3, 4, 1)).astype(np.float32)

    def digest(name, v):
        loc = make_location(str(tmp_path / name))
        split = np.zeros(40, np.int8)
        write_signal_store(loc, {"g": ModalityData(v, normalisation="none")}, split)
        return store_digest(open_store(loc))

    same = digest("a.zarr", values)
    assert digest("b.zarr", values) == same  # the path is not part of the content
    changed = values.copy()
    changed[-1, 0, 0, 0] += 1.0  # the last signal is always sampled
    assert digest("c.zarr", changed) != same

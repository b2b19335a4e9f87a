"""The run's checkpoint as an MLflow model: registry, pyfunc predictions, encode --model.

The pyfunc's codes are the code store's (one vector per signal, ``code_layout`` order):
encoding through it gives the vectors ``mia-inr encode`` writes, and ``read_codes`` rows
(float32 or entropy coded) decode through it to what the code store's ``Decoder`` gives.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import zarr
from test_encode import CHUNK, encode, meta_run, options  # noqa: F401  (meta_run: fixture)

from mia_core.meta.codes import CodeLayoutError, code_layout
from pipelines.codecs.codestore import read_codes
from pipelines.codecs.decode import Decoder
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.reader import grid_coords
from pipelines.data.stores.writer import ModalityData, invert_norm, write_signal_store
from pipelines.reports.mlflow_model import adapt_and_predict, store_digest

NAME = "mia-inr-meta_inr_gray_scott"  # run.registered_model's default for that run
COLUMNS = ["signal", "modality", "role", "x", "y"]
K = 3  # inner steps of the pyfunc and the encoder alike


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
    # encode: one code-store vector for the signal (Meta-INR: its SIREN's weight deltas)
    codes = model.predict(pd.DataFrame([field], columns=COLUMNS), params={"output": "codes"})
    assert list(codes.columns) == ["signal", "code"] and len(codes) == 1
    code = list(codes["code"][0])
    learner = model.unwrap_python_model().learner
    assert len(code) == code_layout(learner).dim and np.abs(code).max() > 0
    # decode: the code alone predicts what adapting to the field predicts
    decoded = model.predict(pd.DataFrame([(0, "", "code", [], code), query], columns=COLUMNS))
    adapted = model.predict(pd.DataFrame([field, query], columns=COLUMNS))
    np.testing.assert_allclose(decoded["prediction"][0], adapted["prediction"][0], atol=1e-5)
    with pytest.raises(CodeLayoutError, match="1 code and 1 support rows"):
        model.predict(pd.DataFrame([(0, "", "code", [], code), field], columns=COLUMNS))


def _fields(run: dict, steps: range) -> tuple[np.ndarray, list]:
    store = open_store(make_location(run["store"]))
    values = store.read(steps.start, steps.stop)["t2m"]
    return values, store.info["t2m"].coords.reshape(-1).tolist()


def _decode_rows(codes: np.ndarray, grid: tuple[int, ...]) -> pd.DataFrame:
    """A code row and a query row on the whole grid per time step."""
    x = grid_coords(grid).reshape(-1).tolist()
    rows = []
    for t, code in enumerate(codes):
        rows += [(t, "", "code", [], code.tolist()), (t, "t2m", "query", x, [])]
    return pd.DataFrame(rows, columns=COLUMNS)


def _decoded_like_the_decoder(model, out, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pyfunc's and the Decoder's fields of a code store's first ``n`` steps (physical)."""
    group = zarr.open_group(str(out), mode="r")
    info = group.attrs["mia_codes"]["variable_info"]["t2m"]
    grid = tuple(info["grid_shape"])
    pred = model.predict(_decode_rows(read_codes(group, np.arange(n)), grid))
    fields = np.stack([np.asarray(p).reshape(*grid, -1) for p in pred["prediction"]])
    ours = invert_norm(fields.astype(np.float64), info["norm"])[..., 0]
    ds = Decoder(make_location(str(out))).decode(list(range(n)))
    return ours, ds["t2m"].values


def test_pyfunc_codes_are_the_code_store_s_both_ways(meta_run, tmp_path):  # noqa: F811
    mlflow.set_tracking_uri(tracking(meta_run))
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    out = tmp_path / "codes.zarr"
    # the encoder's fit is the inner loop when it uses the rule, K and every point
    encode(options(meta_run, out, optimizer="rule", steps=K, time_range=[0, CHUNK]))
    group = zarr.open_group(str(out), mode="r")
    stored = read_codes(group, np.arange(CHUNK))
    values, coords = _fields(meta_run, range(0, CHUNK))
    frame = pd.DataFrame(
        [(t, "t2m", "support", coords, values[t].reshape(-1).tolist()) for t in range(CHUNK)],
        columns=COLUMNS,
    )
    codes = model.predict(frame, params={"output": "codes", "steps": K})
    ours = np.stack([np.asarray(c) for c in codes["code"]])
    assert ours.shape == stored.shape and np.abs(stored).max() > 1e-3
    np.testing.assert_allclose(ours, stored, atol=1e-5, rtol=1e-4)  # batched vs one by one
    # the code store's vectors decode through the pyfunc to the Decoder's fields
    pyfunc_fields, decoder_fields = _decoded_like_the_decoder(model, out, CHUNK)
    np.testing.assert_allclose(pyfunc_fields, decoder_fields, rtol=0, atol=1e-4)
    # an entropy-coded store (6 bits per code value) decodes alike: its own codes
    coded = tmp_path / "entropy.zarr"
    encode(options(meta_run, coded, optimizer="rule", steps=K, time_range=[0, CHUNK], code_bits=6))
    assert zarr.open_group(str(coded), mode="r").attrs["mia_codes"]["code_bits"] == 6
    six_bit, decoder_six_bit = _decoded_like_the_decoder(model, coded, CHUNK)
    np.testing.assert_allclose(six_bit, decoder_six_bit, rtol=0, atol=1e-4)
    assert np.abs(six_bit - pyfunc_fields).max() > 1e-4  # quantised codes, other fields
    # a code of another length: one line naming the expected length and the meta-model
    short = _decode_rows(
        stored[:1, :-1], tuple(group.attrs["mia_codes"]["variable_info"]["t2m"]["grid_shape"])
    )
    with pytest.raises(CodeLayoutError) as err:
        model.predict(short)
    msg = str(err.value)
    dim, sha = group.attrs["mia_codes"]["code_dim"], group.attrs["mia_codes"]["meta_sha256"]
    assert "\n" not in msg and f"has {dim - 1} values" in msg and f"expects {dim}" in msg
    assert "meta_inr_gray_scott" in msg and sha[:12] in msg


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

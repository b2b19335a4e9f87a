"""The run's checkpoint as an MLflow model: registry, physical answers, codes, encode --model.

A field-store run's model takes times, latitudes and longitudes and returns kelvin: the
same numbers as redoing the scaling and the normalisation by hand around the model's own
frame, and, from a code store's codes, the same fields as the code store's ``Decoder``.
The model's own frame (``adapt_and_predict``) encodes the vectors ``mia-inr encode``
writes.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import zarr
from test_encode import CHUNK, NLAT, NLON, encode, meta_run, options  # noqa: F401  (fixture)

from mia_core.config import load_config
from mia_core.meta.codes import CodeLayoutError, code_layout
from pipelines.codecs.codestore import read_codes
from pipelines.codecs.decode import Decoder
from pipelines.codecs.meta_model import EncodeError
from pipelines.data.resolve import modality_dims
from pipelines.data.stores import make_location, open_store
from pipelines.data.stores.writer import ModalityData, invert_norm, write_signal_store
from pipelines.engine.run_dir import selected_checkpoint
from pipelines.reports.mlflow_geometry import ModelInputError
from pipelines.reports.mlflow_model import (
    adapt_and_predict,
    field_geometry,
    log_meta_model,
    store_digest,
)
from pipelines.reports.mlflow_physical import CodeTable
from pipelines.tracking.tracker import set_fluent_tracking_uri

NAME = "mia-inr-meta_inr_gray_scott"  # run.registered_model's default for that run
COLUMNS = ["signal", "modality", "role", "x", "y"]
K = 3  # inner steps of the encoder (the model's own K is 2)
START = pd.Timestamp("2020-01-01T00:00")  # tiny_fields: 6-hourly from here
LAT, LON = np.linspace(20.0, 60.0, NLAT), np.linspace(0.0, 90.0, NLON)


def tracking(run: dict) -> str:
    return f"sqlite:///{(run['root'] / 'runs' / 'mlflow.db').resolve()}"


def registered(run: dict, name: str = NAME):
    set_fluent_tracking_uri(tracking(run))
    return mlflow.pyfunc.load_model(f"models:/{name}@selected")


def grid_rows(steps, lon_shift: float = 0.0) -> pd.DataFrame:
    """Every grid point of each time step (latitude ascending), in physical terms."""
    la, lo = np.meshgrid(LAT, LON + lon_shift, indexing="ij")
    times = [START + pd.Timedelta(hours=6 * t) for t in steps]
    return pd.DataFrame(
        {
            "time": np.repeat(np.array(times, "datetime64[ns]"), la.size),
            "latitude": np.tile(la.reshape(-1), len(times)),
            "longitude": np.tile(lo.reshape(-1), len(times)),
        }
    )


def test_the_evaluated_run_answers_in_kelvin_at_latitudes_longitudes_and_times(meta_run):  # noqa: F811
    uri = tracking(meta_run)
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version(NAME, "1")
    assert str(client.get_model_version_by_alias(NAME, "selected").version) == "1"
    run = client.get_run(version.run_id)
    assert run.info.run_name == "meta_inr_gray_scott"
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "fields.zarr"
    store = open_store(make_location(meta_run["store"]))
    assert inputs[0].dataset.digest == store_digest(store)
    model = registered(meta_run)
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["time", "latitude", "longitude"]
    assert [c.type.name for c in sig.inputs.inputs] == ["datetime", "double", "double"]
    assert sig.outputs.input_names() == ["t2m"]
    assert model.metadata.metadata["variables"]["t2m"]["units"] == "K"
    # time step 10 (test split) on the whole grid, longitudes asked as -360..-270
    out = model.predict(grid_rows([10], lon_shift=-360.0))
    assert list(out.columns) == ["t2m"] and len(out) == NLAT * NLON
    # by hand: the model's own frame, adapted to the stored (normalised) field, un-normalised
    values, info = store.read(10, 11)["t2m"][0], store.info["t2m"]
    field = (0, "t2m", "support", info.coords.reshape(-1).tolist(), values.reshape(-1).tolist())
    frame = pd.DataFrame([field, (0, "t2m", "query", field[3], [])], columns=COLUMNS)
    pred = adapt_and_predict(model.unwrap_python_model().learner, frame)["prediction"][0]
    by_hand = invert_norm(np.asarray(pred).reshape(-1, 1), info.norm)[:, 0]
    np.testing.assert_allclose(out["t2m"], by_hand, rtol=1e-5)
    assert 250 < out["t2m"].mean() < 310  # kelvin, not normalised values
    # the same point in either longitude convention, between grid lines too
    both = pd.DataFrame({"time": [START] * 2, "latitude": [45.0] * 2, "longitude": [20.0, -340.0]})
    a, b = model.predict(both)["t2m"]
    assert a == pytest.approx(b, abs=1e-6)


def test_what_the_model_cannot_answer_is_one_line(meta_run):  # noqa: F811
    model = registered(meta_run)
    point = pd.DataFrame({"time": [START], "latitude": [45.0], "longitude": [20.0]})
    cases = [
        (point.assign(latitude=80.0), "latitude 80 is outside the model's grid, 20 to 60"),
        (point.assign(longitude=200.0), "longitude 200 is outside the model's grid, 0 to 90"),
        (point.assign(time=pd.Timestamp("2021-01-01")), "it has 12 time steps from 2020-01-01T"),
    ]
    for frame, message in cases:
        with pytest.raises(ModelInputError) as err:
            model.predict(frame)
        assert message in str(err.value) and "\n" not in str(err.value)
    # MLflow drops columns its signature lacks (with a warning); the model itself refuses
    with pytest.raises(ModelInputError, match="have no levels; drop the 'level' column"):
        model.unwrap_python_model().physical.predict(point.assign(level=850.0))


def _log_with_codes(run: dict, codes: CodeTable, name: str) -> str:
    run_dir = run["run_dir"]
    cfg = load_config(run_dir / "config.yaml", [f"run.registered_model={name}"])
    set_fluent_tracking_uri(tracking(run))
    store = open_store(make_location(run["store"]))
    with mlflow.start_run(run_name="codes"):
        dims = modality_dims(store)
        return log_meta_model(run_dir, selected_checkpoint(run_dir), cfg, dims, store, codes)


def test_a_model_holding_a_code_store_s_codes_decodes_like_the_decoder(meta_run, tmp_path):  # noqa: F811
    out = tmp_path / "codes.zarr"
    # the encoder's fit is the model's inner loop with the rule, K steps and every point
    encode(options(meta_run, out, optimizer="rule", steps=K, time_range=[0, CHUNK]))
    group = zarr.open_group(str(out), mode="r")
    table = CodeTable(np.arange(CHUNK), read_codes(group, np.arange(CHUNK)))
    assert _log_with_codes(meta_run, table, "from-codes") == "models:/from-codes/1"
    model = registered(meta_run, "from-codes")
    assert "code table of 4 time steps" in model.metadata.metadata["codes"]
    decoded = model.predict(grid_rows(range(CHUNK)))["t2m"].to_numpy()
    truth = Decoder(make_location(str(out))).decode(list(range(CHUNK)))["t2m"].values
    np.testing.assert_allclose(decoded.reshape(truth.shape), truth, rtol=0, atol=1e-3)
    # the registered run's model computes the same codes itself (steps=K as the encoder)
    own = registered(meta_run).predict(grid_rows(range(CHUNK)), params={"steps": K})
    np.testing.assert_allclose(own["t2m"], decoded, rtol=0, atol=1e-3)
    later = grid_rows([CHUNK]).iloc[:1]
    with pytest.raises(ModelInputError) as err:
        model.predict(later)
    assert str(err.value) == (
        "time 2020-01-02T00:00:00 has no code in this model; it holds codes of 4 time steps "
        "from 2020-01-01T00:00:00 to 2020-01-01T18:00:00"
    )
    short = CodeTable(table.signals, table.codes[:, :-1])
    with pytest.raises(CodeLayoutError, match=f"expects {table.codes.shape[1]}"):
        _log_with_codes(meta_run, short, "short-codes")


def test_the_model_s_own_frame_adapts_encodes_and_decodes(meta_run):  # noqa: F811
    learner = registered(meta_run).unwrap_python_model().learner
    store = open_store(make_location(meta_run["store"]))
    values = store.read(10, 11)["t2m"][0]
    coords = store.info["t2m"].coords
    support = (coords[::2].reshape(-1).tolist(), values[::2].reshape(-1).tolist())
    query = (0, "t2m", "query", coords.reshape(-1).tolist(), [])
    frame = pd.DataFrame([(0, "t2m", "support", *support), query], columns=COLUMNS)
    pred = np.asarray(adapt_and_predict(learner, frame, steps=8)["prediction"][0])
    start = adapt_and_predict(learner, frame.iloc[1:], steps=8)["prediction"][0]
    err = lambda p: float(np.mean((np.reshape(p, values.shape) - values) ** 2))  # noqa: E731
    assert err(pred) < err(start)  # the support points were used
    field = (0, "t2m", "support", query[3], values.reshape(-1).tolist())
    codes = adapt_and_predict(learner, pd.DataFrame([field], columns=COLUMNS), output="codes")
    code = list(codes["code"][0])
    assert len(code) == code_layout(learner).dim and np.abs(code).max() > 0
    decoded = adapt_and_predict(
        learner, pd.DataFrame([(0, "", "code", [], code), query], columns=COLUMNS)
    )
    adapted = adapt_and_predict(learner, pd.DataFrame([field, query], columns=COLUMNS))
    np.testing.assert_allclose(decoded["prediction"][0], adapted["prediction"][0], atol=1e-5)
    with pytest.raises(CodeLayoutError, match="1 code and 1 support rows"):
        adapt_and_predict(
            learner, pd.DataFrame([(0, "", "code", [], code), field], columns=COLUMNS)
        )
    with pytest.raises(ValueError, match="unknown modalities"):
        adapt_and_predict(learner, frame.assign(modality="q"))


def test_encode_takes_a_registered_model_uri(meta_run, tmp_path):  # noqa: F811
    uri = tracking(meta_run)
    by_model = dict(checkpoint="", tracking_uri=uri, steps=3)
    spec = options(meta_run, tmp_path / "codes.zarr", model=f"models:/{NAME}/1", **by_model)
    assert encode(spec).done == 12
    bad = options(meta_run, tmp_path / "x.zarr", model="models:/nope/1", **by_model)
    with pytest.raises(EncodeError, match="models:/nope/1 not found"):
        encode(bad)


def _signal_store(tmp_path, name: str, values: np.ndarray):
    loc = make_location(str(tmp_path / name))
    split = np.zeros(len(values), np.int8)
    write_signal_store(loc, {"g": ModalityData(values, normalisation="none")}, split)
    return open_store(loc)


def test_store_digest_follows_the_content_not_only_the_layout(tmp_path):
    values = np.random.default_rng(0).normal(size=(40, 3, 4, 1)).astype(np.float32)
    same = store_digest(_signal_store(tmp_path, "a.zarr", values))
    assert store_digest(_signal_store(tmp_path, "b.zarr", values)) == same  # not the path
    changed = values.copy()
    changed[-1, 0, 0, 0] += 1.0  # the last signal is always sampled
    assert store_digest(_signal_store(tmp_path, "c.zarr", changed)) != same
    # a signal store has no physical geometry: its model keeps the model's own frame
    cfg = load_config("configs/experiments/default.yaml")
    assert field_geometry(_signal_store(tmp_path, "d.zarr", values), cfg) is None

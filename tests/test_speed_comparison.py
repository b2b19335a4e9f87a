"""The encode report's speed comparison: four rows, test steps only, lr grids that grow."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import zarr
from test_encode import T, encode, meta_run, options, tiny_fields  # noqa: F401  (fixture)

from pipelines.codecs.comparison import ROWS, compare_fits, select_frames, speed_at
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encoder import open_field_store
from pipelines.codecs.evaluation import _speed_lines
from pipelines.codecs.fitting import fit_batch
from pipelines.codecs.meta_model import EncodeError, batch_tensors, field_metrics
from pipelines.codecs.report import ReportSpec, run_report
from pipelines.codecs.speed_rows import FitCurve, best_fit, sweep_lrs
from pipelines.data.stores import make_location
from pipelines.data.stores.field_writer import split_by_time, write_field_store

ISSUE_KEYS = {"psnr_db", "encoder_cold_s", "encoder_warm_s", "baseline_cold_s", "baseline_warm_s"}


@pytest.fixture(scope="module")
def coded(meta_run, tmp_path_factory):  # noqa: F811
    """A code store of every time step of the tiny store (its test split: steps 10, 11)."""
    codes = tmp_path_factory.mktemp("speed") / "codes.zarr"
    encode(options(meta_run, codes, steps=10))
    meta = Decoder(make_location(str(codes))).model
    store = open_field_store(make_location(meta_run["store"]), ["t2m"])
    return {**meta_run, "codes": codes, "meta": meta, "fields": store}


def test_every_step_tracking_is_the_psnr_of_each_steps_weights(coded):
    meta, store = coded["meta"], coded["fields"]
    coords = {"t2m": torch.from_numpy(store.info["t2m"].coords)}
    values, valid = batch_tensors({"t2m": store.read(3, 5)["t2m"]})

    def fit(steps, **kw):
        return fit_batch(meta.learner, coords, values, valid, steps, 3e-3, "adam", **kw)

    for points in (0, 30):  # every point (read off the loss) / sampled (a full pass)
        track = fit(4, points_per_step=points, track_every=1).trajectory
        assert [k for k, _, _ in track] == [0, 1, 2, 3, 4]
        for k, _, db in track:  # the weights after k steps, scored at full resolution
            params = fit(k, points_per_step=points).params
            want = field_metrics(meta.learner, coords, values, valid, params)[1].nanmean(1)
            np.testing.assert_allclose(db, want.numpy(), atol=1e-3)
    # a target stops the fit as soon as it is checked (every step)
    low = fit(50, target_psnr=torch.full((2,), -100.0), eval_every=1)
    assert low.steps <= 2 and low.steps_to_target == [1, 1]


def test_four_rows_on_test_steps_only_with_the_results_speed_entry(coded):
    group = zarr.open_group(str(coded["codes"]), mode="r")
    store = coded["fields"]
    frames = select_frames(group, store, 8)
    assert frames and set(frames) <= set(np.flatnonzero(np.asarray(store.split) == 2))
    torch.manual_seed(0)
    cmp = compare_fits(
        coded["meta"], store, group, frames, targets=(12.0, 16.0), max_steps=30
    )  # fmt: skip
    assert cmp.split == "test" and cmp.eval_every == 1
    for t in cmp.targets:
        assert list(t.rows) == list(ROWS)
        assert all(0.0 <= r.reached <= 1.0 for r in t.rows.values())
        assert set(t.best_lr_interior) == {"baseline_cold", "baseline_warm"}
    # the warm encoder starts where the stored code of t - 1 is: never worse than cold
    cold, warm = cmp.encoder_cold.curve[0][1], cmp.encoder_warm.curve[0][1]
    assert warm > cold + 1.0, (cold, warm)
    speed = speed_at(cmp, 16.0)
    assert ISSUE_KEYS | {"best_lr_interior"} <= set(speed)
    assert speed["best_lr_interior"] == all(cmp.targets[1].best_lr_interior.values())
    row = cmp.targets[1].rows["baseline_warm"]
    assert speed["baseline_warm_s"] == row.seconds or math.isnan(row.seconds)
    # the report's JSON gives the same entry; an uncompared target is refused in one line
    as_json = json.loads(json.dumps(dataclasses.asdict(cmp), default=float))
    assert json.dumps(speed_at(as_json, 16.0)) == json.dumps(speed)
    with pytest.raises(EncodeError, match=r"^speed: 30 dB is not a compared target") as err:
        speed_at(cmp, 30.0)
    assert "\n" not in str(err.value)


def test_a_grid_of_tiny_rates_grows_and_says_when_the_cap_stopped_it(coded):
    group = zarr.open_group(str(coded["codes"]), mode="r")
    frames = select_frames(group, coded["fields"], 1)
    cmp = compare_fits(
        coded["meta"], coded["fields"], group, frames, lrs=(1e-6, 3e-6), targets=(60.0,),
        max_steps=10, max_extensions=2,
    )  # fmt: skip
    # no rate reaches 60 dB; the highest final PSNR is the largest rate's: the grid grows
    assert cmp.baseline_cold.lrs == pytest.approx([1e-6, 3e-6, 9e-6, 2.7e-5])
    assert cmp.baseline_cold.cap_hit and not cmp.targets[0].best_lr_interior["baseline_cold"]
    assert not speed_at(cmp, 60.0)["best_lr_interior"]
    text = "\n".join(_speed_lines(dataclasses.asdict(cmp)))
    assert "baseline cold lr grid: 1e-06, 3e-06, 9e-06, 2.7e-05; CAP HIT" in text


def synthetic(optimum: float):
    """A fit whose steps to 30 dB grow with the distance (in decades) from ``optimum``."""

    def fit_at(lr: float) -> FitCurve:
        steps = int(10 + 100 * abs(math.log10(lr / optimum)))
        return FitCurve(f"lr={lr:g}", lr, 0.01, [], {30.0: [steps, steps + 1]}, 1000, 31.0)

    return fit_at


def test_sweeps_extend_towards_the_optimum_until_it_is_bracketed():
    up = sweep_lrs("up", synthetic(1e-2), (1e-4, 3e-4, 1e-3), [30.0])
    assert up.lrs == pytest.approx([1e-4, 3e-4, 1e-3, 3e-3, 9e-3, 2.7e-2])
    assert not up.cap_hit and best_fit(up.fits, 30.0).lr == pytest.approx(9e-3)
    down = sweep_lrs("down", synthetic(2e-5), (1e-4, 3e-4, 1e-3), [30.0])
    assert down.lrs[0] == pytest.approx(1e-4 / 9) and down.extensions == 2
    capped = sweep_lrs("far", synthetic(1.0), (1e-4, 3e-4), [30.0], max_extensions=3)
    assert capped.extensions == 3 and capped.cap_hit
    # every rate equally fast (e.g. all already there at the warm start): no extension
    flat = [FitCurve(f"{v}", v, 0.01, [], {30.0: [0, 0]}, 100, 40.0) for v in (1.0, 2.0, 3.0)]
    assert best_fit(flat, 30.0).lr == 2.0
    same = sweep_lrs("flat", lambda lr: flat[[1.0, 2.0, 3.0].index(lr)], (1.0, 2.0, 3.0), [30.0])
    assert same.extensions == 0 and not same.cap_hit


def test_stores_without_test_steps_are_refused_in_one_line(coded, tmp_path):
    no_test = tmp_path / "no_test.zarr"
    split = split_by_time(T, 0.2, 0.0)
    write_field_store(tiny_fields(), make_location(str(no_test)), chunk_time=4, split=split)
    spec = ReportSpec(str(coded["codes"]), store=str(no_test), out_dir=str(tmp_path / "r"))
    with pytest.raises(EncodeError, match="no test time steps.*--test-fraction") as err:
        run_report(spec, log=lambda _s: None)
    assert "\n" not in str(err.value)
    # test steps exist but were not encoded (nor the steps before them)
    early = tmp_path / "early.zarr"
    encode(options(coded, early, steps=2, time_range=[0, 4]))
    group = zarr.open_group(str(early), mode="r")
    with pytest.raises(EncodeError, match="no test time step .* encoded"):
        select_frames(group, coded["fields"], 4)

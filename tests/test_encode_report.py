"""``mia-inr encode report`` (time-to-equal-PSNR, ZFP / SZ3) and warm starts in time."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import zarr
from test_encode import encode, meta_run, options  # noqa: F401  (meta_run: fixture)

from mia_core.meta.codes import params_to_codes
from pipelines.codecs.codestore import pending_units
from pipelines.codecs.codestore_lock import acquire_lock, release_lock
from pipelines.codecs.comparison import FitCurve, Sweep, warm_init
from pipelines.codecs.compressors import FieldSet, rate_distortion
from pipelines.codecs.decode import Decoder
from pipelines.codecs.encoder import open_field_store, runs_of, unit_batches
from pipelines.codecs.fitting import FitResult, fit_batch, fit_encoder
from pipelines.codecs.meta_model import batch_tensors
from pipelines.codecs.report import RESULT_KEYS, ReportSpec, readme_block, run_report
from pipelines.codecs.speed_rows import at_target
from pipelines.data.stores import StoreError, make_location
from pipelines.reports.readme_blocks import markers
from ray_jobs.encode import PAGE
from ray_jobs.encode import main as encode_main


def test_first_reaching_reads_each_signal_off_the_trajectory():
    track = [(0, 0.0, [10, 31]), (2, 0.5, [29, 33]), (4, 1.0, [36, 36])]
    fit = FitResult({}, 4, 1.0, trajectory=track)
    steps, secs = fit.first_reaching(30.0)
    assert steps.tolist() == [4, 0] and secs.tolist() == [1.0, 0.0]
    assert fit.first_reaching(40.0)[0].tolist() == [-1, -1]


def curve(label, sps, steps_to, max_steps=100, lr=1e-3):
    return FitCurve(label, lr, sps, [], {30.0: steps_to}, max_steps, 20.0)


def sweep(*fits):
    return Sweep("s", [f.lr for f in fits], list(fits), 0, False)


def test_speedups_pick_the_fastest_baseline_and_flag_lower_bounds():
    enc = curve("encoder", 0.01, [4, 8, -1, 0], max_steps=16, lr=math.nan)
    warm = curve("encoder", 0.01, [0, 1, 1, 2], max_steps=16, lr=math.nan)
    slow = curve("adam lr=0.0003", 0.01, [-1, -1, -1, -1], lr=3e-4)
    mid = curve("adam lr=0.001", 0.02, [40, 80, 90, 20], lr=1e-3)
    fast = curve("adam lr=0.003", 0.02, [50, -1, 95, 30], lr=3e-3)
    r = at_target(30.0, enc, warm, sweep(slow, mid, fast), sweep(slow, mid), 4, 100.0)
    rows = r.rows
    assert rows["baseline_cold"].label == "adam lr=0.001" and rows["encoder_cold"].reached == 0.75
    # medians over all four time steps, a miss counting never, step 0 one step
    assert rows["encoder_cold"].steps == pytest.approx(6.0)  # (4, 8)
    assert rows["encoder_warm"].steps == pytest.approx(1.0)
    assert rows["baseline_cold"].seconds == pytest.approx(60 * 0.02 / 4)
    assert r.speedup_cold == pytest.approx(60 * 0.02 / (6 * 0.01)) and not r.lower_bound_cold
    assert r.best_lr_interior == {"baseline_cold": True, "baseline_warm": False}
    warm_gain = (60 * 0.02 - 1 * 0.01) / 4
    assert r.break_even_frames == math.ceil(100.0 / min(warm_gain, (1.2 - 0.06) / 4))
    capped = at_target(30.0, enc, warm, sweep(slow), sweep(slow), 4, math.nan)
    assert math.isnan(capped.rows["baseline_cold"].seconds) and capped.lower_bound_cold
    assert capped.speedup_cold == pytest.approx(100 / 6)  # the budget: a lower bound
    assert math.isnan(capped.break_even_frames)
    miss = curve("encoder", 0.01, [-1, -1, -1, 3])
    never = at_target(30.0, miss, miss, sweep(mid), sweep(mid), 4, 1.0)
    assert math.isnan(never.rows["encoder_cold"].seconds) and math.isnan(never.speedup_warm)
    assert not never.lower_bound_cold


def test_compressors_reach_the_psnr_they_are_credited_with():
    t = np.linspace(0, 6, 4)[:, None, None, None]
    y, x = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 20), indexing="ij")
    fields = np.sin(3 * x + t) * np.cos(2 * y)  # (4, 1, 24, 20)
    fields[1] = np.nan  # a frame without data is not compressed or scored
    fs = FieldSet({"a": fields}, 2.0)
    assert len(fs.arrays) == 3
    for name in ("zfp", "sz3"):
        rd = rate_distortion(fs, name, [25.0, 40.0])
        assert rd.at_psnr[25.0] >= rd.at_psnr[40.0] > 1.0
        # bisection only adds bounds: never worse than the sweep's best reaching point
        for target in (25.0, 40.0):
            sweep = max(r for _, p, r in rd.curve if p >= target)
            assert rd.at_psnr[target] >= sweep
        psnrs = [p for _, p, _ in rd.curve]
        assert max(psnrs) > 60 and min(psnrs) < 25


def test_report_on_a_code_store_writes_json_markdown_figures_and_results(
    meta_run,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    codes = tmp_path / "codes.zarr"
    encode(options(meta_run, codes, steps=20, points_per_step=40))
    results = tmp_path / "encode.json"
    spec = ReportSpec(
        str(codes), out_dir=str(tmp_path / "report"), frames=3, targets=(12.0, 18.0),
        headline_db=18.0, max_steps=40, results_json=str(results), name="tiny",
    )  # fmt: skip
    torch.manual_seed(0)
    rep = run_report(spec, log=lambda _s: None)
    cmp = rep["comparison"]
    assert cmp["split"] == "test" and cmp["frames"] == [10, 11]  # the tiny store's test steps
    assert cmp["pretrain_seconds"] > 0  # the checkpoint's training wall time
    assert {3e-4, 1e-3, 3e-3} <= set(cmp["baseline_cold"]["lrs"])
    assert len(cmp["encoder_cold"]["curve"]) == 21  # step 0 .. K
    assert {r["name"] for r in rep["rate_distortion"]} == {"zfp", "sz3"}
    for f in rep["figures"]:
        assert (tmp_path / "report" / f.split("/")[-1]).stat().st_size > 1000
    md = (tmp_path / "report" / "report.md").read_text()
    assert "speedup warm/warm" in md and "baseline cold lr grid" in md and "ZFP" in md
    entry = json.loads(results.read_text())["datasets"][0]
    assert list(entry)[: len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert entry["name"] == "tiny" and entry["grid"] == [8, 10] and entry["frames"] == 2
    assert entry["speed"]["psnr_db"] == 18.0 and "baseline_warm_s" in entry["speed"]
    block = readme_block({"datasets": [entry]}, "x.json")
    assert "| tiny | 8x10 x 1 | 2 |" in block
    # one column per target, each cell "cold / warm" speedups
    for t in entry["targets"]:
        assert f" {t['psnr_db']:g} dB: speedup cold / warm |" in block
    old = {**entry, "name": "old", "targets": [{"target_db": 12.0, "speedup_time": 2.0}]}
    both = readme_block({"datasets": [entry, old]}, "x.json")  # written before "speed"
    assert "| old | 8x10 x 1 | 2 | - | - |" in both
    # the command: a second report replaces the entry; --readme fills only its block
    begin, end = markers("encode")
    page = tmp_path / PAGE  # docs/encoding.md, relative to the working directory
    page.parent.mkdir(parents=True)
    page.write_text(f"top\n{begin}\nold\n{end}\nbottom\n")
    monkeypatch.chdir(tmp_path)
    argv = ["report", "--codes", str(codes), "--frames", "1", "--targets", "12",
            "--headline", "12", "--max-steps", "20", "--results", str(results),
            "--name", "tiny", "--readme"]  # fmt: skip
    assert encode_main(argv) == 0
    data = json.loads(results.read_text())
    assert [d["name"] for d in data["datasets"]] == ["tiny"] and data["datasets"][0]["frames"] == 1
    text = page.read_text()
    assert text.startswith("top\n") and text.endswith("bottom\n") and "| tiny |" in text


def test_unit_batches_cover_every_step_once_with_warm_chains():
    assert unit_batches(5, 2, 0) == [([0, 1], False), ([2, 3], False), ([4], False)]
    chains = unit_batches(7, 0, 3)
    assert chains == [([0, 3, 6], False), ([1, 4], True), ([2, 5], True)]
    assert sorted(i for idx, _ in chains for i in idx) == list(range(7))


def test_warm_started_chains_continue_from_the_previous_steps_weights(
    meta_run,  # noqa: F811
    tmp_path,
):
    codes = tmp_path / "chained.zarr"
    encode(options(meta_run, codes, steps=5, chain_length=2, time_range=[0, 4]))
    group = zarr.open_group(str(codes), mode="r")
    assert dict(group.attrs["mia_codes"])["encoder"]["chain_length"] == 2
    meta = Decoder(make_location(str(codes))).model
    store = open_field_store(make_location(meta_run["store"]), ["t2m"])
    coords = {"t2m": torch.from_numpy(store.info["t2m"].coords)}

    def fit(i, init=None):
        values, valid = batch_tensors({"t2m": store.read(i, i + 1)["t2m"]})
        return fit_batch(meta.learner, coords, values, valid, 5, 1e-2, "adam", init=init)

    # per-signal Adam on every point: a batch's fits are independent of its other rows
    cold = fit(0).params
    want = params_to_codes(meta.learner, fit(1, cold).params).numpy()
    got = np.asarray(group["codes"][1:2])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    cold_code = params_to_codes(meta.learner, fit(1).params).numpy()
    assert np.abs(got - cold_code).max() > 1e-4  # not simply a cold start
    # the report's encoder-warm start: every step from the step before's stored code,
    # chain or not; step 0 (nothing before it) from the meta-learned initialisation
    init = warm_init(meta, group, [1, 2, 0])
    np.testing.assert_allclose(
        params_to_codes(meta.learner, {k: v[:2] for k, v in init.items()}).numpy(),
        np.asarray(group["codes"][0:2]), rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    start = meta.learner.initial_params(1)
    assert all(torch.equal(init[k][2], start[k][0]) for k in start)


def test_one_unit_per_chunk_and_a_second_encoder_is_refused(meta_run, tmp_path):  # noqa: F811
    done = np.zeros(12, bool)
    done[[2, 5]] = True  # holes inside chunks: still one unit (one writer) per chunk
    assert pending_units(done, 4, 0, 12) == [(0, 4), (4, 8), (8, 12)]
    assert runs_of(~done[:4]) == [(0, 2), (3, 4)]
    out = tmp_path / "codes.zarr"
    encode(options(meta_run, out, steps=2, time_range=[0, 4]))
    group = zarr.open_group(str(out), mode="r+")
    assert group.attrs["mia_lock"] == {}  # released at the end
    token = acquire_lock(group, make_location(str(out)))  # as if another job were running
    with pytest.raises(StoreError, match="another encoder is writing"):
        encode(options(meta_run, out, steps=2))
    release_lock(group, token)
    s = encode(options(meta_run, out, steps=2))
    assert (s.skipped, s.encoded) == (4, 8)


def test_adam_continuation_refines_the_rule_steps_and_the_report_counts_it(
    meta_run,  # noqa: F811
    tmp_path,
):
    """K rule steps, then adam_steps Adam steps from there: codes, metrics and curve."""
    plain, more = tmp_path / "plain.zarr", tmp_path / "more.zarr"
    kw = dict(optimizer="rule", steps=2, time_range=[0, 4])
    s0 = encode(options(meta_run, plain, **kw))
    s1 = encode(options(meta_run, more, adam_steps=30, adam_lr=3e-3, **kw))
    assert s1.psnr["mean"] > s0.psnr["mean"] + 1.0, (s0.psnr, s1.psnr)
    enc = dict(zarr.open_group(str(more), mode="r").attrs["mia_codes"])["encoder"]
    assert (enc["adam_steps"], enc["adam_lr"]) == (30, 3e-3)
    meta = Decoder(make_location(str(more))).model
    store = open_field_store(make_location(meta_run["store"]), ["t2m"])
    coords = {"t2m": torch.from_numpy(store.info["t2m"].coords)}
    values, valid = batch_tensors({"t2m": store.read(0, 2)["t2m"]})
    fit = fit_encoder(meta.learner, coords, values, valid, enc, track_every=1)
    assert fit.steps == 32 and [k for k, _, _ in fit.trajectory] == list(range(33))
    seconds = [s for _, s, _ in fit.trajectory]
    assert seconds == sorted(seconds)  # the clock runs on across the two phases
    rule_only = fit_encoder(meta.learner, coords, values, valid, {**enc, "adam_steps": 0})
    assert rule_only.steps == 2
    for key, v in rule_only.params.items():  # the continuation starts where K ended
        start = fit_batch(meta.learner, coords, values, valid, 2, 0.0, "rule").params[key]
        torch.testing.assert_close(v, start)

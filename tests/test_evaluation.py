"""Meta-test evaluation protocols: per-signal binning by realised ratio, joint bins, counts."""

import csv
import math

import numpy as np
import pytest
import torch

from mia_core.config import load_config
from pipelines.data.episodes import EpisodeSpec
from pipelines.data.resolve import build_synthetic_store, resolve_store
from pipelines.data.stores import make_location, open_store
from pipelines.data.streams import _episode_from_columns, modality_scales, store_episodes
from pipelines.reports.evaluation import (
    METRICS,
    bin_members,
    console_table,
    evaluate,
    markdown_table,
    mean_metric,
    realised_ratio,
    write_csv,
)

BINS = [(0.01, 0.02), (0.02, 0.05), (0.05, 0.1)]
MODS = ("sine", "tanh")


def _store(tmp_path, num_points=200, variant="paper", num_functions=40, num_train=20):
    cfg = load_config(
        None,
        [
            f"data.num_functions={num_functions}",
            f"data.num_train={num_train}",
            f"data.num_points={num_points}",
            f"data.modalities=[{','.join(MODS)}]",
            f"data.synthetic_variant={variant}",
        ],
    )
    loc = make_location(str(tmp_path / f"{variant}-{num_points}.zarr"))
    build_synthetic_store(cfg, loc, chunk=16)
    return open_store(loc, list(MODS))


class RatioLearner:
    """Stands in for a MetaLearner: every metric of a signal is its own realised ratio."""

    modalities = list(MODS)

    def __init__(self):
        self.seen: dict[str, list[torch.Tensor]] = {m: [] for m in MODS}

    def evaluate(self, episode, data_range=1.0):
        out = {}
        for m in self.modalities:
            r = realised_ratio(episode[m])
            self.seen[m].append(r)
            out[m] = {k: r.float() for k in METRICS}
        return out, {}


def _run(store, learner, bins=BINS, repeats=2, protocol="paper", batch_size=7, seed=5):
    return evaluate(
        learner, store, "test", bins, repeats, batch_size, seed, torch.device("cpu"),
        protocol=protocol,
    )  # fmt: skip


# --- binning ---------------------------------------------------------------------------------


def _bins_of(ratio, bins=BINS):
    return [row.nonzero().flatten().tolist() for row in bin_members(ratio, bins)]


def test_bin_members_by_hand():
    # 200 points: k support points give ratio k / 200. Closed bins as in the official code:
    # an edge (k = 4: 0.02, k = 10: 0.05) counts in both neighbours; rounding just outside
    # the range goes to the nearest end bin.
    ratio = torch.tensor([2, 3, 4, 9, 10, 20, 21, 1], dtype=torch.float64) / 200
    assert _bins_of(ratio) == [[0], [0], [0, 1], [1], [1, 2], [2], [2], [0]]
    # float32 ratios on an edge too
    assert _bins_of(torch.tensor([4 / 200], dtype=torch.float32)) == [[0, 1]]
    # a gap between bins belongs to none
    gap = [(0.01, 0.02), (0.05, 0.1)]
    assert _bins_of(torch.tensor([0.03, 0.015, 0.07]), gap) == [[], [0], [1]]
    # one degenerate bin (full support)
    assert _bins_of(torch.tensor([1.0]), [(1.0, 1.0)]) == [[0]]


def test_paper_protocol_bins_each_signal_by_its_own_ratio(tmp_path):
    store = _store(tmp_path)
    learner = RatioLearner()
    rows = _run(store, learner, repeats=3)
    n_test = int((store.split == 2).sum())
    # recompute by hand from the ratios the learner saw
    for m in MODS:
        seen = torch.cat(learner.seen[m]).double()
        assert seen.numel() == 3 * n_test
        assert seen.min() >= 0.01 - 1e-9 and seen.max() <= 0.1 + 1e-9  # the full range
        for lo, hi in BINS:
            row = next(r for r in rows if r.modality == m and r.r_min == lo)
            k = (seen * 200).round()  # support sizes; the bin holds lo * 200 <= k <= hi * 200
            mine = seen[(k >= round(lo * 200)) & (k <= round(hi * 200))]
            assert row.count == mine.numel() > 0
            assert row.metrics["nmse_all"] == pytest.approx(float(mine.mean()), rel=1e-6)
            assert lo - 1e-6 <= row.metrics["nmse_all"] <= hi + 1e-6
        # every draw counts once, plus once more on a shared edge (k = 4 or 10)
        on_edge = int(torch.isin((seen * 200).round(), torch.tensor([4.0, 10.0])).sum())
        assert sum(r.count for r in rows if r.modality == m) == 3 * n_test + on_edge


def test_paper_protocol_draws_modalities_independently(tmp_path):
    store = _store(tmp_path, num_functions=220, num_train=20)  # 200 test signals
    learner = RatioLearner()
    _run(store, learner, repeats=2, batch_size=50)
    a, b = (torch.cat(learner.seen[m]).double() for m in MODS)
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.2
    in_a, in_b = bin_members(a, BINS), bin_members(b, BINS)
    assert (in_a != in_b).any(1).float().mean() > 0.3
    # the lowest bin of one modality sees every bin of the other
    assert in_b[in_a[:, 0]].any(0).tolist() == [True, True, True]
    # joint: every signal of a pass counts in the pass's bin, both modalities drawn there
    joint = RatioLearner()
    rows = _run(store, joint, repeats=1, batch_size=50, protocol="joint")
    assert all(r.count == 200 for r in rows)
    ja, jb = (torch.cat(joint.seen[m]).double() for m in MODS)
    for b, (lo, hi) in enumerate(BINS):
        part = slice(200 * b, 200 * (b + 1))
        for r in (ja[part], jb[part]):  # realised k / 200, k = round(R * 200)
            assert r.min() >= lo - 0.5 / 200 - 1e-9 and r.max() <= hi + 0.5 / 200 + 1e-9


def test_empty_bin_is_nan_with_zero_count(tmp_path):
    # 10 points: k = max(1, round(R * 10)) = 1 for every R in [0.01, 0.1] -> ratio 0.1
    store = _store(tmp_path, num_points=10)
    bins = [(0.01, 0.05), (0.05, 0.1)]
    rows = _run(store, RatioLearner(), bins=bins)
    for r in rows:
        if r.r_min == 0.01:
            assert r.count == 0 and all(math.isnan(v) for v in r.metrics.values())
        else:
            assert r.count == 2 * int((store.split == 2).sum())
            assert r.metrics["nmse_all"] == pytest.approx(0.1)
    assert mean_metric(rows, "nmse_all") == pytest.approx(0.1)
    table = markdown_table(rows)  # a table per region, then the draws: modality rows, bin columns
    blocks = [b.splitlines() for b in table.split("\n\n")]
    assert [b[0] for b in blocks] == [
        "| nmse all | [0.01, 0.05] | [0.05, 0.1] |",
        "| nmse support | [0.01, 0.05] | [0.05, 0.1] |",
        "| nmse nonsupport | [0.01, 0.05] | [0.05, 0.1] |",
        "| rmse all (uniform weights) | [0.01, 0.05] | [0.05, 0.1] |",
        "| rmse support (uniform weights) | [0.01, 0.05] | [0.05, 0.1] |",
        "| rmse nonsupport (uniform weights) | [0.01, 0.05] | [0.05, 0.1] |",
        "| signals | [0.01, 0.05] | [0.05, 0.1] |",
    ]
    n = 2 * int((store.split == 2).sum())
    mods = list(dict.fromkeys(r.modality for r in rows))
    assert blocks[-1][2:] == [f"| {m} | 0 | {n} |" for m in mods]
    assert blocks[0][2:] == [f"| {m} | nan | 0.1 |" for m in mods]
    console = console_table(rows).splitlines()  # the printed one: nmse all x 100
    assert console[0] == blocks[0][0] and console[2:] == [f"| {m} | nan | 10 |" for m in mods]
    write_csv(rows, tmp_path / "r.csv")
    lines = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert lines[0]["n_signals"] == "0" and lines[0]["nmse_all"] == "nan"


# --- joint protocol and validation: today's numbers ------------------------------------------


def _reference_joint(learner, store, bins, repeats, batch_size, seed):
    """The evaluation loop before the paper protocol existed (joint bins), verbatim logic."""
    out = {}
    for b, (lo, hi) in enumerate(bins):
        spec = EpisodeSpec({m: (lo, hi) for m in store.modalities}, seed + 7919 * b)
        sums = {m: {k: [] for k in METRICS} for m in learner.modalities}
        for r in range(repeats):
            for ep in store_episodes(store, spec, batch_size, "test", epoch=r, shuffle=False):
                metrics, _ = learner.evaluate(ep, 1.0)
                for m, md in metrics.items():
                    for k in METRICS:
                        sums[m][k].append(md[k].detach())
        for m in learner.modalities:
            for k in METRICS:
                v = torch.cat(sums[m][k])
                v = v[~torch.isnan(v)]
                out[b, m, k] = float(v.mean()) if v.numel() else math.nan
    return out


def test_joint_protocol_reproduces_the_earlier_numbers(tmp_path, make_learner):
    store = _store(tmp_path, num_points=50, num_functions=16, num_train=10)
    learner = make_learner("cavia", modalities=MODS, dtype=torch.float32).eval()
    rows = _run(store, learner, repeats=2, protocol="joint", batch_size=4)
    ref = _reference_joint(learner, store, BINS, 2, 4, 5)
    for r in rows:
        b = BINS.index((r.r_min, r.r_max))
        assert r.count == 2 * 6
        for k in METRICS:
            assert r.metrics[k] == ref[b, r.modality, k] or (
                math.isnan(r.metrics[k]) and math.isnan(ref[b, r.modality, k])
            )
    # validation (one bin over the training range): paper == joint, same score
    one = [(0.01, 0.1)]
    paper = _run(store, learner, bins=one, repeats=1, batch_size=4)
    joint = _run(store, learner, bins=one, repeats=1, batch_size=4, protocol="joint")
    assert [r.metrics for r in paper] == [r.metrics for r in joint]
    assert mean_metric(paper, "nmse_all") == mean_metric(joint, "nmse_all")


def test_unknown_protocol_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown eval protocol"):
        _run(_store(tmp_path, num_points=10), RatioLearner(), protocol="bins")


# --- per-modality scales through the store ----------------------------------------------------


def test_paper_store_carries_per_modality_scales(tmp_path):
    store = _store(tmp_path, num_points=20)
    scales = modality_scales(store)
    assert not np.array_equal(scales["sine"], scales["tanh"])
    assert np.abs(scales["sine"] - store.scale).max() < 0.15  # jitter around the shared a
    spec_eps = next(
        store_episodes(store, _spec(), 8, "test", shuffle=False)  # first 8 test signals
    )
    idx = np.flatnonzero(store.split == 2)[:8]
    for m in MODS:
        np.testing.assert_array_equal(spec_eps[m].scale.numpy(), scales[m][idx])
    # the Ray path (columns of a read task) looks the scales up by global signal index
    rows = store.read(0, 16)
    cols = {"index": np.arange(16), "scale": store.scale[:16]}
    cols.update({f"m:{m}": rows[m] for m in MODS})
    ep = _episode_from_columns(cols, store, _spec(), 0, scales)
    for m in MODS:
        np.testing.assert_array_equal(ep[m].scale.numpy(), scales[m][:16])
    shared = _store(tmp_path, num_points=20, variant="shared")
    s = modality_scales(shared)
    assert np.array_equal(s["sine"], shared.scale) and np.array_equal(s["tanh"], shared.scale)


def test_store_digest_keeps_shared_and_separates_paper(tmp_path):
    base = [f"run.out_dir={tmp_path}", "data.num_functions=12", "data.num_train=8"]
    paths = {}
    for v in ("paper", "shared"):
        cfg = load_config(None, [*base, f"data.synthetic_variant={v}", "data.num_points=8"])
        paths[v] = resolve_store(cfg).display
    assert paths["paper"] != paths["shared"]


def _spec():
    return EpisodeSpec({m: (0.1, 0.5) for m in MODS}, seed=1)

"""MCL-NF: FIM weights, routing, modules, no revisiting, sequence runs, continual encoding."""

import json

import pytest
import torch
from store_samples import air_field_store

from mia_core.builders import build_learner
from mia_core.config import load_config
from mia_core.inr import Siren
from mia_core.mcl import (
    AxisPartition,
    FIMLearner,
    ModularINR,
    TaskSequence,
    TaskStream,
    fim_weights,
    grid_task_sequence,
    update_fisher,
)
from mia_core.mcl.build import build_sequence_learner
from mia_core.mcl.fim import EPS
from mia_core.meta.learner import MetaLearner
from pipelines.data.stores.reader import grid_coords

TINY = ["model.family=siren", "model.width=16", "model.depth=2", "model.omega0=10.0"]


def _seq(batch=2, shape=(8, 8), tasks=4, kind="spatial", seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.from_numpy(grid_coords(shape)).double()
    if kind == "temporal":
        vals = torch.rand(batch, tasks, coords.shape[0], 1, generator=g, dtype=torch.float64)
    else:
        vals = torch.rand(batch, coords.shape[0], 1, generator=g, dtype=torch.float64)
    return grid_task_sequence(vals, coords, kind, tasks, 1)


def _learner(method, seq, extra=()):
    cfg = load_config(None, [*TINY, f"method.name={method}", "method.inner_lr=0.05", *extra])
    torch.manual_seed(0)
    learner = build_sequence_learner(
        cfg.model, cfg.method, seq.coords.shape[1], seq.values.shape[2], seq.partition
    )
    return learner.double()


# ---------------------------------------------------------------- FIM weights


def _head_case(seed=0):
    torch.manual_seed(seed)
    inr = Siren(2, 2, width=6, depth=2, omega0=5.0).double()
    b, p = 2, 7
    x = torch.rand(1, p, 2, dtype=torch.float64) * 2 - 1
    y = torch.rand(b, p, 2, dtype=torch.float64)
    head = {
        n: inr.weights()[n].detach().unsqueeze(0).repeat(b, *[1] * inr.weights()[n].dim())
        for n in ("out_weight", "out_bias")
    }
    head = {n: w + 0.1 * torch.randn_like(w) for n, w in head.items()}
    mask = torch.ones(b, p, dtype=torch.float64)
    mask[1, 3] = 0.0
    return inr, x, y, head, mask


def test_fim_weights_match_brute_force_per_sample_scores():
    inr, x, y, head, mask = _head_case()
    pred, feats = inr(x, None, head, True)
    b, p = y.shape[:2]
    # brute force: g_j = d log N(y_j | f(x_j), I) / d head, one autograd call per point
    g2 = torch.zeros(b, p, 2 * 6 + 2, dtype=torch.float64)
    for i in range(b):
        for j in range(p):
            w = {n: t[i : i + 1].clone().requires_grad_(True) for n, t in head.items()}
            out = inr(x[:, j : j + 1], None, w)
            logp = -0.5 * (y[i : i + 1, j : j + 1] - out).square().sum()
            gw, gb = torch.autograd.grad(logp, [w["out_weight"], w["out_bias"]])
            g2[i, j] = torch.cat([gw.flatten(), gb.flatten()]).square()
    fisher_bf = (g2 * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
    damp = EPS * fisher_bf.mean(1, keepdim=True) + 1e-12
    lam = 0.7
    w_bf = 1 + lam * (g2 / (fisher_bf + damp)[:, None]).sum(-1) / g2.shape[-1]
    fisher = update_fisher(None, y - pred, feats, mask, decay=0.9)
    # layout (C, W+1): weight columns then the bias column
    as_flat = torch.cat([fisher[..., :-1].flatten(1), fisher[..., -1]], 1)
    torch.testing.assert_close(as_flat, fisher_bf)
    torch.testing.assert_close(fim_weights(y - pred, feats, fisher, lam), w_bf)


def test_fim_weights_at_least_one_and_one_without_lambda():
    inr, x, y, head, mask = _head_case(seed=1)
    pred, feats = inr(x, None, head, True)
    fisher = update_fisher(None, y - pred, feats, mask, 0.9)
    w = fim_weights(y - pred, feats, fisher, 2.0)
    assert (w >= 1).all() and (w > 1).any()
    assert torch.equal(fim_weights(y - pred, feats, fisher, 0.0), torch.ones_like(w))
    # running estimate: an EMA of the per-batch Fisher
    f2 = update_fisher(fisher, 2 * (y - pred), feats, mask, 0.9)
    torch.testing.assert_close(f2, 0.9 * fisher + 0.1 * 4 * fisher)


def test_fim_hook_on_meta_learner(make_learner, make_ep):
    episode = make_ep(batch=3)
    base = make_learner("cavia")
    torch.testing.assert_close(FIMLearner(base, 0.0)(episode).loss, base(episode).loss)
    weighted = FIMLearner(base, 1.0)(episode)
    assert weighted.loss > base(episode).loss
    weighted.loss.backward()
    assert all(p.grad is not None for p in base.inrs.parameters() if p.requires_grad)
    cfg = load_config(
        None,
        ["method.name=cavia", "method.fim_lambda=0.5", "model.width=16", "model.context_dim=16"],
    )
    learner = build_learner(cfg.model, cfg.method, {"sine": (1, 1)})
    assert isinstance(learner, FIMLearner) and isinstance(learner, MetaLearner)
    assert learner.lam == 0.5
    with pytest.raises(ValueError, match="ray_jobs/continual.py"):
        build_learner(cfg.model, load_config(None, ["method.name=mcl_nf"]).method, {"s": (1, 1)})


# ---------------------------------------------------------------- tasks and routing


def test_axis_partition_routes_equal_bins():
    part = AxisPartition(axis=1, num_tasks=4)
    c = torch.tensor([[0.3, -1.0], [0.0, -0.51], [0.9, -0.49], [0.0, 0.0], [-1, 0.49], [0, 1.0]])
    assert part.route(c).tolist() == [0, 0, 1, 2, 2, 3]
    assert AxisPartition(0, 2, drop_axis=True).module_input(c).shape == (6, 1)
    with pytest.raises(ValueError, match="axis 2"):
        AxisPartition(2, 2).route(c)


def test_spatial_and_temporal_sequences():
    seq = _seq(shape=(6, 8), tasks=4)
    tasks = [seq.task(i) for i in range(4)]
    allp = torch.cat([t.points for t in tasks]).sort().values
    assert torch.equal(allp, torch.arange(48))  # every point in exactly one task
    for t in tasks:  # strips of 6x2 along the second grid axis
        assert t.points.numel() == 12
        cols = torch.unique(seq.coords[t.points, 1])
        assert cols.numel() == 2
    tseq = _seq(shape=(4, 4), tasks=3, kind="temporal")
    assert tseq.coords.shape == (48, 3)
    for i in range(3):
        task = tseq.task(i)
        assert task.coords.shape == (1, 16, 2)  # modules see the spatial grid only
        torch.testing.assert_close(task.values, tseq.values[:, i * 16 : (i + 1) * 16])
    with pytest.raises(ValueError, match="no points"):
        _seq(shape=(2, 2), tasks=4)


def test_modules_added_from_shared_init_and_routed():
    seq = _seq(tasks=3, shape=(6, 6))
    inr = Siren(2, 1, width=8, depth=2, omega0=5.0).double()
    mod = ModularINR(inr, seq.partition, batch=2)
    first = mod.new_module(detach=True)
    for n, w in inr.weights().items():
        assert torch.equal(first[n][0], w.detach()) and first[n].shape == (2, *w.shape)
    for _ in range(2):
        m = mod.new_module(detach=True)
        mod.add_module({n: w + torch.randn_like(w) for n, w in m.items()})
    out, covered = mod(seq.coords)
    for i in range(2):
        t = seq.task(i)
        torch.testing.assert_close(out[:, t.points], mod.module_forward(mod.modules[i], t.coords))
    assert not covered[seq.task(2).points].any() and (out[:, seq.task(2).points] == 0).all()
    mod.add_module(mod.new_module(detach=True))
    with pytest.raises(ValueError, match="cannot add more"):
        mod.add_module(mod.new_module(detach=True))


# ---------------------------------------------------------------- no revisiting


def test_task_stream_cannot_go_back():
    stream = TaskStream(_seq())
    assert [t.index for t in stream] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="only once"):
        list(stream)


def test_mcl_nf_never_changes_earlier_modules_and_does_not_forget():
    seq = _seq()
    learner = _learner("mcl_nf", seq, ["method.fim_lambda=0.3"])
    snaps = []

    def snap(i, st):
        snaps.append([{n: w.detach().clone() for n, w in m.items()} for m in st.modular.modules])

    learner.run(seq, 5, meta=False, on_task_end=snap)
    final = snaps[-1]
    for mods in snaps:
        for j, m in enumerate(mods):  # module j never changes after it is added
            assert all(torch.equal(m[n], final[j][n]) for n in m)
    mats = learner.continual_eval(seq, [3], data_range=1.0)[3]
    for i in range(4):
        col = mats[i:, i]
        assert torch.allclose(col, col[0].expand_as(col))  # no forgetting at all
    baseline = _learner("maml_cl", seq).continual_eval(seq, [30], data_range=1.0)[30]
    assert (baseline[0, 0] - baseline[-1, 0]).abs().max() > 0.01  # a shared net drifts


# ---------------------------------------------------------------- sequence meta-learning


@pytest.mark.parametrize("method", ["mcl_nf", "maml_cl", "oml", "er", "mer", "ewc"])
def test_meta_training_step_every_method(method):
    seq = _seq(kind="temporal" if method == "mcl_nf" else "spatial", tasks=3, shape=(4, 6))
    learner = _learner(method, seq, ["method.inner_steps=2", "method.fim_lambda=0.2"])
    loss = learner(seq)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in learner.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), grads.keys()
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_outer_loop_improves_mcl_nf_init():
    seq = _seq(batch=3, shape=(6, 6), tasks=2)
    learner = _learner("mcl_nf", seq, ["method.inner_steps=2"])
    opt = torch.optim.Adam(learner.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = learner(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_ewc_point_fisher_matches_loop():
    seq = _seq(batch=2, shape=(4, 4), tasks=2)
    learner = _learner("ewc", seq)
    task = seq.task(0)
    params = learner._init_params(2, detach=True)
    fish = learner._point_fisher(params, task, task.signal_coords)
    ref = {n: torch.zeros_like(p) for n, p in params.items()}
    for b in range(2):
        for j in range(task.points.numel()):
            w = {n: p[b : b + 1].detach().requires_grad_(True) for n, p in params.items()}
            out = learner.inr(task.signal_coords[:, j : j + 1], None, w)
            loss = 0.5 * (out - task.values[b : b + 1, j : j + 1]).square().sum()
            for n, g in zip(w, torch.autograd.grad(loss, list(w.values())), strict=True):
                ref[n][b] += g[0].square() / task.points.numel()
    for n in ref:
        torch.testing.assert_close(fish[n], ref[n])


def test_sequence_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="coordinates but values"):
        TaskSequence(torch.zeros(5, 2), torch.zeros(1, 4, 1), AxisPartition(0, 1))


# ---------------------------------------------------------------- pipelines


@pytest.mark.integration
def test_continual_job_resumes_reports_and_encodes_only_new_steps(tmp_path):
    from pipelines.codecs.continual import encode_continual, load_frame
    from pipelines.jobs import train

    store = air_field_store(tmp_path / "air.zarr", 12)
    over = [
        *TINY,
        "method.name=mcl_nf",
        "method.inner_steps=1",
        "method.inner_lr=0.05",
        "method.fim_lambda=0.1",
        "method.mcl.num_tasks=2",
        "method.mcl.eval_budgets=[1,2]",
        "method.mcl.encode_steps=2",
        "method.mcl.encode_batch=3",
        f"data.store={store}",
        "data.modalities=[air]",
        "run.steps=2",
        "run.batch_size=2",
        "run.eval_every=2",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.name=mcl",
    ]
    lines = []
    metrics = train(load_config(None, over), local=True, log=lines.append).evaluation
    run = tmp_path / "runs" / "mcl"
    names = ("results_val.md", "results_val.csv", "metrics_val.json", "figures_val/forgetting.png")
    for name in names:
        assert (run / name).exists(), name
    assert metrics["budgets"]["2"]["forgetting"] == 0.0
    assert (tmp_path / "runs" / "mlflow.db").exists()
    train(load_config(None, [*over, "run.steps=3"]), local=True, log=lines.append)
    assert any(line.startswith("resumed at step 2") for line in lines)
    assert json.loads((run / "metrics_val.json").read_text())["step"] == 3

    out = tmp_path / "enc"
    first = encode_continual(run, store, out, log=lines.append, limit=5)
    assert (first["encoded"], first["skipped"]) == (5, 0)
    stamp = (out / "modules" / "t0000000.pt").stat().st_mtime_ns
    store = air_field_store(tmp_path / "air.zarr", 15)  # three more time steps arrive
    second = encode_continual(run, store, out, log=lines.append)
    assert (second["encoded"], second["skipped"]) == (10, 5)
    assert (out / "modules" / "t0000000.pt").stat().st_mtime_ns == stamp  # past untouched
    assert encode_continual(run, store, out, log=lines.append)["encoded"] == 0
    index = json.loads((out / "index.json").read_text())
    assert sorted(map(int, index)) == list(range(15))
    assert load_frame(out, 14).shape == (48, 1)
    from pipelines.data.stores import StoreError

    with pytest.raises(StoreError, match="air_other"):
        encode_continual(run, store, out, modality="air_other", log=lines.append)
    pin = json.loads((out / "encoder.json").read_text())
    (out / "encoder.json").write_text(json.dumps({**pin, "init": "another-init"}))
    with pytest.raises(ValueError, match="init"):  # never mix encodings of two inits
        encode_continual(run, store, out, log=lines.append)

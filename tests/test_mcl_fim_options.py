"""FIM loss options: the paper's un-normalised weights, per-task Fisher of the outer loss."""

import torch

from mia_core.config import load_config
from mia_core.mcl import fim_weights, grid_task_sequence, update_fisher
from mia_core.mcl.build import build_sequence_learner
from pipelines.data.stores.reader import grid_coords

TINY = ["model.family=siren", "model.width=16", "model.depth=2", "model.omega0=10.0"]


def _seq():
    g = torch.Generator().manual_seed(0)
    coords = torch.from_numpy(grid_coords((8, 8))).double()
    vals = torch.rand(2, coords.shape[0], 1, generator=g, dtype=torch.float64)
    return grid_task_sequence(vals, coords, "spatial", 4, 1)


def _loss(method, *extra):
    seq = _seq()
    cfg = load_config(None, [*TINY, f"method.name={method}", "method.inner_lr=0.05", *extra])
    torch.manual_seed(0)
    learner = build_sequence_learner(
        cfg.model, cfg.method, seq.coords.shape[1], seq.values.shape[2], seq.partition
    ).double()
    return learner, seq, float(learner(seq))


def test_paper_form_is_the_normalised_form_with_lambda_times_d():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(2, 9, 1, generator=g, dtype=torch.float64)
    h = torch.randn(2, 9, 5, generator=g, dtype=torch.float64)
    fisher = update_fisher(None, r, h, torch.ones(2, 9, dtype=torch.float64), 0.0)
    d = fisher.shape[1] * fisher.shape[2]
    paper = fim_weights(r, h, fisher, 0.01, normalise=False)
    torch.testing.assert_close(paper, fim_weights(r, h, fisher, 0.01 * d))
    assert float((paper - 1).mean()) > 5 * float((fim_weights(r, h, fisher, 0.01) - 1).mean())


def test_normalise_false_equals_lambda_times_d_in_the_sequence_learner():
    _, _, ours = _loss("mcl_nf", "method.fim_lambda=0.34")  # D = 1 x (16 + 1) = 17
    _, _, paper = _loss("mcl_nf", "method.fim_lambda=0.02", "method.fim_normalise=false")
    assert abs(ours - paper) < 1e-9


def test_per_task_fisher_weights_each_task_from_its_own_points():
    learner, seq, pooled = _loss("maml_cl", "method.fim_lambda=1.0")
    _, _, per_task = _loss("maml_cl", "method.fim_lambda=1.0", "method.mcl.fisher_per_task=true")
    assert abs(pooled - per_task) > 1e-6
    g = torch.Generator().manual_seed(2)
    r = torch.randn(2, seq.coords.shape[0], 1, generator=g, dtype=torch.float64)
    feats = torch.randn(2, seq.coords.shape[0], 16, generator=g, dtype=torch.float64)
    mask = torch.ones(2, seq.coords.shape[0], dtype=torch.float64)
    learner.spec.fisher_per_task = True
    w = learner._outer_weights(seq, r, feats, mask)
    sel = seq.task_of == 2
    fisher = update_fisher(None, r[:, sel], feats[:, sel], mask[:, sel], 0.0)
    alone = fim_weights(r[:, sel], feats[:, sel], fisher, 1.0)
    torch.testing.assert_close(w[:, sel], alone)
    learner.spec.fim_lambda = 0.0
    assert learner._outer_weights(seq, r, feats, mask) is None


def test_baselines_ship_without_fim_and_ours_mod_is_lambda_zero():
    for m in ("maml_cl", "oml", "er", "ewc"):
        assert load_config(f"configs/experiments/{m}_ncep.yaml").method.fim_lambda == 0.0
    assert load_config("configs/experiments/mcl_nf_mod_ncep.yaml").method.fim_lambda == 0.0
    assert load_config("configs/experiments/mcl_nf_ncep.yaml").method.fim_lambda > 0.0

"""The continual comparison study and ``run.steps=0`` (learning from the random init)."""

import json

import numpy as np
import pytest
import torch
from store_samples import air_field_store

from mia_core.config import ConfigError, load_config
from mia_core.mcl import grid_task_sequence
from pipelines.data.stores.reader import grid_coords
from pipelines.engine.run_dir import selected_checkpoint
from pipelines.jobs import train
from pipelines.studies.continual_study import (
    load_continual_study,
    render_table,
    run_continual_study,
    write_readme,
)
from pipelines.tasks.continual import signal_psnr


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("continual_study")
    store = air_field_store(root / "air.zarr", 10)
    base = root / "base.yaml"
    base.write_text(
        "\n".join(
            [
                "method: {name: mcl_nf, inner_steps: 1, inner_lr: 0.05, fim_lambda: 0.1,"
                " mcl: {num_tasks: 2, module_width: 8, eval_budgets: [1, 2, 4],"
                " eval_optimizer: adam, eval_lr: 0.01}}",
                "model: {family: siren, width: 8, depth: 2, context_tokens: 0}",
                f"data: {{name: air, store: '{store}', modalities: [air]}}",
                "run: {steps: 2, batch_size: 2, eval_every: 2, log_every: 2, checkpoint_every: 2,"
                f" out_dir: '{root / 'runs'}', tracking_uri: 'sqlite:///{root / 'mlflow.db'}'}}",
            ]
        )
    )
    (root / "study.yaml").write_text(
        "name: t\ndataset: air\nbase: base.yaml\nseeds: [0, 1]\n"
        "variants:\n  ours: []\n  cl: [method.name=maml_cl, method.fim_lambda=0, run.steps=0]\n"
        "  ol: [method.name=maml_cl, method.fim_lambda=0, method.mcl.num_tasks=1, run.steps=0]\n"
        f"results_json: '{root / 'mcl_nf.json'}'\ndescription: tiny\n"
    )
    return root


def test_run_steps_zero_keeps_and_reports_the_seeded_initialisation(study):
    over = [f"run.out_dir={study / 'zero'}", "run.steps=0", "method.name=maml_cl", "run.seed=3"]
    cfg = load_config(study / "base.yaml", over)
    lines = []
    metrics = train(cfg, local=True, log=lines.append).evaluation
    assert any("run.steps=0" in line for line in lines)
    assert not any("loss" in line and "step      1" in line for line in lines)  # nothing trained
    state = torch.load(selected_checkpoint(study / "zero" / cfg.run.name), weights_only=True)
    assert state["step"] == 0
    again = [*over[1:], f"run.out_dir={study / 'zero_again'}"]  # same seed, new folder
    fresh = train(load_config(study / "base.yaml", again), local=True, log=lines.append)
    assert fresh.evaluation["budgets"]["4"]["final"] == metrics["budgets"]["4"]["final"]
    other = [*again, "run.seed=4", f"run.out_dir={study / 'zero_other'}"]
    moved = train(load_config(study / "base.yaml", other), local=True, log=lines.append)
    assert moved.evaluation["budgets"]["4"]["final"] != metrics["budgets"]["4"]["final"]
    assert metrics["step"] == 0 and metrics["budgets"]["4"]["final"] > 0


def test_study_writes_step1_best_final_and_readme_block(study, tmp_path, capsys):
    spec = load_continual_study(study / "study.yaml")
    entry = run_continual_study(spec)
    results = json.loads((study / "mcl_nf.json").read_text())
    assert results["air"] == json.loads(json.dumps(entry))
    assert entry["budgets"] == [1, 2, 4] and entry["optimizer"] == "adam"
    cl, ol, ours = (entry["methods"][v] for v in ("cl", "ol", "ours"))
    assert (cl["meta_trained_steps"], ol["tasks"], ours["meta_trained_steps"]) == (0, 1, 2)
    for m in (cl, ol, ours):
        curve = [m["curve"][b] for b in ("1", "2", "4")]
        assert m["step1"] == curve[0] and m["final"] == curve[-1] and m["best"] == max(curve)
        assert m["best_budget"] == [1, 2, 4][curve.index(max(curve))]
        assert m["std"]["final"] is not None
    assert ours["forgetting"] == 0.0 and ol["forgetting"] == 0.0  # modules / one task
    runs = study / "runs/continual_study/t/cl"
    files = [json.loads((runs / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert all(f["split"] == "test" for f in files)  # the final table scores the test split
    seeds = [f["budgets"]["4"] for f in files]
    assert cl["psnr"] == "whole signal"  # not the mean of the tasks' decibels
    assert all(b["final_signal"] != b["final"] for b in seeds)
    seeds = [b["final_signal"] for b in seeds]
    assert cl["final"] == pytest.approx(sum(seeds) / 2)
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- mcl_nf:begin -->\nold\n<!-- mcl_nf:end -->\nb\n")
    write_readme(study / "mcl_nf.json", readme)
    text = readme.read_text()
    assert (
        render_table(results) in text and "old" not in text and "| cl (`maml_cl`) | 0 | 2 |" in text
    )
    capsys.readouterr()
    run_continual_study(spec)
    assert capsys.readouterr().out.count("finished before: skipped") == 6


def test_study_refuses_a_method_that_is_not_continual(study):
    with pytest.raises(ConfigError, match="continual_study"):
        load_continual_study(
            study / "study.yaml", ["continual_study.variants={x: [method.name=mia]}"]
        )


def test_whole_signal_psnr_weights_tasks_by_points_not_decibels():
    coords = torch.from_numpy(grid_coords((4, 4))).double()
    seq = grid_task_sequence(torch.rand(2, 16, 1, dtype=torch.float64), coords, "spatial", 2, 1)
    final = torch.tensor([[120.0, 20.0], [20.0, 20.0]], dtype=torch.float64)  # (T, B)
    got = signal_psnr(final, seq, 1.0)
    # signal 0: a near-exact task (1e-12) and one at 1e-2, 8 points each
    torch.testing.assert_close(got[0], torch.tensor(10 * np.log10(1 / 0.005), dtype=got.dtype))
    torch.testing.assert_close(got[1], torch.tensor(20.0, dtype=got.dtype))
    assert got[0] < final[:, 0].mean()  # the mean of decibels would claim 70 dB

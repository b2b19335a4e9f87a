"""MWT as the official code has it: SIREN layout, per-group clipping, crop, mnist5k, the study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from tiny_configs import TINY_MWT_MODEL

from mia_core.config import ConfigError, load_config
from mia_core.mwt import Augment, build_mwt, count_lrs
from mia_core.mwt.siren import MetaSiren
from pipelines.data.builders.__main__ import main as build_main
from pipelines.engine.task import WorkerContext
from pipelines.engine.trainer import Trainer
from pipelines.studies.mwt_study import (
    load_mwt_study,
    render_table,
    run_mwt_study,
    write_readme,
)
from pipelines.tasks.mwt import MWTTask

TINY = ["method.name=mwt", *TINY_MWT_MODEL]
CPU = WorkerContext(torch.device("cpu"))


def test_official_layout_is_the_project_siren_with_omega_folded_into_hidden_layers():
    torch.manual_seed(0)
    proj = MetaSiren(2, 1, 6, 3, 10.0, 2, (0.1, 1.0), "project").double()
    off = MetaSiren(2, 1, 6, 3, 10.0, 2, (0.1, 1.0), "official").double()
    with torch.no_grad():
        off.theta[0].copy_(proj.theta[0])
        off.theta[1].copy_(proj.theta[1])
        for i in (2, 4):  # hidden layers: sin(omega (W h + b)) == sin((omega W) h + omega b)
            off.theta[i].copy_(10.0 * proj.theta[i])
            off.theta[i + 1].copy_(10.0 * proj.theta[i + 1])
        off.head.weight.copy_(proj.theta[6])
        off.head.bias.copy_(proj.theta[7])
        off.head_scale.fill_(1.0)
    x = torch.rand(1, 7, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(off(list(off.theta), x), proj(list(proj.theta), x))
    # The head is shared, not adapted: no rates for it, and it is in the outer SIREN group.
    assert len(off.theta) == 6 and len(proj.theta) == 8
    n_lr, n = count_lrs(off)
    assert n_lr == n == 2 * sum(p.numel() for p in off.theta)
    assert {id(p) for p in off.head.parameters()} <= {id(p) for p in off.shared_parameters()}
    fresh = MetaSiren(2, 1, 6, 3, 10.0, 2, (0.1, 1.0), "official")
    assert all(float(b.detach().abs().max()) == 0.0 for b in list(fresh.theta)[1::2])


def test_official_layout_adapts_with_the_papers_rates_and_head_gets_gradients():
    official = ["method.mwt.layout=official", "method.mwt.lr_init=[0.1,1.0]"]
    official.append("method.mwt.signed=true")
    cfg = load_config(None, [*TINY, *official])
    torch.manual_seed(0)
    model = build_mwt(cfg.model, cfg.method, (6, 6), 1, 3).double()
    assert float(model.classifier.beta.detach().abs().max()) == 0.0  # official: zero init
    images = torch.rand(4, 6, 6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = model(images, torch.tensor([0, 1, 2, 0]))
    assert out.value_range == 2.0 and torch.isfinite(out.loss)
    assert float(out.inner_losses[-1].mean()) < float(out.inner_losses[0].mean())
    out.loss.backward()
    assert model.siren.head.weight.grad is not None and model.siren.head_scale.grad is not None
    assert cfg.method.mwt.w_cls == 0.01  # the paper's default


def test_crop_is_a_window_of_the_reflect_padded_image():
    img = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 5, 6, 1)
    aug = Augment(crop_pad=2)
    out = aug(img, torch.Generator().manual_seed(3))
    assert out.shape == img.shape and aug.active and not aug.affine
    padded = torch.nn.functional.pad(img.permute(0, 3, 1, 2), (2, 2, 2, 2), mode="reflect")
    padded = padded.permute(0, 2, 3, 1)
    for i in range(2):
        hits = [
            (y, x)
            for y in range(5)
            for x in range(5)
            if torch.equal(padded[i, y : y + 5, x : x + 6], out[i])
        ]
        assert hits, i


def test_param_groups_decay_the_siren_only_when_asked(tmp_path):
    common = [*TINY, f"run.out_dir={tmp_path}", "data.name=digits", "data.modalities=[image]"]
    common.append("run.weight_decay=0.1")
    task = MWTTask(load_config(None, common), CPU)
    assert [g["weight_decay"] for g in task.param_groups()[:2]] == [0.0, 0.0]
    task = MWTTask(load_config(None, [*common, "method.mwt.decay_siren=true"]), CPU)
    assert [g.get("weight_decay", 0.1) for g in task.param_groups()] == [0.1, 0.1, 0.1]


def test_grad_clip_groups_clips_every_group_to_the_bound(tmp_path):
    clip = ["run.grad_clip=1e-3", "run.grad_clip_groups=true", "run.batch_size=8"]
    data = ["data.name=digits", "data.modalities=[image]"]
    cfg = load_config(None, [*TINY, f"run.out_dir={tmp_path}", *data, *clip])
    task = MWTTask(cfg, CPU)
    trainer = Trainer(task, cfg)
    batch = task.batches(0, 0)[0]
    loss, _ = task.loss(batch, 1)
    loss.backward()
    norm = trainer._clip()
    assert float(norm) > 1e-3
    for g in trainer.opt.param_groups:
        grads = [p.grad.norm() for p in g["params"] if p.grad is not None]
        assert float(torch.stack(grads).square().sum().sqrt()) <= 1e-3 * 1.0001


def test_mnist5k_builder_reads_real_digits_with_a_stratified_test_split(tmp_path):
    out = tmp_path / "m.zarr"
    assert build_main(["mnist5k", "--out", str(out)]) == 0
    g = zarr.open_group(str(out), mode="r")
    assert g["image"].shape == (5000, 28, 28, 1)
    labels, split = g["labels"][...], g["split"][...]
    assert np.bincount(labels[split == 2]).tolist() == [100] * 10
    img = g["image"][:50]
    assert 0.0 <= img.min() and img.max() <= 1.0 and (img == 0).mean() > 0.5  # ink on black


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("mwt_study")
    store = root / "digits.zarr"
    assert build_main(["digits", "--out", str(store), "--limit", "120"]) == 0
    base = root / "base.yaml"
    base.write_text(
        "\n".join(
            [
                "method: {name: mwt, inner_steps: 2, mwt: {cls_dim: 8, cls_depth: 1, cls_heads: 2,"
                " cls_mlp_dim: 8, lr_init: [0.01, 0.1]}}",
                "model: {family: siren, width: 8, depth: 3}",
                f"data: {{name: digits, store: '{store}', modalities: [image]}}",
                f"run: {{steps: 2, batch_size: 8, eval_every: 2, log_every: 2, checkpoint_every: 2,"
                f" out_dir: '{root / 'runs'}', tracking_uri: 'sqlite:///{root / 'mlflow.db'}'}}",
            ]
        )
    )
    study = root / "study.yaml"
    study.write_text(
        f"name: t\ndataset: digits\nbase: base.yaml\nseeds: [0, 1]\n"
        f"results_json: '{root / 'mwt.json'}'\ndescription: tiny\n"
    )
    return study


def test_study_writes_results_and_readme_block_and_continues(study_file, tmp_path, capsys):
    spec = load_mwt_study(study_file)
    entry = run_mwt_study(spec)
    results = json.loads((study_file.parent / "mwt.json").read_text())
    assert results["digits"] == json.loads(json.dumps(entry))
    for key in ("mwt", "wt", "pixels"):
        assert 0.0 <= entry[key] <= 1.0 and entry["std"][key] is not None
    accs = [entry["per_seed"]["mwt"][s]["accuracy"] for s in ("0", "1")]
    assert entry["mwt"] == pytest.approx(sum(accs) / 2)
    assert entry["psnr_db"] > 0 and entry["seeds"] == [0, 1] and entry["steps"] == 2
    # the validation curve: eval_every 2 of 2 steps -> the step-2 accuracy, the seeds' mean
    assert set(entry["val_curve"]) == {"mwt", "wt"} and list(entry["val_curve"]["mwt"]) == ["2"]
    assert 0.0 <= entry["val_curve"]["mwt"]["2"] <= 1.0
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- mwt:begin -->\nold\n<!-- mwt:end -->\nb\n")
    write_readme(study_file.parent / "mwt.json", readme)
    text = readme.read_text()
    assert render_table(results) in text and text.startswith("a\n") and text.endswith("b\n")
    assert "| WT (`w_cls = 0`) |" in text and "old" not in text
    assert "| step | mwt validation accuracy (seed mean) | wt validation" in text
    capsys.readouterr()
    run_mwt_study(spec)
    assert capsys.readouterr().out.count("finished before: skipped") == 4


def test_study_file_errors_name_the_key(study_file):
    with pytest.raises(ConfigError, match="variants"):
        load_mwt_study(study_file, ["mwt_study.variants={mwt: []}"])
    with pytest.raises(ConfigError, match="seeds"):
        load_mwt_study(study_file, ["mwt_study.seeds=[0,0]"])

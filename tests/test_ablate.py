"""Ablation study on tiny data: every table filled, runs resumed/skipped, MLflow children."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from mia_core.config import ConfigError
from pipelines.studies.ablation import run_ablation
from pipelines.studies.ablation_spec import NEEDS, VARIANTS, load_ablation, variant_config

TINY_BUDGET = [
    "data.num_functions=40",
    "data.num_train=30",
    "data.num_points=40",
    "data.modalities=[sine,tanh]",
    "model.width=16",
    "model.context_dim=16",
    "model.context_tokens=2",
    "model.depth=3",
    "method.inner_steps=2",
    "method.sft.dim=16",
    "method.sft.mlp_dim=16",
    "method.sft.heads=2",
    "run.eval_bins=[[0.05,0.1],[0.1,0.3]]",
    "run.eval_batch_size=16",
    "run.eval_repeats=1",
    "run.batch_size=4",
    "run.steps=2",
    "run.log_every=1",
    "run.eval_every=2",
]


def study_file(tmp_path, **extra):
    spec = {
        "name": "tiny",
        "seeds": [0, 1],
        "datasets": {
            "synthetic1d": {
                "base": str(Path("configs/experiments/synthetic_mia.yaml").resolve()),
                "target": "sine",
            }
        },
        # An explicit URI: MLflow's set_tracking_uri in earlier tests exports the env var.
        "budget": [
            *TINY_BUDGET,
            f"run.out_dir={tmp_path}",
            f"run.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        "source_ratios": [0.05, 0.5],
        "analysis_signals": 8,
        "plot_signals": 2,
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def test_shipped_studies_load():
    spec, bases = load_ablation("configs/ablation/short.yaml")
    assert len(spec.seeds) >= 3 and set(spec.studies) == set(NEEDS)
    assert bases["synthetic1d"].run.steps <= 200
    full, fbases = load_ablation("configs/ablation/full.yaml")
    assert {"synthetic1d", "av_digits", "celeba_maps"} == set(fbases)
    assert fbases["av_digits"].data.modalities == ["image", "audio"]


def test_bad_studies_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'ablation\.seeds': need at least two"):
        load_ablation(study_file(tmp_path, seeds=[0]))
    with pytest.raises(ConfigError, match=r"'ablation\.studies': unknown \['memory'\]"):
        load_ablation(study_file(tmp_path, studies=["memory"]))
    with pytest.raises(ConfigError, match=r"study\.yaml: unknown key 'ablation\.seed'; did you"):
        load_ablation(study_file(tmp_path, seed=[0, 1]))
    with pytest.raises(ConfigError, match=r"missing required key 'ablation\.datasets\.x\.target'"):
        load_ablation(study_file(tmp_path), ["ablation.datasets.x.base=a.yaml"])
    with pytest.raises(ConfigError, match=r"'ablation\.threads' expects int"):
        load_ablation(study_file(tmp_path), ["ablation.threads=many"])
    bad = study_file(tmp_path)
    with pytest.raises(ConfigError, match=r"target: 'rgb' is not one of"):
        load_ablation(
            bad,
            [
                "ablation.datasets={synthetic1d: {base: "
                f"{Path('configs/experiments/synthetic_mia.yaml').resolve()}, "
                "target: rgb}}"
            ],
        )
    with pytest.raises(ConfigError, match=r"synthetic1d\.target: 'tanh' is not one of"):
        load_ablation(
            bad, ["ablation.datasets.synthetic1d.target=tanh", "data.modalities=[sine,relu]"]
        )


def test_ablation_overrides_reach_spec_and_budget(tmp_path):
    spec, bases = load_ablation(study_file(tmp_path), ["ablation.seeds=[3,4,5]", "run.steps=3"])
    assert spec.seeds == [3, 4, 5] and spec.budget[-1] == "run.steps=3"
    assert bases["synthetic1d"].run.steps == 3
    assert Path(spec.datasets["synthetic1d"].base).is_absolute()


def test_variants_switch_the_sft(tmp_path):
    _, bases = load_ablation(study_file(tmp_path))
    base = bases["synthetic1d"]
    usft = variant_config(base, "usft", 1, tmp_path, "sine")
    assert (usft.method.sft.use_usft, usft.method.sft.use_msft, usft.method.sft.use_fusion) == (
        True,
        False,
        False,
    )
    grads = variant_config(base, "grads", 1, tmp_path, "sine").method.sft
    assert (grads.state_params, grads.state_grads, grads.state_scaling) == (False, True, False)
    assert variant_config(base, "cavia", 1, tmp_path, "sine").method.name == "cavia"
    sub = variant_config(base, "subset", 2, tmp_path, "sine")
    assert sub.data.modalities == ["sine"] and sub.run.seed == 2
    # Per-modality support ratios of the dropped modalities go with them (AV-digits' audio).
    per_mod = {"sine": [0.1, 0.2], "tanh": [0.3, 0.4]}
    av = dataclasses.replace(
        base, data=dataclasses.replace(base.data, support_ratio_per_modality=per_mod)
    )
    sub = variant_config(av, "subset", 0, tmp_path, "sine")
    assert sub.data.support_ratio_per_modality == {"sine": [0.1, 0.2]}
    assert set(VARIANTS) == {v for vs in NEEDS.values() for v in vs} | {"cavia"}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_tiny_study_fills_every_cell_and_resumes(tmp_path, mlflow_db):
    import mlflow

    spec, bases = load_ablation(study_file(tmp_path))
    lines: list[str] = []
    res = run_ablation(spec, bases, log=lines.append)
    report = res.report.read_text()
    for study in ("components", "states", "modalities", "trajectories", "attention_pearson"):
        rows = res.tables[f"synthetic1d_{study}"]
        assert len(rows) >= 3
        for row in rows:
            assert len(row) == len(rows[0])
            for cell in row:
                assert cell.strip() and "nan" not in cell.lower(), (study, row)
        assert f"synthetic1d: {study}" in report
    cavia = res.tables["synthetic1d_components"][1]
    assert cavia[3].startswith("0 ± 0") and cavia[4].startswith("0 ± 0")
    # Every table line of the report has as many cells as its header.
    for block in re.findall(r"(\| .*\|\n\|[-|]+\|\n(?:\| .*\|\n)+)", report):
        widths = {line.count("|") for line in block.strip().splitlines()}
        assert len(widths) == 1, block
    figs = sorted(p.name for p in (res.out_dir / "figures").iterdir())
    assert figs == [
        "synthetic1d_attention_pearson.png",
        "synthetic1d_msft_attention_mean.png",
        "synthetic1d_trajectories_sine.png",
    ]
    # The frozen SFT run really kept the CAVIA INR weights.
    import torch

    cav = torch.load(
        tmp_path / "ablation/tiny/synthetic1d/cavia/seed0/checkpoints/last.pt", weights_only=True
    )["model"]
    sft = torch.load(
        tmp_path / "ablation/tiny/synthetic1d/frozen_sft/seed0/checkpoints/last.pt",
        weights_only=True,
    )["model"]
    inr_keys = [k for k in cav if k.startswith("inrs.")]
    assert inr_keys and all(torch.equal(cav[k], sft[k]) for k in inr_keys)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mia-inr")
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'"
    )
    assert len(children) == len(VARIANTS) * 2  # every variant x seed
    arts = {a.path for a in client.list_artifacts(res.parent_run_id)}
    assert {"report.md", "tables", "figures"} <= arts
    # A second run reuses every finished variant x seed (and copies the report out).
    lines.clear()
    results = tmp_path / "results" / "ablation_tiny"
    spec = dataclasses.replace(spec, results_dir=str(results))
    again = run_ablation(spec, bases, log=lines.append)
    assert sum("skipped" in line for line in lines) == 8 * 2
    assert again.tables == res.tables
    assert (results / "report.md").read_text() == again.report.read_text()
    assert sorted(p.name for p in (results / "figures").iterdir()) == figs
    assert (results / "tables" / "synthetic1d_components.csv").exists()


def test_ablate_job_reports_bad_input_in_one_line(tmp_path, capsys):
    from ray_jobs.ablate import main
    from ray_jobs.common import run_main

    assert run_main(main, ["--config", str(study_file(tmp_path)), "ablation.seeds=[0]"]) == 2
    err = capsys.readouterr().err
    assert "'ablation.seeds': need at least two" in err and err.count("\n") == 1

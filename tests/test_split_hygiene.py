"""The test split is for the final report only (docs/splits.md).

``mia-inr train`` (training, checkpoint selection on validation and its end-of-train
report) must never serve a test-split signal; ``mia-inr evaluate --split test`` must.
The readers record every split they serve (``store_base.note_split``); these tests read
that record around real tiny runs of each task.
"""

from __future__ import annotations

import json

import pytest
from store_samples import air_field_store
from tiny_configs import TINY_META_MODEL, TINY_MWT_MODEL

from pipelines.data.builders.__main__ import main as build_main
from pipelines.data.stores.store_base import note_split, reset_served_splits, served_splits
from pipelines.studies.sweep_spec import METRICS
from ray_jobs.evaluate import main as evaluate_main
from ray_jobs.train import main as train_main

META = [
    "--config",
    "configs/experiments/default.yaml",
    "--local",
    "data.num_functions=40",
    "data.num_train=30",
    "data.num_points=50",
    *TINY_META_MODEL,
    "run.eval_bins=[[0.05,0.2]]",
    "run.eval_batch_size=16",
    "run.steps=4",
    "run.batch_size=4",
    "run.log_every=2",
    "run.eval_every=2",
    "run.checkpoint_every=2",
    "run.eval_repeats=1",
    "run.name=r",
]


def _served_by(job, argv: list[str]) -> frozenset[str]:
    """The splits served while ``job(argv)`` ran (it must succeed)."""
    reset_served_splits()
    assert job(argv) == 0
    return served_splits()


def test_train_reports_validation_and_only_evaluate_split_test_reads_test(tmp_path, capsys):
    cfg = [*META, f"run.out_dir={tmp_path}"]
    # The store is built before the record starts: writing it is not serving a split.
    assert _served_by(train_main, cfg) == {"train", "val"}
    out = capsys.readouterr().out
    assert "evaluating the selected checkpoint on the validation split" in out
    assert "val split, best.pt" in out and "test split" not in out
    run = tmp_path / "r"
    for name in ("results_val.md", "results_val.csv", "metrics_val.json", "figures_val"):
        assert (run / name).exists(), name
    assert not (run / "metrics.json").exists() and not (run / "results.md").exists()
    val = json.loads((run / "metrics_val.json").read_text())
    assert val["split"] == "val" and "test" not in val and val["val"]

    # evaluate defaults to validation and says so
    argv = ["--run-dir", str(run), "--no-track", "--no-figures"]
    assert _served_by(evaluate_main, argv) == {"val"}
    assert "on the validation split (--split val)" in capsys.readouterr().out

    # the final report: the test split, asked for explicitly
    assert "test" in _served_by(evaluate_main, [*argv, "--split", "test"])
    assert "on the test split (--split test)" in capsys.readouterr().out
    test = json.loads((run / "metrics.json").read_text())
    assert test["split"] == "test" and test["test"] and "val" not in test
    assert "test split" in (run / "results.md").read_text()


def test_evaluate_refuses_an_unknown_split(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(SystemExit):
        evaluate_main(["--run-dir", str(tmp_path), "--split", "train"])
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_continual_training_never_reads_the_test_sequences(tmp_path):
    store = air_field_store(tmp_path / "air.zarr", 12)
    argv = [
        "--config",
        "configs/experiments/mcl_nf_ncep.yaml",
        "--local",
        f"data.store={store}",
        "data.modalities=[air]",
        "model.family=siren",
        "model.width=8",
        "model.depth=2",
        "model.context_tokens=0",
        "method.inner_steps=1",
        "method.mcl.num_tasks=2",
        "method.mcl.module_width=8",
        "method.mcl.eval_budgets=[1,2]",
        "method.mcl.eval_signals=0",
        "run.steps=2",
        "run.batch_size=2",
        "run.eval_every=2",
        "run.log_every=2",
        "run.checkpoint_every=2",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.name=c",
    ]
    # the store's last 4 steps are 2 val + 2 test (store_samples.air_field_store)
    assert _served_by(train_main, argv) == {"train", "val"}
    run = tmp_path / "runs" / "c"
    assert json.loads((run / "metrics_val.json").read_text())["split"] == "val"
    assert (run / "figures_val" / "forgetting.png").exists()
    argv = ["--run-dir", str(run), "--no-track", "--split", "test"]
    assert "test" in _served_by(evaluate_main, argv)
    assert json.loads((run / "metrics.json").read_text())["test_sequences"] > 0


def test_mwt_training_never_reads_the_test_images(tmp_path):
    store = tmp_path / "digits.zarr"
    assert build_main(["digits", "--out", str(store), "--limit", "120"]) == 0
    argv = [
        "--config",
        "configs/experiments/mwt_digits.yaml",
        "--local",
        "method.name=mwt",
        *TINY_MWT_MODEL,
        f"data.store={store}",
        "data.modalities=[image]",
        "run.steps=2",
        "run.batch_size=8",
        "run.eval_every=2",
        "run.checkpoint_every=2",
        "run.eval_batch_size=64",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.name=m",
    ]
    assert _served_by(train_main, argv) == {"train", "val"}
    run = tmp_path / "runs" / "m"
    val = json.loads((run / "metrics_val.json").read_text())
    assert "val_accuracy" in val and not any(k.startswith(("test", "logreg")) for k in val)
    argv = ["--run-dir", str(run), "--no-track", "--split", "test"]
    assert "test" in _served_by(evaluate_main, argv)
    assert "logreg_test_accuracy" in json.loads((run / "metrics.json").read_text())


def test_sweeps_choose_on_validation_or_training_loss_only():
    # A Ray Tune sweep takes minutes here; by design its trials are not evaluated
    # (jobs.train(evaluate_after=False)) and are ranked by one of these metrics.
    assert set(METRICS) == {"best_val", "loss"}


def test_the_record_names_bad_splits_and_none_is_every_split():
    reset_served_splits()
    note_split(None)
    assert served_splits() == {"train", "val", "test"}
    with pytest.raises(ValueError, match="'tests'"):
        note_split("tests")

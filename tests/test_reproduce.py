"""Reproduction study on the tiny config: Table 1 and curve filled, JSON layout, resume, docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mia_core.config import ConfigError
from pipelines.studies.reproduce import run_reproduce
from pipelines.studies.reproduce_readme import BEGIN, END, markers, readme_table, update_readme
from pipelines.studies.reproduce_report import (
    REFERENCE,
    eof_label,
    rmse_rows,
    study_bins,
    table_stats,
    write_table1,
)
from pipelines.studies.reproduce_spec import METHODS, load_reproduce
from ray_jobs.reproduce import DEFAULT_JSONS, PAGES

TINY = "configs/reproduce/tiny.yaml"
ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    # An explicit URI: MLflow's set_tracking_uri in earlier tests exports the env var.
    return [
        f"run.out_dir={tmp_path}",
        f"run.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"reproduce.results_json={tmp_path}/results/mia_table1.json",
        *extra,
    ]


@pytest.mark.parametrize("study", ["synthetic", "synthetic_cpu", "synthetic_paper"])
def test_shipped_study_names_every_method_and_the_paper_numbers(study):
    spec, bases = load_reproduce(ROOT / f"configs/reproduce/{study}.yaml")
    assert spec.ordered_methods() == list(METHODS) and len(spec.seeds) >= 3
    assert {cfg.model.family for cfg in bases.values()} == {spec.backbone}
    assert bases["mia"].run.steps >= spec.curve_steps[-1]
    assert set(spec.paper) == set(METHODS)
    for per_mod in spec.paper.values():
        assert set(per_mod) == set(bases["mia"].data.modalities)
        assert all(len(v) == 3 for v in per_mod.values())
    assert spec.paper["mia"]["sine"][0] == 5.564  # Composers w/ MIA, Table 1
    if study != "synthetic":  # the paper presets: the paper's recipe in every run
        assert all(cfg.run.outer_lr == 1e-4 and cfg.run.batch_size == 64 for cfg in bases.values())
        assert bases["mia"].method.sft.residual_sgd is False


def test_fields_study_reads_the_grib_sample_with_the_cpu_presets():
    spec, bases = load_reproduce(ROOT / "configs/reproduce/fields_era5_grib.yaml")
    assert spec.ordered_methods() == ["cavia", "mia"] and len(spec.seeds) >= 3
    for cfg in bases.values():
        assert cfg.data.store == "runs/data/era5_grib.zarr" and cfg.data.modalities == ["t", "z"]
        assert (cfg.data.query_points, cfg.data.support_points) == (512, 256)
        assert cfg.run.eval_bins == [[0.001, 0.25], [0.25, 0.5], [0.5, 1.0]]
    assert spec.results_json == "benchmarks/results/mia_fields.json"


def test_bad_studies_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'reproduce\.methods': unknown \['maml'\]"):
        load_reproduce(TINY, ["reproduce.methods.maml.base=x.yaml"])
    only_cavia = yaml.safe_load((ROOT / TINY).read_text())
    del only_cavia["methods"]["mia"]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(only_cavia))
    with pytest.raises(ConfigError, match=r"'reproduce\.methods': must include \['mia'\]"):
        load_reproduce(tmp_path / "study.yaml")
    with pytest.raises(ConfigError, match=r"run\.steps=4 is below the largest"):
        load_reproduce(TINY, ["reproduce.curve_steps=[2,8]"])
    with pytest.raises(ConfigError, match=r"methods\.mia: .* trains method\.name='cavia'"):
        load_reproduce(TINY, ["reproduce.methods.mia.base=../experiments/synthetic_cavia.yaml"])
    with pytest.raises(ConfigError, match=r"the study's backbone is 'functa'"):
        load_reproduce(TINY, ["reproduce.backbone=functa"])
    with pytest.raises(ConfigError, match=r"'reproduce\.seeds': need at least one seed"):
        load_reproduce(TINY, ["reproduce.seeds=[1,1]"])
    assert load_reproduce(TINY, ["reproduce.seeds=[0]"])[0].seeds == [0]


def test_table1_gives_the_area_weighted_rmse_with_units_beside(tmp_path):
    spec, bases = load_reproduce(TINY, tiny_overrides(tmp_path))
    cfg = bases["mia"]
    bins = study_bins(cfg)

    def rows(seed: int, rmse: bool) -> dict:
        return {
            "test": [
                {
                    "modality": m,
                    "r_min": lo,
                    "r_max": hi,
                    "nmse_all": 0.01 * (j + 1),
                    **({"rmse_phys_all": 1.0 + seed + j, "units": "K"} if rmse else {}),
                }
                for m in cfg.data.modalities
                for j, (lo, hi) in enumerate(bins)
            ]
        }

    both = ("cavia", "mia")
    stats = table_stats(spec, cfg, {m: {s: rows(s, True) for s in (0, 1)} for m in both})
    table = rmse_rows(cfg, stats)
    assert [r[0] for r in table] == ["method", "CAVIA", "MIA"]
    assert table[1][1:4] == ["1.5 K", "2.5 K", "3.5 K"]  # mean over the two seeds
    assert stats["mia"]["sine"][0]["mean"] == 1.0  # nMSE x 1e2 as before
    _, files = write_table1(spec, cfg, stats, tmp_path)
    assert "RMSE in physical units" in files[0].read_text() and "| 1.5 K |" in files[0].read_text()
    assert "rmse_phys" in files[1].read_text().splitlines()[0]
    older = table_stats(spec, cfg, {m: {0: rows(0, False)} for m in both})
    assert rmse_rows(cfg, older) == []  # runs evaluated before: no RMSE table


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_tiny_study_fills_table1_and_curve_and_resumes(tmp_path, capsys, mlflow_db):
    import mlflow

    from ray_jobs.common import run_main
    from ray_jobs.reproduce import main

    spec, bases = load_reproduce(TINY, tiny_overrides(tmp_path))
    lines: list[str] = []
    res = run_reproduce(spec, bases, log=lines.append)
    # Table 1: a row per method + MIA / CAVIA, a column per (modality, bin), all filled.
    assert [r[0] for r in res.table] == [
        "method",
        "CAVIA",
        "MIA",
        "MIA / CAVIA",
        REFERENCE,
        eof_label(1),
    ]
    assert len(res.table[0]) == 1 + 2 * 3
    for row in res.table:
        assert len(row) == len(res.table[0])
        for cell in row:
            assert cell.strip() and "nan" not in cell.lower() and "paper -" not in cell, row
    assert all("paper" in cell and "±" in cell for row in res.table[1:3] for cell in row[1:])
    assert [r[0] for r in res.curve] == ["outer steps", "2", "4"]
    assert all(c.strip() not in ("", "-") and "nan" not in c for r in res.curve for c in r)
    names = {p.name for p in res.files}
    assert {"table1.md", "table1.csv", "table1.json", "table1.png"} <= names
    assert {"curve.md", "curve.csv", "curve.json", "curve.png", "mia_table1.json"} <= names
    assert all(p.stat().st_size > 0 for p in res.files)
    # The committed-results layout, exactly.
    results = json.loads((tmp_path / "results/mia_table1.json").read_text())
    keys = ["protocol", "store", "steps", "seeds", "backbone", "nmse_x1e2", "std_x1e2"]
    extra = ["config_digests", "machines", "figures", "train_mean_x1e2", "eof_x1e2"]
    extra += ["eof_components", "curve"]
    assert list(results) == [*keys, *extra]
    assert "matmul_precision" in results["machines"]["mia"]
    assert results["config_digests"]["mia"] != results["config_digests"]["cavia"]
    # The no-adaptation reference: the train mean of these random functions is far off.
    assert all(v > 10.0 for v in results["train_mean_x1e2"].values())
    assert "synthetic1d" in results["store"]
    assert [Path(f).name for f in results["figures"]] == ["mia_table1.png", "mia_table1_curve.png"]
    assert all(Path(f).stat().st_size > 0 for f in results["figures"])
    assert results["curve"]["steps"] == [2, 4] and list(results["curve"]["nmse_x1e2"]) == [
        "mia",
        "cavia",
    ]
    block = readme_table(results, "mia_table1.json")
    assert "Budget curve (seed 0" in block and "| 4 |" in block
    assert f"| {REFERENCE} |" in block and f"| {eof_label(1)} |" in block
    # the linear reference is per bin, and finite where the train mean is
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in results["eof_x1e2"].values())
    assert "![mia_table1_curve](" in block
    assert (results["steps"], results["seeds"], results["backbone"]) == (4, [0, 1], "composers")
    assert list(results["nmse_x1e2"]) == ["cavia", "mia"]
    for per_mod in results["nmse_x1e2"].values():
        assert list(per_mod) == ["sine", "tanh"]
        assert all(len(v) == 3 and all(x > 0 for x in v) for v in per_mod.values())
    # MLflow: a child per method x seed under the parent.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mia-inr")
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'"
    )
    assert len(children) == 2 * 2
    # A rerun skips every run and every snapshot evaluation, with the same tables.
    lines.clear()
    again = run_reproduce(spec, bases, log=lines.append)
    assert sum("skipped" in line for line in lines) == 4
    assert not any(line.startswith("[curve") for line in lines)
    assert (again.table, again.curve) == (res.table, res.curve)
    # Two runs at a time, each in its own spawned 1-thread process: the same numbers.
    par = tmp_path / "par"
    spec2, bases2 = load_reproduce(TINY, tiny_overrides(par, "reproduce.workers=2"))
    lines.clear()
    parallel = run_reproduce(spec2, bases2, log=lines.append)
    assert "training 4 runs, 2 at a time (1 thread(s) each)" in lines
    assert (parallel.table, parallel.curve) == (res.table, res.curve)
    # A fresh folder that adopts the committed JSON trains only the new method (MetaSGD)
    # and carries CAVIA's and MIA's rows and the curve unchanged.
    adopt = tmp_path / "adopt"
    extra = [
        "reproduce.methods.metasgd.base=../experiments/synthetic_metasgd.yaml",
        f"reproduce.adopt={tmp_path}/results/mia_table1.json",
        f"reproduce.results_json={adopt}/mia_table1.json",
    ]
    lines.clear()
    grown = run_reproduce(*load_reproduce(TINY, tiny_overrides(adopt, *extra)), log=lines.append)
    assert any(line.startswith("[metasgd/seed1]") for line in lines)
    assert not any(line.startswith(("[mia/", "[cavia/")) for line in lines)
    assert not (adopt / "reproduce/tiny/mia").exists()
    assert [r[0] for r in grown.table] == [
        "method",
        "CAVIA",
        "MetaSGD",
        "MIA",
        "MIA / CAVIA",
        REFERENCE,
        eof_label(1),
    ]
    assert grown.table[-3] == res.table[-3] and grown.curve == res.curve
    merged = json.loads((adopt / "mia_table1.json").read_text())
    assert merged["adopted"] == ["cavia", "mia"] and list(merged["nmse_x1e2"]) == [
        "cavia",
        "metasgd",
        "mia",
    ]
    for m in ("cavia", "mia"):
        assert (merged["nmse_x1e2"][m], merged["std_x1e2"][m]) == (
            results["nmse_x1e2"][m],
            results["std_x1e2"][m],
        )
    assert merged["curve"] == results["curve"] and "Rows carried" in readme_table(merged, "x.json")
    assert merged["machines"]["cavia"] == results["machines"]["cavia"]
    assert "| 4 |" in (adopt / "reproduce/tiny/curve.md").read_text()
    # ... but not a JSON measured with another method config or budget.
    with pytest.raises(ConfigError, match="config changed since"):
        run_reproduce(
            *load_reproduce(TINY, tiny_overrides(adopt / "b", *extra, "method.sft.dim=8"))
        )
    with pytest.raises(ConfigError, match="steps is 4, this study's is 6"):
        run_reproduce(*load_reproduce(TINY, tiny_overrides(adopt / "c", *extra, "run.steps=6")))
    # The same study folder with another budget: refused in one line, nothing trained.
    capsys.readouterr()
    argv = ["--config", TINY, "--local", *tiny_overrides(tmp_path, "run.outer_lr=0.5")]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with another config" in err and "run.outer_lr" in err
    with pytest.raises(ConfigError, match="change reproduce.name"):
        run_reproduce(*load_reproduce(TINY, tiny_overrides(tmp_path, "run.steps=6")))


def test_readme_generator_replaces_only_between_markers(tmp_path):
    results = {
        "protocol": "p",
        "steps": 4,
        "seeds": [0, 1],
        "backbone": "composers",
        "nmse_x1e2": {"cavia": {"sine": [4.0, 2.0, 1.0]}, "mia": {"sine": [1.0, 0.5, 0.5]}},
    }
    js = tmp_path / "mia_table1.json"
    js.write_text(json.dumps(results))
    head, tail = "# Title\n\ntext before\n", "\ntext after\n<!-- other -->\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{head}{BEGIN}\n(run `mia-inr reproduce ... --readme` to fill)\n{END}{tail}")
    update_readme(readme, js)
    text = readme.read_text()
    assert text.startswith(head + BEGIN + "\n") and text.endswith(END + tail)
    block = text[len(head) + len(BEGIN) : -len(END + tail)]
    assert "to fill" not in block and "| MIA | 1 | 0.5 | 0.5 |" in block
    assert "| MIA / CAVIA | 0.25 | 0.25 | 0.5 |" in block
    update_readme(readme, js)  # idempotent
    assert readme.read_text() == text
    readme.write_text("no markers\n")
    with pytest.raises(ConfigError, match="needs one"):
        update_readme(readme, js)
    with pytest.raises(ConfigError, match=r"missing \['steps'\]"):
        readme_table({k: v for k, v in results.items() if k != "steps"}, "x.json")
    # another results JSON fills the block named after its stem, and names its store
    fields = tmp_path / "mia_fields.json"
    fields.write_text(json.dumps({**results, "store": "runs/data/era5.zarr"}))
    begin, end = markers("mia_fields")
    readme.write_text(f"{BEGIN}\nkeep\n{END}\n{begin}\nold\n{end}\n")
    update_readme(readme, fields)
    text = readme.read_text()
    assert text.startswith(f"{BEGIN}\nkeep\n{END}\n{begin}\n") and "old" not in text
    assert "store `runs/data/era5.zarr`" in text


def test_every_committed_table_has_its_markers_on_its_docs_page():
    for source in DEFAULT_JSONS:  # what `mia-inr reproduce --readme` alone rewrites
        text = (ROOT / PAGES[source]).read_text()
        begin, end = markers(Path(source).stem)
        assert text.count(begin) == 1 and text.count(end) == 1, PAGES[source]
        assert text.index(begin) < text.index(end)


def test_only_narrows_the_study_from_the_command_line():
    spec, bases = load_reproduce("configs/reproduce/synthetic.yaml", ["reproduce.only=[gap]"])
    assert spec.ordered_methods() == ["cavia", "gap", "mia"] and sorted(bases) == [
        "cavia",
        "gap",
        "mia",
    ]
    with pytest.raises(ConfigError, match="only"):
        load_reproduce("configs/reproduce/synthetic.yaml", ["reproduce.only=[nope]"])

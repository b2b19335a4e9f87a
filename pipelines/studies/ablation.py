"""The SFT / modality ablation study of MIA (Sec. 6.1, App. E), from one YAML file.

Studies (``configs/ablation/*.yaml``, key ``studies``):

* ``components``: CAVIA, +USFT, +USFT+MSFT, full (USFT+MSFT+Fusion MLP);
* ``states``: SFT inputs grads only, grads + scaling, params + grads + scaling (= full);
  both reported as relative improvement over CAVIA on non-support (generalisation, G)
  and support points (memorisation, M), per dataset, mean ± std over seeds;
* ``modalities``: MIA trained and evaluated on the target modality only vs on all
  modalities, normalised MSE of the target per support-ratio bin;
* ``trajectories``: a trained CAVIA is frozen and an SFT meta-learned on top of it; PCA of
  the target's inner-loop context trajectory coloured by the other modalities' support
  ratio, target nmse per source ratio; and the Pearson correlation between the full
  model's MSFT attention and the support sizes.

Every variant x seed is an ordinary training run (``pipelines.jobs.train(local=True)``, in
this process) under ``<run.out_dir>/ablation/<name>/<dataset>/<variant>/seed<k>`` with
test metrics in its ``metrics.json``; finished runs are skipped and interrupted ones
resume from ``last.pt``, so re-running the job continues a study. All runs of a dataset
share its store (the synthetic one is built once). MLflow: a parent run for the study, a
child run per variant x seed, the report, tables and figures on the parent. The study
file is :mod:`pipelines.studies.ablation_spec`, the tables and report
:mod:`pipelines.studies.ablation_report`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mia_core.config import Config
from mia_core.config.loader import flatten_config
from pipelines.data.resolve import resolve_store
from pipelines.engine.run_dir import refuse_changed_config, selected_checkpoint
from pipelines.studies import ablation_analysis as an
from pipelines.studies.ablation_report import study_tables, write_csv, write_report
from pipelines.studies.ablation_spec import NEEDS, VARIANTS, AblationSpec, variant_config
from pipelines.studies.child_run import ChildJob, train_child, train_children
from pipelines.tracking import run_groups
from pipelines.tracking.tracker import tracking_uri


@dataclass
class AblationResult:
    """Where the study's outputs are.

    Attributes:
        out_dir: study folder.
        report: ``report.md``.
        tables: table name -> rows (lists of cells, first row the header).
        parent_run_id: MLflow parent run.
    """

    out_dir: Path
    report: Path
    tables: dict[str, list[list[str]]]
    parent_run_id: str


def run_ablation(
    spec: AblationSpec,
    bases: dict[str, Config],
    log: Callable[[str], None] = print,
    *,
    local: bool = True,
    address: str | None = None,
) -> AblationResult:
    """Run (or continue) the study and write the report; see the module docstring.

    Args:
        spec: the study.
        bases: dataset name -> its base experiment (budget applied).
        log: line printer.
        local: train every run in this process; ``False`` runs each on Ray Train.
        address: Ray cluster address when ``local`` is ``False``.
    """
    first = next(iter(bases.values()))
    out = Path(first.run.out_dir).resolve() / "ablation" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(first)
    parent_cfg = dataclasses.replace(first, run=dataclasses.replace(first.run, tracking_uri=uri))
    parent = run_groups.open_run(
        parent_cfg,
        out / "mlflow_run_id",
        f"ablation:{spec.name}",
        params={
            "ablation.seeds": json.dumps(spec.seeds),
            "ablation.studies": json.dumps(spec.studies),
            "ablation.datasets": json.dumps(list(spec.datasets)),
            "ablation.budget": json.dumps(spec.budget),
            **{f"base.{k}": v for k, v in flatten_config(first).items()},
        },
        tags={"ablation": spec.name},
    )
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    tables: dict[str, list[list[str]]] = {}
    figures: list[Path] = []
    try:
        for ds, base in bases.items():
            # One store per dataset: every variant (the subset one too) reads the same signals.
            store_url = resolve_store(base).url
            base = dataclasses.replace(
                base,
                data=dataclasses.replace(base.data, store=store_url),
                run=dataclasses.replace(base.run, tracking_uri=uri),
            )
            target = spec.datasets[ds].target
            root = out / ds
            needed = [v for v in VARIANTS if any(v in NEEDS[s] for s in spec.studies)]
            runs: dict[str, dict[int, dict]] = {v: {} for v in needed}
            # Every variant but the frozen SFT (it starts from the CAVIA runs' checkpoints)
            # trains first, ``spec.workers`` at a time.
            order = [(v, s) for v in needed if v != "frozen_sft" for s in spec.seeds]
            cfgs = {(v, s): variant_config(base, v, s, root, target) for v, s in order}
            for cfg in cfgs.values():
                refuse_changed_config(cfg, "change the study's name to run the new budget")
            children = [
                ChildJob(cfgs[v, s], f"{ds}/{v}/{cfgs[v, s].run.name}", _tags(ds, v))
                for v, s in order
            ]
            done = train_children(
                children,
                parent,
                log,
                workers=spec.workers,
                threads=spec.threads,
                local=local,
                address=address,
                figures=spec.run_figures,
            )
            for (v, s), result in zip(order, done, strict=True):
                runs[v][s] = result
            if "frozen_sft" in needed:
                for seed in spec.seeds:
                    cfg = variant_config(base, "frozen_sft", seed, root, target)
                    hook = an.freeze_inrs_hook(selected_checkpoint(root / "cavia" / f"seed{seed}"))
                    runs["frozen_sft"][seed] = _run(
                        cfg, parent, ds, "frozen_sft", hook, log, spec.run_figures, local, address
                    )
            tables.update(study_tables(spec, ds, base, target, runs, root, figures, log))
        report = write_report(spec, tables, figures, out, time.perf_counter() - t0)
    except BaseException:
        run_groups.close_run(parent_cfg, parent, "FAILED")
        raise
    finally:
        torch.set_num_threads(threads)
    for name, rows in tables.items():
        write_csv(rows, out / "tables" / f"{name}.csv")
    if spec.results_dir:
        _copy_results(out, Path(spec.results_dir))
        log(f"ablation {spec.name}: report copied to {spec.results_dir}")
    run_groups.log_artifacts(parent_cfg, parent, [report])
    run_groups.log_artifacts(parent_cfg, parent, [out / "tables"], "tables")
    run_groups.log_artifacts(parent_cfg, parent, [out / "figures"], "figures")
    run_groups.close_run(parent_cfg, parent)
    log(f"ablation {spec.name}: report {report}")
    return AblationResult(out, report, tables, parent)


def _run(
    cfg: Config,
    parent: str,
    ds: str,
    variant: str,
    hook: Callable[[Any], None] | None,
    log: Callable[[str], None],
    figures: bool,
    local: bool = True,
    address: str | None = None,
) -> dict:
    """Train + evaluate one variant x seed unless finished; returns its metrics.json."""
    refuse_changed_config(cfg, "change the study's name to run the new budget")
    label = f"{ds}/{variant}/{cfg.run.name}"
    return train_child(
        cfg,
        parent,
        label,
        _tags(ds, variant),
        log,
        local=local,
        address=address,
        init_hook=hook,
        figures=figures,
    )


def _copy_results(out: Path, dest: Path) -> None:
    """``report.md``, ``tables/`` and ``figures/`` of the study folder into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "report.md", dest / "report.md")
    for sub in ("tables", "figures"):
        if (out / sub).exists():
            shutil.rmtree(dest / sub, ignore_errors=True)
            shutil.copytree(out / sub, dest / sub)


def _tags(ds: str, variant: str) -> dict[str, str]:
    """MLflow tags of a child run of the study."""
    return {"ablation.dataset": ds, "ablation.variant": variant}


__all__ = ["AblationResult", "run_ablation"]

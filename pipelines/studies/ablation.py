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
share its store (the synthetic one is built once). The study is a
:class:`~pipelines.studies.driver.Study` (:class:`AblationStudy`): the driver owns the
MLflow parent run (the report, tables and figures on it) and a child run per variant x
seed; a frozen SFT trains after its CAVIA run, in this process (its init hook reads the
CAVIA checkpoint). The study file is :mod:`pipelines.studies.ablation_spec`, the tables and
report :mod:`pipelines.studies.ablation_report`.
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

from mia_core.config import Config
from mia_core.config.loader import flatten_config
from pipelines.data.resolve import resolve_store
from pipelines.reports import ablation_analysis as an
from pipelines.studies.ablation_report import study_tables, write_report
from pipelines.studies.ablation_spec import NEEDS, VARIANTS, AblationSpec, variant_config
from pipelines.studies.child_run import ChildJob
from pipelines.studies.driver import (
    ChildStudy,
    Outcome,
    ParentRun,
    Results,
    run_study,
    write_csv,
)
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


class AblationStudy(ChildStudy):
    """The ablation as a :class:`~pipelines.studies.driver.Study` (module docstring)."""

    section = "ablation"
    results_json, results_key = "", None

    def __init__(self, spec: AblationSpec, bases: dict[str, Config]) -> None:
        self.spec, self.name = spec, spec.name
        self.workers, self.threads, self.figures = spec.workers, spec.threads, spec.run_figures
        first = next(iter(bases.values()))
        self.out = Path(first.run.out_dir).resolve() / "ablation" / spec.name
        uri = tracking_uri(first)
        self.cfg = dataclasses.replace(first, run=dataclasses.replace(first.run, tracking_uri=uri))
        # One store per dataset: every variant (the subset one too) reads the same signals.
        self.bases = {
            ds: dataclasses.replace(
                base,
                data=dataclasses.replace(base.data, store=resolve_store(base).url),
                run=dataclasses.replace(base.run, tracking_uri=uri),
            )
            for ds, base in bases.items()
        }
        self.needed = [v for v in VARIANTS if any(v in NEEDS[s] for s in spec.studies)]
        self.t0 = time.perf_counter()

    def params(self) -> dict[str, Any]:
        """The study's seeds, studies, datasets and budget, and the first base config."""
        spec = self.spec
        fields = {"seeds": spec.seeds, "studies": spec.studies, "budget": spec.budget}
        fields["datasets"] = list(spec.datasets)
        return {
            **{f"ablation.{k}": json.dumps(v) for k, v in fields.items()},
            **{f"base.{k}": v for k, v in flatten_config(self.cfg).items()},
        }

    def children(self) -> list[ChildJob]:
        """Every dataset x variant x seed; each frozen SFT after the CAVIA runs it starts from."""
        jobs = []
        for ds, base in self.bases.items():
            root, target = self.out / ds, self.spec.datasets[ds].target
            tags = {"ablation.dataset": ds}
            for v in sorted(self.needed, key=lambda v: v == "frozen_sft"):
                for s in self.spec.seeds:
                    cfg = variant_config(base, v, s, root, target)
                    hook = (
                        an.freeze_inrs_hook(root / "cavia" / f"seed{s}")
                        if v == "frozen_sft"
                        else None
                    )
                    label = f"{ds}/{v}/{cfg.run.name}"
                    jobs.append(
                        ChildJob(cfg, label, (ds, v, s), {**tags, "ablation.variant": v}, hook)
                    )
        return jobs

    def read(self, results: Results, run: ParentRun, log: Callable[[str], None]) -> Outcome:
        """Every dataset's tables and figures, ``report.md``, and the CSV tables."""
        spec, out = self.spec, self.out
        tables: dict[str, list[list[str]]] = {}
        figures: list[Path] = []
        for ds, base in self.bases.items():
            runs = {v: {s: results[ds, v, s] for s in spec.seeds} for v in self.needed}
            target = spec.datasets[ds].target
            tables.update(study_tables(spec, ds, base, target, runs, out / ds, figures, log))
        report = write_report(spec, tables, figures, out, time.perf_counter() - self.t0)
        for name, rows in tables.items():
            write_csv(rows, out / "tables" / f"{name}.csv")
        if spec.results_dir:
            _copy_results(out, Path(spec.results_dir))
            log(f"ablation {spec.name}: report copied to {spec.results_dir}")
        run.log_artifacts([out / "tables"], "tables")
        run.log_artifacts([out / "figures"], "figures")
        log(f"ablation {spec.name}: report {report}")
        return Outcome(AblationResult(out, report, tables, run.run_id), [report])


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
    return run_study(AblationStudy(spec, bases), log, local=local, address=address).value


def _copy_results(out: Path, dest: Path) -> None:
    """``report.md``, ``tables/`` and ``figures/`` of the study folder into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "report.md", dest / "report.md")
    for sub in ("tables", "figures"):
        if (out / sub).exists():
            shutil.rmtree(dest / sub, ignore_errors=True)
            shutil.copytree(out / sub, dest / sub)


__all__ = ["AblationResult", "AblationStudy", "run_ablation"]

"""The reproduction study: MIA Table 1 (synthetic 1D) and the MIA/CAVIA budget curve.

Every method x seed of the study file (:mod:`pipelines.studies.reproduce_spec`) is an
ordinary training run through :func:`pipelines.jobs.train` (in this process with
``local=True``, else on Ray Train) under ``<run.out_dir>/reproduce/<name>/<method>/seed<k>``
with its test metrics in ``metrics.json``. Before anything trains, every existing run
folder is compared with the config the study would give it: one made with another budget
is refused (rename the study instead), so a study folder never mixes budgets. Finished
runs are skipped and interrupted ones resume through the engine, so re-running the job
continues a study. All runs share one store (the synthetic one is built once).

Outputs in the study folder: ``table1.{md,csv,json}`` and ``table1.png``
(:mod:`pipelines.studies.reproduce_report`), with ``reproduce.curve_steps`` also
``curve.{md,csv,json}`` and ``curve.png`` (:mod:`pipelines.studies.reproduce_curve`), and
``reproduce.results_json`` when set (with the curve and copies of both figures beside it,
see :func:`write_results`). With ``reproduce.classical`` rows, Table 1 and the results
JSON also hold classical references (:func:`classical_reference`) scored on the very
support draws of each seed's test evaluation. The study is a
:class:`~pipelines.studies.driver.Study` (:class:`ReproduceStudy`): the driver owns the MLflow
parent run ``reproduce:<name>`` (table means as metrics, the files as artifacts), the child
run per method x seed and the results JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_core.config import Config
from mia_core.config.loader import flatten_config
from mia_core.runtime import cpu_has_bf16_matmul, cpu_name
from pipelines.data.resolve import open_training_store, resolve_store
from pipelines.data.stores import Store
from pipelines.engine.run_dir import run_dir_of
from pipelines.reports.classical import EvalProtocol, fit_classical
from pipelines.reports.classical_cells import ClassicalRows, classical_cells
from pipelines.reports.eof_reference import eof_fit_nmse
from pipelines.reports.reference import mean_signal_nmse
from pipelines.studies.child_run import ChildJob, is_finished
from pipelines.studies.driver import (
    ChildStudy,
    Outcome,
    ParentRun,
    Results,
    run_study,
    write_results_json,
)
from pipelines.studies.reproduce_adopt import (
    Adopted,
    adopt_results,
    config_digest,
    keep_adopted,
    write_adopted_curve,
)
from pipelines.studies.reproduce_curve import curve_evaluations, curve_rows, write_curve
from pipelines.studies.reproduce_readme import readme_table
from pipelines.studies.reproduce_report import (
    results_data,
    study_bins,
    table_stats,
    write_table1,
)
from pipelines.studies.reproduce_spec import CURVE_METHODS, ReproduceSpec, method_config
from pipelines.tracking.tracker import tracking_uri


@dataclass
class ReproduceResult:
    """Where the study's outputs are.

    Attributes:
        out_dir: study folder ``<run.out_dir>/reproduce/<name>``.
        table: Table 1 as rows of cells (first row the header), as in ``table1.md``.
        curve: the budget-curve table (rows of cells), or ``None`` without curve steps.
        files: every file written (tables, figures, the results JSON).
        parent_run_id: MLflow parent run.
    """

    out_dir: Path
    table: list[list[str]]
    curve: list[list[str]] | None
    files: list[Path]
    parent_run_id: str


def study_dir(spec: ReproduceSpec, bases: dict[str, Config]) -> Path:
    """``<run.out_dir>/reproduce/<name>`` (absolute) of the first method's budget."""
    first = bases[spec.ordered_methods()[0]]
    return Path(first.run.out_dir).resolve() / "reproduce" / spec.name


def study_configs(spec: ReproduceSpec, bases: dict[str, Config]) -> dict[str, dict[int, Config]]:
    """Run configs (method -> seed -> config), every run reading one store and MLflow URI."""
    first = bases[spec.ordered_methods()[0]]
    root = study_dir(spec, bases)
    store_url = resolve_store(first).url
    uri = tracking_uri(first)
    configs: dict[str, dict[int, Config]] = {}
    for method in spec.ordered_methods():
        base = bases[method]
        base = dataclasses.replace(
            base,
            data=dataclasses.replace(base.data, store=store_url),
            run=dataclasses.replace(base.run, tracking_uri=uri),
        )
        configs[method] = {s: method_config(spec, base, method, s, root) for s in spec.seeds}
    return configs


class ReproduceStudy(ChildStudy):
    """The reproduction as a :class:`~pipelines.studies.driver.Study` (module docstring)."""

    section = "reproduce"
    render = staticmethod(readme_table)

    def __init__(self, spec: ReproduceSpec, bases: dict[str, Config], log: Callable) -> None:
        self.spec, self.bases, self.name = spec, bases, spec.name
        self.workers, self.threads, self.figures = spec.workers, spec.threads, spec.run_figures
        self.configs = study_configs(spec, bases)
        self.cfg = next(iter(self.configs.values()))[spec.seeds[0]]
        adopted = adopt_results(spec, self.cfg, bases) if spec.adopt else Adopted({}, None, "")
        unfinished = {
            m for m, runs in self.configs.items() if not all(is_finished(c) for c in runs.values())
        }
        self.adopted = keep_adopted(adopted, unfinished)
        self.trained = [m for m in self.configs if m not in self.adopted.stats]
        if self.adopted.stats:
            log(f"reproduce {spec.name}: {sorted(self.adopted.stats)} adopted from {spec.adopt}")
        self.out = study_dir(spec, bases)
        self.results_json, self.results_key = spec.results_json, None
        self.t0 = time.perf_counter()

    def params(self) -> dict[str, Any]:
        """The study's fields and the first run's config (``base.*``)."""
        spec = self.spec
        fields = {"backbone": spec.backbone, "methods": json.dumps(spec.ordered_methods())}
        for key in ("seeds", "budget", "curve_steps"):
            fields[key] = json.dumps(getattr(spec, key))
        fields["adopted"] = json.dumps(sorted(self.adopted.stats))
        return {
            **{f"reproduce.{k}": v for k, v in fields.items()},
            **{f"base.{k}": v for k, v in flatten_config(self.cfg).items()},
        }

    def children(self) -> list[ChildJob]:
        """Every trained method x seed, seed-major: a study stopped partway has whole seeds."""
        jobs = []
        for s in self.spec.seeds:
            for m in self.trained:
                cfg = self.configs[m][s]
                jobs.append(ChildJob(cfg, f"{m}/{cfg.run.name}", (m, s), {"reproduce.method": m}))
        return jobs

    def read(self, results: Results, run: ParentRun, log: Callable[[str], None]) -> Outcome:
        """Table 1, the budget curve and the results JSON's content."""
        spec, first, adopted = self.spec, self.cfg, self.adopted
        metrics: dict[str, dict[int, dict]] = {m: {} for m in self.trained}
        for (m, s), result in results.items():
            metrics[m][s] = result
        measured = table_stats(spec, first, metrics)
        stats = {m: adopted.stats.get(m) or measured[m] for m in self.configs}
        store = open_training_store(first)
        means = mean_signal_nmse(store, score="test")  # final table: the test split
        reference = {m: 100.0 * v for m, v in means.items()}
        eof = linear_reference(spec, first, store)
        classical = classical_reference(spec, self.configs, store, log) if spec.classical else None
        table, files = write_table1(spec, first, stats, self.out, reference, eof, classical)
        curve = None
        if spec.curve_steps and write_adopted_curve(adopted, self.out):
            log(f"reproduce {spec.name}: budget curve adopted from {spec.adopt}")
            curve = curve_rows(adopted.curve)
        elif spec.curve_steps:
            runs = {m: run_dir_of(self.configs[m][spec.curve_run_seed]) for m in CURVE_METHODS}
            evals = curve_evaluations(spec, runs, self.out / "curve", log)
            curve, curve_files, curve_metrics = write_curve(spec, first, evals, self.out)
            files += curve_files
            for step, values in curve_metrics.items():
                run.log_metrics(values, step)
        data = None
        if spec.results_json:
            here = machine_label(first)
            extra = {
                "config_digests": {m: config_digest(self.bases[m]) for m in self.configs},
                "machines": {m: adopted.machines.get(m, here) for m in self.configs},
                **({"adopted": sorted(adopted.stats)} if adopted.stats else {}),
                **(classical.results() if classical is not None else {}),
            }
            path = Path(spec.results_json)
            data, figures = results_content(
                spec, first, stats, self.out, path, reference, extra, eof
            )
            files += figures
        log(f"reproduce {spec.name}: {self.out} ({time.perf_counter() - self.t0:.0f} s)")
        value = ReproduceResult(self.out, table, curve, files, run.run_id)
        return Outcome(value, files, _flat_means(stats), data)


def run_reproduce(
    spec: ReproduceSpec,
    bases: dict[str, Config],
    log: Callable[[str], None] = print,
    *,
    local: bool = True,
    address: str | None = None,
) -> ReproduceResult:
    """Run (or continue) the study and write its tables; see the module docstring.

    Args:
        spec: the study.
        bases: method -> its base experiment (budget applied), from ``load_reproduce``.
        log: line printer.
        local: train every run in this process; ``False`` runs each on Ray Train.
        address: Ray cluster address when ``local`` is ``False``.

    Raises:
        ConfigError: a run folder of the study was made with another config.
    """
    study = ReproduceStudy(spec, bases, log)
    return run_study(study, log, local=local, address=address).value


def linear_reference(
    spec: ReproduceSpec, cfg: Config, store: Store
) -> dict[str, list[float]] | None:
    """Modality -> per-bin nMSE x 1e2 of the offset + EOF fit; ``None`` without shared coords."""
    eof = eof_fit_nmse(
        store,
        study_bins(cfg),
        spec.eof_components,
        cfg.run.eval_repeats,
        cfg.run.seed,
        score="test",  # final table: the test split
    )
    if all(math.isnan(v) for values in eof.values() for v in values):
        return None
    return {m: [100.0 * v for v in values] for m, values in eof.items()}


def classical_reference(
    spec: ReproduceSpec,
    configs: dict[str, dict[int, Config]],
    store: Store,
    log: Callable[[str], None] = print,
) -> ClassicalRows:
    """``spec.classical`` rows: fitted on train, ``k`` on validation, scored per seed on test.

    The scoring repeats each seed's test evaluation
    (:func:`pipelines.reports.evaluate_run.evaluate_run`: support-draw seed
    ``run.seed + 2``, ``run.eval_bins``, ``run.eval_repeats``, ``run.eval_protocol``, the
    data strides), so the classical rows see the very support sets the methods adapted
    to; ``k`` of the EOF rows is chosen on the validation split with seed ``run.seed + 1``
    of the first seed.

    Raises:
        ConfigError: a store without shared coordinates (names the store and the row).
    """
    per_seed = next(iter(configs.values()))
    cfg = per_seed[spec.seeds[0]]
    how = EvalProtocol.of(cfg, study_bins(cfg))
    rows = fit_classical(store, spec.classical, how, cfg.run.seed + 1, log=log)
    seeds = {s: c.run.seed + 2 for s, c in per_seed.items()}
    cells = classical_cells(store, rows, how, seeds)
    return ClassicalRows(cells, {name: rec.label for name, rec in rows.items()})


def results_content(
    spec: ReproduceSpec,
    cfg: Config,
    stats: dict,
    out: Path,
    path: Path,
    reference: dict[str, float] | None = None,
    extra: dict | None = None,
    eof: dict[str, list[float]] | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """The committed results JSON's content for ``path``, and beside it copies of the figures.

    ``<stem>.png`` is Table 1's bar chart; with a budget curve the JSON also holds the
    study's ``curve.json`` under ``"curve"`` and ``<stem>_curve.png`` is its plot. Both
    figures are listed under ``"figures"`` (paths as given, for the README).
    ``reference`` (modality -> nMSE x 1e2 of the train split's mean signal,
    :mod:`pipelines.reports.reference`) goes under ``"train_mean_x1e2"``; ``eof`` (the
    linear reference, modality -> per-bin nMSE x 1e2) under ``"eof_x1e2"``, with
    ``"eof_components"``; ``extra`` keys (config digests, adopted methods, the classical
    rows' ``ClassicalRows.results``) are added as they are.

    Returns:
        The JSON's content and the figure copies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    copies = [(out / "table1.png", path.with_suffix(".png"))]
    curve_json = out / "curve.json"
    has_curve = bool(spec.curve_steps) and curve_json.exists()
    if has_curve:
        copies.append((out / "curve.png", path.with_name(f"{path.stem}_curve.png")))
    figures = []
    for src, dst in copies:
        if src.exists():
            shutil.copyfile(src, dst)
            figures.append(dst)
    extra = {**(extra or {}), "figures": [str(f) for f in figures]}
    if reference is not None:
        extra["train_mean_x1e2"] = {m: round(v, 6) for m, v in reference.items()}
    if eof is not None:
        extra["eof_x1e2"] = {m: [round(v, 6) for v in vs] for m, vs in eof.items()}
        extra["eof_components"] = spec.eof_components
    if has_curve:
        extra["curve"] = json.loads(curve_json.read_text())
    return results_data(spec, cfg, stats, extra), figures


def write_results(
    spec: ReproduceSpec, cfg: Config, stats: dict, out: Path, path: Path, **kw: Any
) -> list[Path]:
    """Write :func:`results_content` to ``path``; returns the JSON and the figure copies."""
    data, figures = results_content(spec, cfg, stats, out, path, **kw)
    return [write_results_json(path, data), *figures]


def machine_label(cfg: Config) -> str:
    """Where a run of ``cfg`` trains: the CPU model and what its matmul precision means there.

    Recorded per method in the results JSON: on a CPU with bf16 hardware ``medium``
    means bf16 matmuls (:func:`mia_core.runtime.set_matmul_precision`).
    """
    bf16 = cpu_has_bf16_matmul() and cfg.run.matmul_precision != "highest"
    return f"{cpu_name()}, matmul_precision {cfg.run.matmul_precision}" + (
        " (bf16 matmuls)" if bf16 else " (float32 matmuls)"
    )


def _flat_means(stats: dict) -> dict[str, float]:
    """``nmse_x1e2/<method>/<modality>_<lo>-<hi>`` -> mean over seeds, for MLflow."""
    return {
        f"nmse_x1e2/{m}/{mod}_{c['r_min']:g}-{c['r_max']:g}": c["mean"]
        for m, per_mod in stats.items()
        for mod, cells in per_mod.items()
        for c in cells
    }


__all__ = [
    "ReproduceResult",
    "ReproduceStudy",
    "classical_reference",
    "machine_label",
    "results_content",
    "run_reproduce",
    "study_configs",
    "study_dir",
    "write_results",
]

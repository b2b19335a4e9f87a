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
support draws of each seed's test evaluation. MLflow: a parent run ``reproduce:<name>`` with the
table means as metrics and the files as artifacts, one child run per method x seed.
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

import torch

from mia_core.config import Config
from mia_core.config.loader import flatten_config
from mia_core.runtime import cpu_has_bf16_matmul, cpu_name
from pipelines.data.resolve import open_training_store, resolve_store
from pipelines.data.stores import Store
from pipelines.engine.run_dir import refuse_changed_config, run_dir_of
from pipelines.reports.classical import EvalProtocol, fit_classical
from pipelines.reports.classical_cells import ClassicalRows, classical_cells
from pipelines.reports.eof_reference import eof_fit_nmse
from pipelines.reports.reference import mean_signal_nmse
from pipelines.studies.child_run import ChildJob, is_finished, train_children
from pipelines.studies.reproduce_adopt import (
    Adopted,
    adopt_results,
    config_digest,
    keep_adopted,
    write_adopted_curve,
)
from pipelines.studies.reproduce_curve import curve_evaluations, curve_rows, write_curve
from pipelines.studies.reproduce_report import (
    study_bins,
    table_stats,
    write_results_json,
    write_table1,
)
from pipelines.studies.reproduce_spec import CURVE_METHODS, ReproduceSpec, method_config
from pipelines.tracking import run_groups
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


def refuse_other_config(cfg: Config) -> None:
    """Refuse a run folder of the study that was made with another config."""
    refuse_changed_config(cfg, "change reproduce.name to run the new budget")


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
    configs = study_configs(spec, bases)
    first = next(iter(configs.values()))[spec.seeds[0]]
    adopted = adopt_results(spec, first, bases) if spec.adopt else Adopted({}, None, "")
    unfinished = {
        m for m, per_seed in configs.items() if not all(is_finished(c) for c in per_seed.values())
    }
    adopted = keep_adopted(adopted, unfinished)
    trained = {m: per_seed for m, per_seed in configs.items() if m not in adopted.stats}
    for per_seed in trained.values():
        for cfg in per_seed.values():
            refuse_other_config(cfg)
    if adopted.stats:
        log(f"reproduce {spec.name}: {sorted(adopted.stats)} adopted from {spec.adopt}")
    out = study_dir(spec, bases)
    out.mkdir(parents=True, exist_ok=True)
    parent = run_groups.open_run(
        first,
        out / "mlflow_run_id",
        f"reproduce:{spec.name}",
        params={
            "reproduce.backbone": spec.backbone,
            "reproduce.methods": json.dumps(spec.ordered_methods()),
            "reproduce.seeds": json.dumps(spec.seeds),
            "reproduce.budget": json.dumps(spec.budget),
            "reproduce.curve_steps": json.dumps(spec.curve_steps),
            "reproduce.adopted": json.dumps(sorted(adopted.stats)),
            **{f"base.{k}": v for k, v in flatten_config(first).items()},
        },
        tags={"reproduce": spec.name},
    )
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        # Seed-major: a study stopped partway has whole seeds of every method.
        order = [(m, s) for s in spec.seeds for m in trained]
        children = [
            ChildJob(configs[m][s], f"{m}/{configs[m][s].run.name}", {"reproduce.method": m})
            for m, s in order
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
        metrics: dict[str, dict[int, dict]] = {m: {} for m in trained}
        for (m, s), result in zip(order, done, strict=True):
            metrics[m][s] = result
        measured = table_stats(spec, first, metrics)
        stats = {m: adopted.stats.get(m) or measured[m] for m in configs}
        store = open_training_store(first)
        means = mean_signal_nmse(store, score="test")  # final table: the test split
        reference = {m: 100.0 * v for m, v in means.items()}
        eof = linear_reference(spec, first, store)
        classical = classical_reference(spec, configs, store, log) if spec.classical else None
        table, files = write_table1(spec, first, stats, out, reference, eof, classical)
        curve = None
        if spec.curve_steps and write_adopted_curve(adopted, out):
            log(f"reproduce {spec.name}: budget curve adopted from {spec.adopt}")
            curve = curve_rows(adopted.curve)
        elif spec.curve_steps:
            runs = {m: run_dir_of(configs[m][spec.curve_run_seed]) for m in CURVE_METHODS}
            evals = curve_evaluations(spec, runs, out / "curve", log)
            curve, curve_files, curve_metrics = write_curve(spec, first, evals, out)
            files += curve_files
            for step, values in curve_metrics.items():
                run_groups.log_metrics(first, parent, values, step)
        if spec.results_json:
            here = machine_label(first)
            extra = {
                "config_digests": {m: config_digest(bases[m]) for m in configs},
                "machines": {m: adopted.machines.get(m, here) for m in configs},
                **({"adopted": sorted(adopted.stats)} if adopted.stats else {}),
            }
            if classical is not None:
                extra.update(classical.results())
            files += write_results(
                spec, first, stats, out, Path(spec.results_json), reference, extra, eof
            )
    except BaseException:
        run_groups.close_run(first, parent, "FAILED")
        raise
    finally:
        torch.set_num_threads(threads)
    run_groups.log_metrics(first, parent, _flat_means(stats))
    run_groups.log_artifacts(first, parent, files)
    run_groups.close_run(first, parent)
    log(f"reproduce {spec.name}: {out} ({time.perf_counter() - t0:.0f} s)")
    return ReproduceResult(out, table, curve, files, parent)


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
    how = EvalProtocol(
        study_bins(cfg),
        cfg.run.eval_repeats,
        cfg.run.eval_batch_size,
        cfg.data.spatial_stride,
        cfg.data.time_stride,
        cfg.run.eval_protocol,
        cfg.data.psnr_range,
    )
    rows = fit_classical(store, spec.classical, how, cfg.run.seed + 1, log=log)
    seeds = {s: c.run.seed + 2 for s, c in per_seed.items()}
    cells = classical_cells(store, rows, how, seeds)
    return ClassicalRows(cells, {name: rec.label for name, rec in rows.items()})


def write_results(
    spec: ReproduceSpec,
    cfg: Config,
    stats: dict,
    out: Path,
    path: Path,
    reference: dict[str, float] | None = None,
    extra: dict | None = None,
    eof: dict[str, list[float]] | None = None,
) -> list[Path]:
    """The committed results: the JSON, and beside it copies of the study's figures.

    ``<stem>.png`` is Table 1's bar chart; with a budget curve the JSON also holds the
    study's ``curve.json`` under ``"curve"`` and ``<stem>_curve.png`` is its plot. Both
    figures are listed under ``"figures"`` (paths as given, for the README).
    ``reference`` (modality -> nMSE x 1e2 of the train split's mean signal,
    :mod:`pipelines.reports.reference`) goes under ``"train_mean_x1e2"``; ``eof`` (the
    linear reference, modality -> per-bin nMSE x 1e2) under ``"eof_x1e2"``, with
    ``"eof_components"``; ``extra`` keys (config digests, adopted methods, the classical
    rows' ``ClassicalRows.results``) are added as they are.
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
    return [write_results_json(spec, cfg, stats, path, extra), *figures]


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
    "classical_reference",
    "refuse_other_config",
    "run_reproduce",
    "study_configs",
    "study_dir",
    "write_results",
]

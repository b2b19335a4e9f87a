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

Every variant x seed is an ordinary training run (``pipelines.engine.loop.run_training``, in
this process) under ``<run.out_dir>/ablation/<name>/<dataset>/<variant>/seed<k>`` with
test metrics in its ``metrics.json``; finished runs are skipped and interrupted ones
resume from ``last.pt``, so re-running the job continues a study. All runs of a dataset
share its store (the synthetic one is built once). MLflow: a parent run for the study, a
child run per variant x seed, the report, tables and figures on the parent.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mia_core.config import Config, ConfigError, load_config
from mia_core.config.loader import flatten_config
from pipelines.studies import ablation_analysis as an
from pipelines.tracking import run_groups
from pipelines.tracking.tracker import tracking_uri

STUDIES = ("components", "states", "modalities", "trajectories")
_ALL = {"use_usft": True, "use_msft": True, "use_fusion": True}
_STATES = {"state_params": True, "state_grads": True, "state_scaling": True}
# variant -> (method.name, sft switches); "subset" also restricts data.modalities.
VARIANTS: dict[str, tuple[str, dict[str, bool]]] = {
    "cavia": ("cavia", {}),
    "usft": ("mia", {**_STATES, "use_usft": True, "use_msft": False, "use_fusion": False}),
    "usft_msft": ("mia", {**_STATES, "use_usft": True, "use_msft": True, "use_fusion": False}),
    "full": ("mia", {**_STATES, **_ALL}),
    "grads": ("mia", {**_ALL, "state_params": False, "state_grads": True, "state_scaling": False}),
    "grads_scaling": (
        "mia",
        {**_ALL, "state_params": False, "state_grads": True, "state_scaling": True},
    ),
    "subset": ("mia", {**_STATES, **_ALL}),
    "frozen_sft": ("mia", {**_STATES, **_ALL}),
}
NEEDS = {
    "components": ["cavia", "usft", "usft_msft", "full"],
    "states": ["cavia", "grads", "grads_scaling", "full"],
    "modalities": ["subset", "full"],
    "trajectories": ["cavia", "frozen_sft", "full"],
}


@dataclass
class DatasetSpec:
    """One dataset of the study.

    Attributes:
        base: experiment YAML (relative to the study file).
        target: the modality shared by the modality-replacement and trajectory studies.
        overrides: ``key=value`` overrides for this dataset (e.g. ``data.store=...``).
    """

    base: str
    target: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class AblationSpec:
    """A study, as read from ``configs/ablation/*.yaml``.

    Attributes:
        name: folder ``<run.out_dir>/ablation/<name>`` and MLflow parent run name.
        datasets: name -> :class:`DatasetSpec`.
        seeds: ``run.seed`` of the repeats (at least 2 for a standard deviation).
        budget: ``key=value`` overrides applied to every run (steps, batch, widths...):
            the knob between a minutes-long and an hours-long study.
        studies: subset of ``STUDIES``.
        target_ratio: support ratio of the target in the trajectory study.
        source_ratios: support ratios of the other modalities in the trajectory study.
        attention_ratio: ``[R_min, R_max]`` drawn per signal and modality for the
            attention correlation.
        analysis_signals: test signals used by the trajectory and attention analyses.
        plot_signals: signals drawn in the trajectory figure.
        run_figures: draw every run's reconstruction figures (off: seconds per run).
        threads: torch intra-op threads while the study runs (1 is ~10x faster than 2
            on a shared 2-core machine: OpenMP spin-waits under contention).
    """

    name: str
    datasets: dict[str, DatasetSpec]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=lambda: list(STUDIES))
    target_ratio: float = 0.02
    source_ratios: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.2, 0.5])
    attention_ratio: list[float] = field(default_factory=lambda: [0.01, 0.5])
    analysis_signals: int = 64
    plot_signals: int = 3
    run_figures: bool = False
    threads: int = 1


def load_ablation(
    path: str | Path, extra: list[str] = ()
) -> tuple[AblationSpec, dict[str, Config]]:
    """Read a study file; returns the spec and each dataset's validated base config.

    ``extra`` are ``key=value`` overrides: ``ablation.<field>=value`` sets a study field
    (``ablation.seeds=[0,1,2,3,4]``), anything else is appended to the budget.

    Raises:
        ConfigError: naming the file and key (unknown field or study, fewer than two
            seeds, a target that is not one of the dataset's modalities, bad overrides).
    """
    path = Path(path)
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file must be a mapping")
    budget_extra = []
    for item in extra:
        key, _, value = item.partition("=")
        if key.startswith("ablation."):
            raw[key[9:]] = yaml.safe_load(value)
        else:
            budget_extra.append(item)
    known = {f.name for f in dataclasses.fields(AblationSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown study key(s) {unknown}; expected {sorted(known)}")
    for req in ("name", "datasets"):
        if req not in raw:
            raise ConfigError(f"{path}: missing study key '{req}'")
    if not isinstance(raw["datasets"], dict) or not raw["datasets"]:
        raise ConfigError(f"{path}: 'datasets' must map names to {{base, target}}")
    datasets = {}
    for name, d in raw["datasets"].items():
        dk = {f.name for f in dataclasses.fields(DatasetSpec)}
        if not isinstance(d, dict) or set(d) - dk or not {"base", "target"} <= set(d):
            raise ConfigError(f"{path}: datasets.{name} needs base and target (keys {sorted(dk)})")
        datasets[name] = DatasetSpec(
            str((path.parent / d["base"]).resolve()), d["target"], list(d.get("overrides", []))
        )
    spec = AblationSpec(**{**raw, "datasets": datasets})
    spec.budget = [*spec.budget, *budget_extra]
    bad = sorted(set(spec.studies) - set(STUDIES))
    if bad:
        raise ConfigError(f"{path}: studies: unknown {bad}; expected a subset of {list(STUDIES)}")
    if len(spec.seeds) < 2 or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"{path}: seeds: need at least two distinct seeds, got {spec.seeds}")
    bases = {}
    for name, d in spec.datasets.items():
        cfg = load_config(d.base, [*d.overrides, *spec.budget])
        if d.target not in cfg.data.modalities:
            raise ConfigError(
                f"{path}: datasets.{name}.target: {d.target!r} is not one of "
                f"data.modalities {cfg.data.modalities}"
            )
        if len(cfg.data.modalities) < 2:
            raise ConfigError(f"{path}: datasets.{name}: the study needs >= 2 modalities")
        bases[name] = cfg
    return spec, bases


def variant_config(base: Config, variant: str, seed: int, root: Path, target: str) -> Config:
    """The run config of one variant x seed (see ``VARIANTS``)."""
    method, switches = VARIANTS[variant]
    sft = dataclasses.replace(base.method.sft, **switches)
    cfg = dataclasses.replace(base, method=dataclasses.replace(base.method, name=method, sft=sft))
    if variant == "subset":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, modalities=[target]))
    run = dataclasses.replace(cfg.run, name=f"seed{seed}", seed=seed, out_dir=str(root / variant))
    return dataclasses.replace(cfg, run=run)


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
    spec: AblationSpec, bases: dict[str, Config], log: Callable[[str], None] = print
) -> AblationResult:
    """Run (or continue) the study and write the report; see the module docstring."""
    from pipelines.data.resolve import resolve_store

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
    import torch

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
            for variant in [v for v in needed if v != "frozen_sft"] + (
                ["frozen_sft"] if "frozen_sft" in needed else []
            ):
                for seed in spec.seeds:
                    cfg = variant_config(base, variant, seed, root, target)
                    hook = None
                    if variant == "frozen_sft":
                        cavia_dir = root / "cavia" / f"seed{seed}" / "checkpoints"
                        ckpt = cavia_dir / "best.pt"
                        hook = an.freeze_inrs_hook(ckpt if ckpt.exists() else cavia_dir / "last.pt")
                    runs[variant][seed] = _run(
                        cfg, parent, ds, variant, hook, log, spec.run_figures
                    )
            tables.update(_tables(spec, ds, base, target, runs, root, figures, log))
        report = _report(spec, tables, figures, out, time.perf_counter() - t0)
    except BaseException:
        run_groups.close_run(parent_cfg, parent, "FAILED")
        raise
    finally:
        torch.set_num_threads(threads)
    for name, rows in tables.items():
        _write_csv(rows, out / "tables" / f"{name}.csv")
    run_groups.log_artifacts(parent_cfg, parent, [report])
    run_groups.log_artifacts(parent_cfg, parent, [out / "tables"], "tables")
    run_groups.log_artifacts(parent_cfg, parent, [out / "figures"], "figures")
    run_groups.close_run(parent_cfg, parent)
    log(f"ablation {spec.name}: report {report}")
    return AblationResult(out, report, tables, parent)


def _run(cfg: Config, parent: str, ds: str, variant: str, hook, log, figures: bool) -> dict:
    """Train + evaluate one variant x seed unless finished; returns its metrics.json."""
    from pipelines.engine.loop import run_dir_of, run_training

    run_dir = run_dir_of(cfg)
    done = run_dir / "metrics.json"
    if (run_dir / "config.yaml").exists():
        old = load_config(run_dir / "config.yaml")
        if old != cfg:
            a, b = flatten_config(old), flatten_config(cfg)
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise ConfigError(
                f"{run_dir} was made with another config (differs in {diff[:5]}); "
                "change the study's name to run the new budget"
            )
    label = f"{ds}/{variant}/{cfg.run.name}"
    if done.exists():
        log(f"[{label}] finished before: skipped")
    else:
        run_groups.open_run(
            cfg,
            run_dir / "mlflow_run_id",
            label,
            parent_id=parent,
            tags={"ablation.dataset": ds, "ablation.variant": variant},
        )
        run_training(cfg, log=lambda s: log(f"[{label}] {s}"), init_hook=hook, figures=figures)
    # The training Tracker names its MLflow run after run.name (seed<k>): restore the label.
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run_groups.client_for(cfg).set_tag(run_id, "mlflow.runName", label)
    return json.loads(done.read_text())


def _tables(spec, ds, base, target, runs, root, figures, log) -> dict[str, list[list[str]]]:
    import torch

    from pipelines.data.resolve import open_training_store

    seeds = spec.seeds
    out: dict[str, list[list[str]]] = {}
    head = ["G (%)", "M (%)", "nmse non-support x1e2", "nmse support x1e2"]

    def improvement_rows(variants: list[tuple[str, list[str]]]) -> list[list[str]]:
        rows = []
        for v, marks in variants:
            t = {s: runs[v][s]["test"] for s in seeds}
            ref = {s: runs["cavia"][s]["test"] for s in seeds}
            g = [an.relative_improvement(t[s], ref[s], "nmse_nonsupport") for s in seeds]
            m = [an.relative_improvement(t[s], ref[s], "nmse_support") for s in seeds]
            ns = [100 * _mean(t[s], "nmse_nonsupport") for s in seeds]
            sp = [100 * _mean(t[s], "nmse_support") for s in seeds]
            rows.append([*marks, an.fmt(g), an.fmt(m), an.fmt(ns), an.fmt(sp)])
        return rows

    yes, no = "✓", "✗"
    if "components" in spec.studies:
        out[f"{ds}_components"] = [
            ["USFT", "MSFT", "Fusion MLP", *head],
            *improvement_rows(
                [
                    ("cavia", [no, no, no]),
                    ("usft", [yes, no, no]),
                    ("usft_msft", [yes, yes, no]),
                    ("full", [yes, yes, yes]),
                ]
            ),
        ]
    if "states" in spec.studies:
        out[f"{ds}_states"] = [
            ["Params", "Grads", "Scaling", *head],
            *improvement_rows(
                [
                    ("grads", [no, yes, no]),
                    ("grads_scaling", [no, yes, yes]),
                    ("full", [yes, yes, yes]),
                ]
            ),
        ]
    if "modalities" in spec.studies:
        rows = [
            [
                "support ratio",
                f"{target} only: nmse x1e2",
                "all modalities: nmse x1e2",
                "improvement (%)",
            ]
        ]
        for lo, hi in base.run.eval_bins:
            sub = [100 * _bin(runs["subset"][s]["test"], target, lo, hi) for s in seeds]
            full = [100 * _bin(runs["full"][s]["test"], target, lo, hi) for s in seeds]
            imp = [100 * (a - b) / a for a, b in zip(sub, full, strict=True)]
            rows.append([f"[{lo:g}, {hi:g}]", an.fmt(sub), an.fmt(full), an.fmt(imp)])
        out[f"{ds}_modalities"] = rows
    if "trajectories" in spec.studies:
        store = open_training_store(base)
        device = torch.device("cpu")
        per_seed, corr = [], []
        for s in seeds:
            learners = {
                "cavia": an.load_learner(root / "cavia" / f"seed{s}", store, device),
                "sft": an.load_learner(root / "frozen_sft" / f"seed{s}", store, device),
            }
            res = an.trajectories(
                learners,
                store,
                target,
                spec.target_ratio,
                spec.source_ratios,
                spec.analysis_signals,
                base.run.seed + 11,
                base.data.spatial_stride,
            )
            per_seed.append(res)
            if s == seeds[0]:
                figures.append(
                    an.plot_trajectories(
                        res,
                        target,
                        root / "figures" / f"trajectories_{target}.png",
                        spec.plot_signals,
                        f"{ds}: {target} context trajectories (R_target={spec.target_ratio:g}, "
                        f"seed {s})",
                    )
                )
            full = an.load_learner(root / "full" / f"seed{s}", store, device)
            c, abar, mods = an.attention_correlation(
                full,
                store,
                tuple(spec.attention_ratio),
                spec.analysis_signals,
                base.run.seed + 13,
                base.data.spatial_stride,
            )
            corr.append(c)
            if s == seeds[0]:
                figures.append(
                    an.plot_matrix(
                        abar / abar.max(),
                        mods,
                        f"{ds}: mean MSFT attention (row-scaled, seed {s})",
                        root / "figures" / "msft_attention_mean.png",
                    )
                )
        rows = [
            [
                "source ratio",
                f"CAVIA (GD): {target} nmse x1e2",
                f"frozen CAVIA + SFT: {target} nmse x1e2",
                "improvement (%)",
            ]
        ]
        for r in spec.source_ratios:
            a = [100 * p["nmse"]["cavia"][r] for p in per_seed]
            b = [100 * p["nmse"]["sft"][r] for p in per_seed]
            imp = [100 * (x - y) / x for x, y in zip(a, b, strict=True)]
            rows.append([f"{r:g}", an.fmt(a), an.fmt(b), an.fmt(imp)])
        out[f"{ds}_trajectories"] = rows
        import numpy as np

        stack = np.stack(corr)
        out[f"{ds}_attention_pearson"] = [
            ["C_ij (i = attending, j = support size of)", *mods],
            *[
                [mods[i], *(an.fmt(list(stack[:, i, j]), 2) for j in range(len(mods)))]
                for i in range(len(mods))
            ],
        ]
        figures.append(
            an.plot_matrix(
                stack.mean(0),
                mods,
                f"{ds}: Pearson C_ij, MSFT attention vs support size ({len(seeds)} seeds)",
                root / "figures" / "attention_pearson.png",
            )
        )
    log(f"ablation {spec.name}: {ds} tables done")
    return out


def _mean(test: list[dict], key: str) -> float:
    vals = [r[key] for r in test if r[key] == r[key]]
    return sum(vals) / len(vals)


def _bin(test: list[dict], modality: str, lo: float, hi: float) -> float:
    for r in test:
        if r["modality"] == modality and r["r_min"] == lo and r["r_max"] == hi:
            return r["nmse_all"]
    raise KeyError(f"no test row for {modality} in [{lo}, {hi}]")


def _md(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _write_csv(rows: list[list[str]], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


CAPTIONS = {
    "components": "SFT components: relative improvement over CAVIA on non-support points "
    "(G, generalisation) and support points (M, memorisation), mean over modalities and "
    "support-ratio bins, and the absolute normalised MSEs.",
    "states": "SFT state inputs (Params + Grads + Scaling is the full model): relative "
    "improvement over CAVIA.",
    "modalities": "Modality replacement: MIA trained and evaluated on the target modality "
    "alone vs on all modalities; normalised MSE of the target (all points) per support-ratio "
    "bin.",
    "trajectories": "Learning trajectories: target nmse after the inner loop of a frozen "
    "CAVIA (GD) and of an SFT meta-learned on top of it, for the target at the trajectory "
    "ratio and the other modalities at each source ratio.",
    "attention_pearson": "Pearson C_ij between the full model's mean MSFT attention from "
    "modality i to modality j and the support size of modality j, over test signals.",
}


def _report(spec, tables, figures, out: Path, seconds: float) -> Path:
    lines = [
        f"# Ablation study `{spec.name}`",
        "",
        f"Seeds {spec.seeds} (mean ± std); budget overrides: `{' '.join(spec.budget) or '-'}`; "
        f"wall time of this invocation {seconds / 60:.1f} min (finished runs are reused).",
        "",
    ]
    for name, rows in tables.items():
        ds, _, study = name.partition("_")
        lines += [f"## {ds}: {study}", "", CAPTIONS.get(study, ""), "", _md(rows), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}](figures/{p.parent.parent.name}_{p.name})" for p in figures]
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for p in figures:
        (fig_dir / f"{p.parent.parent.name}_{p.name}").write_bytes(p.read_bytes())
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = [
    "AblationResult",
    "AblationSpec",
    "DatasetSpec",
    "load_ablation",
    "run_ablation",
    "variant_config",
]

"""The one study driver: sweeps, ablations, reproductions and comparisons are each a Study.

A study says what runs (:meth:`Study.children`, or its own :meth:`Study.train`: a sweep's
trials come from Ray Tune), how the results are read (:meth:`Study.read`: tables, figures,
the results JSON's content) and how its table is rendered (:meth:`Study.render`, also what
``--readme`` writes into the study's docs page). :func:`run_study` owns the rest, once for
all: the refusal of a run folder made with another config, the MLflow parent run
``<section>:<name>`` (closed FAILED on an error, KILLED on :class:`StudyInterrupted`), the
torch threads while the study runs, the child runs (:mod:`pipelines.studies.child_run`:
finished ones skipped, interrupted ones resumed, ``workers`` at a time), the results JSON
and the parent's metrics and artifacts. :func:`load_study_file` reads every study file,
:func:`markdown` is the one table renderer (``tabulate``) and :func:`write_docs` fills a
docs page's generated block from a results JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from tabulate import tabulate

from mia_core.config import Config, load_config
from mia_core.config.spec import Validated, load_spec, split_overrides
from pipelines.data.stores.results_file import read_results, write_results
from pipelines.engine.run_dir import refuse_changed_config
from pipelines.reports.readme_blocks import write_block
from pipelines.studies.child_run import ChildJob, train_children
from pipelines.tracking import run_groups

Log = Callable[[str], None]
Results = dict[Hashable, dict[str, Any]]
Render = Callable[[dict[str, Any], str, str], str]
S = TypeVar("S", bound=Validated)


@dataclass
class BaseEntry(Validated):
    """A base experiment named by a study file (a method, a dataset).

    Attributes:
        base: experiment YAML (relative to the study file; absolute once loaded).
        overrides: ``key=value`` overrides of this entry only (before the budget).
    """

    base: str
    overrides: list[str] = field(default_factory=list)


class StudyInterrupted(RuntimeError):
    """The study stopped before every run finished (running it again resumes it)."""


@dataclass
class Outcome:
    """What a study's :meth:`Study.read` made of its results.

    Attributes:
        value: what the study's ``run_<kind>`` function returns.
        files: written files, logged to the parent run (the results JSON is added).
        metrics: scalars logged to the parent run.
        results: the results JSON's content (or its entry under ``Study.results_key``);
            ``None``: none.
    """

    value: Any
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] | None = None


@dataclass(frozen=True)
class ParentRun:
    """The study's MLflow parent run (``cfg`` gives its tracking URI)."""

    cfg: Config
    run_id: str

    def log_metrics(self, values: dict[str, Any], step: int = 0) -> None:
        """Log finite scalars at ``step``."""
        run_groups.log_metrics(self.cfg, self.run_id, values, step)

    def log_artifacts(self, paths: Sequence[Path], subdir: str | None = None) -> None:
        """Upload files or folders (under ``subdir``)."""
        run_groups.log_artifacts(self.cfg, self.run_id, list(paths), subdir)


class Study(Protocol):
    """One study: what runs, how its results are read, how its table is rendered.

    Attributes:
        section: the study file's override prefix, MLflow parent ``<section>:<name>``.
        name: the study's name.
        out: the study folder (keeps the parent run id).
        cfg: a run config of the study (tracking URI of the parent run).
        threads: torch threads while the study runs (``None``: left as they are).
        results_json: results file to write (relative to the working directory); empty:
            none.
        results_key: merge the results under this key of the file; ``None``: replace it.
    """

    section: str
    name: str
    out: Path
    cfg: Config
    threads: int | None
    results_json: str
    results_key: str | None

    def params(self) -> dict[str, Any]:
        """The parent run's parameters."""
        ...

    def children(self) -> list[ChildJob]:
        """What runs: the study's child runs, in the order they are started."""
        ...

    def train(self, children: list[ChildJob], parent: str, log: Log, **kw: Any) -> Results:
        """Train ``children`` (``kw``: ``local``, ``address``); returns key -> metrics."""
        ...

    def read(self, results: Results, run: ParentRun, log: Log) -> Outcome:
        """Tables, figures and the results JSON from every run's metrics."""
        ...

    def render(self, results: dict[str, Any], source: str, page_dir: str) -> str:
        """The markdown table of a results JSON (``source``: its path, named in captions)."""
        ...


class ChildStudy:
    """Base of the studies whose runs are child jobs: sets ``workers``, ``threads``, ``figures``.

    ``figures`` (each run's reconstruction figures) goes to the runs unless ``None``.
    """

    workers: int = 1
    threads: int | None = 1
    figures: bool | None = None

    def train(self, children: list[ChildJob], parent: str, log: Log, **kw: Any) -> Results:
        """Train every unfinished child, ``workers`` at a time; returns key -> metrics."""
        if self.figures is not None:
            kw["figures"] = self.figures
        done = train_children(
            children, parent, log, workers=self.workers, threads=self.threads or 1, **kw
        )
        return {c.key: m for c, m in zip(children, done, strict=True)}


@contextmanager
def parent_run(
    cfg: Config,
    out: Path,
    name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    threads: int | None = None,
) -> Iterator[ParentRun]:
    """Open (or find again) the parent run in ``out``; close it FAILED/KILLED on errors.

    ``threads`` torch threads are set while the body runs and restored after it.
    """
    out.mkdir(parents=True, exist_ok=True)
    run = ParentRun(cfg, run_groups.open_run(cfg, out / "mlflow_run_id", name, params, tags=tags))
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield run
    except StudyInterrupted:
        run_groups.close_run(cfg, run.run_id, "KILLED")
        raise
    except BaseException:
        run_groups.close_run(cfg, run.run_id, "FAILED")
        raise
    finally:
        torch.set_num_threads(saved)
    run_groups.close_run(cfg, run.run_id)


def run_study(study: Study, log: Log = print, **train_kwargs: Any) -> Outcome:
    """Run (or continue) ``study``: see the module docstring.

    Args:
        study: the study.
        log: line printer.
        **train_kwargs: ``local`` and ``address``, for :meth:`Study.train`.

    Raises:
        ConfigError: a run folder of the study was made with another config.
    """
    children = study.children()
    for child in children:
        refuse_changed_config(child.cfg, f"change {study.section}.name to run the new budget")
    name, tags = f"{study.section}:{study.name}", {study.section: study.name}
    with parent_run(study.cfg, study.out, name, study.params(), tags, study.threads) as run:
        results = study.train(children, run.run_id, log, **train_kwargs)
        outcome = study.read(results, run, log)
        if study.results_json and outcome.results is not None:
            path = write_results_json(study.results_json, outcome.results, study.results_key)
            outcome.files.append(path)
            log(f"{study.section} {study.name}: wrote {path}")
        run.log_metrics(outcome.metrics)
        run.log_artifacts(outcome.files)
    return outcome


def load_study_file(
    cls: type[S],
    path: str | Path,
    extra: Sequence[str],
    section: str,
    bases: Sequence[str] = (),
    rest: str = "budget",
) -> S:
    """Read a study file whose top level is ``cls``; ``<section>.<field>=v`` overrides it.

    Every other ``key=value`` of ``extra`` is appended to the field ``rest``; the fields
    named in ``bases`` (a path, or a mapping of entries with a ``base`` path) are made
    absolute, relative to the study file.

    Raises:
        ConfigError: naming the file or override and the key.
    """
    path = Path(path)
    own, others = split_overrides(extra, section)
    spec = load_spec(cls, path, own, section, nested=False)
    changes: dict[str, Any] = {rest: [*getattr(spec, rest), *others]}
    for name in bases:
        value = getattr(spec, name)
        if isinstance(value, str):
            changes[name] = str((path.parent / value).resolve())
        else:
            changes[name] = {
                k: dataclasses.replace(v, base=str((path.parent / v.base).resolve()))
                for k, v in value.items()
            }
    return dataclasses.replace(spec, **changes)


def base_configs(
    entries: Mapping[str, Any],
    budget: Sequence[str],
    where: str,
    check: Callable[[str, Any, Config, str], None],
) -> dict[str, Config]:
    """Each entry's base config (its ``base`` with its ``overrides``, then ``budget``).

    ``check(name, entry, cfg, where)`` raises ``ConfigError`` naming ``where.<name>``.
    """
    configs = {}
    for name, entry in entries.items():
        cfg = load_config(entry.base, [*entry.overrides, *budget])
        check(name, entry, cfg, f"{where}.{name}")
        configs[name] = cfg
    return configs


def json_safe(x: Any) -> Any:
    """``x`` with NaN floats as ``None`` (strict JSON)."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def write_results_json(path: str | Path, data: dict[str, Any], key: str | None = None) -> Path:
    """Write ``data`` to the results JSON ``path`` (merged under ``key`` when given)."""
    if key is not None:
        data = {**read_results(path), key: data}
    return write_results(path, json.dumps(json_safe(data), indent=1) + "\n")


def markdown(rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table of ``rows`` (first row the header), cells as given."""
    head, *body = [[str(c) for c in r] for r in rows]
    lines = tabulate(body, head, tablefmt="github", disable_numparse=True, stralign=None)
    lines = lines.split("\n")
    lines[1] = "|" + "---|" * len(head)  # a short rule: diffs of generated blocks stay small
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Sequence[Any]], path: Path) -> Path:
    """Write ``rows`` (first row the header) as CSV, creating the folder; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def write_docs(
    page: str | Path, results_json: str | Path, render: Render, block: str | None = None
) -> Path:
    """Fill the block ``block`` (default: the JSON's stem) of ``page`` from ``results_json``.

    Raises:
        FileNotFoundError: no results JSON (the study has not run).
    """
    page, results_json = Path(page), Path(results_json)
    if not results_json.exists():
        raise FileNotFoundError(f"{results_json}: no results JSON (run the study first)")
    results = json.loads(results_json.read_text())
    text = render(results, str(results_json), os.path.dirname(page) or ".")
    return write_block(page, block or results_json.stem, text)


__all__ = [
    "BaseEntry",
    "ChildStudy",
    "Outcome",
    "ParentRun",
    "Study",
    "StudyInterrupted",
    "base_configs",
    "json_safe",
    "load_study_file",
    "markdown",
    "parent_run",
    "run_study",
    "write_csv",
    "write_docs",
    "write_results_json",
]

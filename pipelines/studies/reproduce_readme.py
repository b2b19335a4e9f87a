"""Table 1 of the docs, generated from the committed results JSON (never edited by hand).

``mia-inr reproduce --readme`` reads a results JSON (the layout of
:func:`pipelines.studies.reproduce_report.results_data`) such as
``benchmarks/results/mia_table1.json`` and replaces the text between the markers named
after the file's stem, ``<!-- mia_table1:begin -->`` and ``<!-- mia_table1:end -->``, in
its docs page (``docs/reproduction.md``; ``mia_fields.json`` fills ``mia_fields``);
everything outside the markers is left byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

from mia_core.config import ConfigError
from pipelines.reports.readme_blocks import markers, replace_between_markers
from pipelines.studies.driver import markdown, write_docs
from pipelines.studies.reproduce_curve import curve_rows
from pipelines.studies.reproduce_report import LABELS, RATIO, REFERENCE, eof_label

BEGIN, END = markers("mia_table1")
BIN_NAMES = ("lowest", "middle", "highest")
KEYS = ("protocol", "steps", "seeds", "backbone", "nmse_x1e2")


def readme_table(results: dict, source: str, page_dir: str = ".") -> str:
    """The markdown block (caption + table + MIA / CAVIA row) for ``results``.

    Args:
        results: the results JSON's content.
        source: the JSON's path, named in the caption.
        page_dir: the folder of the page the block goes in (figure links are relative
            to it; ``docs`` for ``docs/reproduction.md``).

    Raises:
        ConfigError: a key of the layout is missing.
    """
    missing = [k for k in KEYS if k not in results]
    if missing:
        raise ConfigError(f"{source}: missing {missing}; expected the keys {list(KEYS)}")
    nmse: dict[str, dict[str, list[float]]] = results["nmse_x1e2"]
    mods = list(next(iter(nmse.values())))
    n = len(next(iter(nmse.values()))[mods[0]])
    names = BIN_NAMES if n == 3 else tuple(f"bin {i + 1}" for i in range(n))
    rows = [["method"] + [f"{m} ({b})" for m in mods for b in names]]
    for method, per_mod in nmse.items():
        rows.append([LABELS.get(method, method)] + [_fmt(v) for m in mods for v in per_mod[m]])
    if "mia" in nmse and "cavia" in nmse:
        rows.append(
            [RATIO]
            + [
                _fmt(a / b if a is not None and b else None, 3)
                for m in mods
                for a, b in zip(nmse["mia"][m], nmse["cavia"][m], strict=True)
            ]
        )
    if "train_mean_x1e2" in results:
        ref = results["train_mean_x1e2"]
        rows.append([REFERENCE] + [_fmt(ref[m]) for m in mods for _ in names])
    if "eof_x1e2" in results:
        eof = results["eof_x1e2"]
        label = eof_label(results["eof_components"])
        rows.append([label] + [_fmt(v) for m in mods for v in eof[m]])
    seeds = ", ".join(map(str, results["seeds"]))
    store = f"store `{results['store']}`, " if results.get("store") else ""
    caption = (
        f"{store}{results['backbone']} backbone, {results['steps']} outer steps, mean over seeds "
        f"{seeds}; test nMSE x 1e2 per support-ratio bin. Protocol: {results['protocol']}. "
        f"Generated from `{source}` by `mia-inr reproduce --readme`."
    )
    machines = results.get("machines", {})
    if len(set(machines.values())) > 1:
        groups: dict[str, list[str]] = {}
        for m, where in machines.items():
            groups.setdefault(where, []).append(LABELS.get(m, m))
        caption += (
            " Measured on: "
            + "; ".join(f"{', '.join(ms)}: {where}" for where, ms in groups.items())
            + "."
        )
    elif machines:
        caption += f" Measured on: {next(iter(machines.values()))}."
    if results.get("adopted"):
        names = ", ".join(LABELS.get(m, m) for m in results["adopted"])
        caption += (
            f" Rows carried from an earlier run of this study (`reproduce.adopt`: same store, "
            f"steps, seeds and protocol): {names}."
        )
    block = f"{caption}\n\n{markdown(rows)}"
    if "curve" in results:
        block += "\n" + curve_table(results["curve"])
    for fig in results.get("figures", []):  # repository paths, linked from the page's folder
        block += f"\n![{Path(fig).stem}]({os.path.relpath(fig, page_dir)})\n"
    return block


def curve_table(curve: dict) -> str:
    """The budget curve (``results["curve"]``): lowest-bin MIA, CAVIA and MIA / CAVIA per step."""
    lo, hi = curve["bin"]
    return (
        f"Budget curve (seed {curve['seed']}, snapshots of one run, lowest bin "
        f"[{lo:g}, {hi:g}]):\n\n{markdown(curve_rows(curve))}"
    )


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def update_readme(readme: str | Path, results_json: str | Path) -> Path:
    """Regenerate ``readme``'s block of ``results_json`` (markers named after its stem)."""
    return write_docs(readme, results_json, readme_table)


__all__ = [
    "BEGIN",
    "END",
    "curve_table",
    "markers",
    "readme_table",
    "replace_between_markers",
    "update_readme",
]

"""Sparse-field reconstruction on real data: MIA, CAVIA and the classical tools, per bin.

Collects the fields studies (``mia-inr reproduce``, run with ``--run`` or beforehand) into
``benchmarks/results/sparse_fields.json``, in the layout the checks read::

    {"datasets": [{"name", "real", "variables", "time_steps", "seeds", "bins",
                   "nmse_x1e2": {"mia": {var: [per bin]}, "cavia": {...}, "<row>": {...}},
                   "classical": ["eof", ...]}]}

and the generated page ``docs/results/sparse_fields.md`` with the issue's targets: MIA below
every classical row and below CAVIA in every bin, and at most 0.5x CAVIA in the lowest.
Studies not run yet are listed as missing, never filled in.

    python benchmarks/sparse_fields.py            # collect the committed study results
    python benchmarks/sparse_fields.py --run      # run each study first (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.data.stores import make_location, open_store  # noqa: E402
from pipelines.studies.reproduce_spec import load_reproduce  # noqa: E402

STUDIES = (
    "configs/reproduce/fields_hadcm3_a1b.yaml",
    "configs/reproduce/fields_hadcm3_a1b_sparse.yaml",
    "configs/reproduce/fields_ncep_wind10m.yaml",
)
RESULTS = ROOT / "benchmarks/results/sparse_fields.json"
DOCS = ROOT / "docs/results/sparse_fields.md"


def dataset(config: str) -> dict | None:
    """One study's entry (None when its results JSON does not exist yet)."""
    spec, bases = load_reproduce(ROOT / config)
    path = ROOT / spec.results_json
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    budget = dict(b.split("=", 1) for b in spec.budget if "=" in b)
    store = open_store(make_location(str(ROOT / budget["data.store"])))
    rows = {m: res["nmse_x1e2"][m] for m in ("mia", "cavia") if m in res["nmse_x1e2"]}
    classical = list(res.get("classical", []))
    rows.update({c: res["classical_x1e2"][c] for c in classical})
    return {
        "name": spec.name,
        "real": True,
        "variables": list(store.modalities),
        "time_steps": int(store.num_signals),
        "seeds": list(res["seeds"]),
        "bins": res.get("bins")
        or [list(map(float, b)) for b in next(iter(bases.values())).run.eval_bins],
        "nmse_x1e2": rows,
        "classical": classical,
        "results_json": spec.results_json,
        "mia_overrides": list(spec.methods["mia"].overrides),
        "steps": int(res["steps"]),
        "variants": variant_choice(spec.name.removesuffix("_sparse")),
    }


def variant_choice(name: str) -> dict | None:
    """The validation choice of ``benchmarks/sparse_variants.py`` for a study, if run.

    Returns the chosen MIA variant, every variant's mean validation nMSE x 1e2, and
    MIA / CAVIA in the lowest bin per variable with and without the residual base.
    """
    path = ROOT / f"benchmarks/results/sparse_variants_{name}.json"
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    val = res["val_nmse_x1e2"]
    ratios = {}
    for mia, cavia in (("mia", "cavia"), ("mia_mv_eof", "cavia_mv_eof")):
        if mia in val and cavia in val:
            ratios[f"{mia} / {cavia}"] = {
                v: round(val[mia][v][0] / val[cavia][v][0], 4) for v in val[mia]
            }
    return {
        "json": str(path.relative_to(ROOT)),
        "chosen": res["chosen"],
        "mean_val_x1e2": res["mean_x1e2"],
        "val_lowest_bin_ratios": ratios,
    }


def verdicts(entry: dict) -> list[str]:
    """The targets, measured: per variable, where MIA is not below a row, and MIA / CAVIA."""
    out = []
    rows = entry["nmse_x1e2"]
    for var, mia in rows.get("mia", {}).items():
        losses = [
            f"{row} in bin {i}"
            for row, per_var in rows.items()
            if row != "mia"
            for i, (a, b) in enumerate(zip(mia, per_var.get(var, []), strict=False))
            if a is not None and b is not None and not (math.isfinite(b) and a < b)
        ]
        cavia = rows.get("cavia", {}).get(var)
        ratio = mia[0] / cavia[0] if cavia and cavia[0] else float("nan")
        out.append(
            f"{entry['name']} / {var}: MIA / CAVIA in the lowest bin {ratio:.2f} "
            f"(target <= 0.5: {'met' if ratio <= 0.5 else 'missed'}); MIA not below: "
            + (", ".join(losses) if losses else "none (met)")
        )
    return out


def render(result: dict, missing: list[str]) -> str:
    """The generated docs page."""
    lines = [
        "# Sparse-field reconstruction: MIA, CAVIA and the classical tools",
        "",
        f"Generated from `{RESULTS.relative_to(ROOT)}` by `python benchmarks/sparse_fields.py`;"
        " do not edit. Test-split nMSE x 1e2 per support-ratio bin, mean over seeds; every "
        "row is scored on the same support draws (docs/low_support.md for the MIA options).",
        "",
    ]
    for d in result["datasets"]:
        bins = " | ".join(f"[{a:g}, {b:g}]" for a, b in d["bins"])
        lines += [
            f"## {d['name']} ({', '.join(d['variables'])}; {d['time_steps']} time steps; "
            f"seeds {d['seeds']}; {d['steps']} outer steps)",
            "",
            f"MIA rows: the ERA5 CPU preset with `{' '.join(d['mia_overrides'])}`.",
            "",
            f"| row | variable | {bins} |",
            "|---|---|" + "---|" * len(d["bins"]),
        ]
        for row, per_var in d["nmse_x1e2"].items():
            for var, vals in per_var.items():
                cells = " | ".join("n/a" if v is None else f"{v:.4f}" for v in vals)
                lines.append(f"| {row} | {var} | {cells} |")
        lines += ["", *[f"- {v}" for v in verdicts(d)], ""]
        var = d.get("variants")
        if var:
            means = ", ".join(f"{k} {v:.4f}" for k, v in var["mean_val_x1e2"].items())
            lines += [
                f"MIA variant chosen on validation: **{var['chosen']}** "
                f"(`{var['json']}`; mean validation nMSE x 1e2: {means}).",
                "",
                *[
                    f"- validation, lowest bin, {pair}: "
                    + ", ".join(f"{v} {r:.3f}" for v, r in per.items())
                    for pair, per in var["val_lowest_bin_ratios"].items()
                ],
                "",
            ]
    if missing:
        lines += ["Not run yet (no results JSON): " + ", ".join(missing), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Optionally run the studies, then collect and write the JSON and the page."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="store_true", help="run each study (mia-inr reproduce)")
    args = p.parse_args(argv)
    if args.run:
        for config in STUDIES:
            cmd = [sys.executable, "-m", "ray_jobs.cli", "reproduce", "--config", config, "--local"]
            subprocess.run(cmd, cwd=ROOT, check=True)
    found, missing = [], []
    for config in STUDIES:
        entry = dataset(config)
        (found.append(entry) if entry else missing.append(config))
    result = {"datasets": found}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    DOCS.write_text(render(result, missing))
    for d in found:
        print("\n".join(verdicts(d)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Low-support variants of MIA (issue 35, item 3), measured and chosen on validation only.

Every variant trains the way a fields study trains (its study file's method base and
budget, ``--steps`` outer steps, ``--seeds``) and is scored by its end-of-training
**validation** report (``metrics_val.json``: ``mia-inr train`` reads no test signal):

- ``mia``: the study's MIA (SFT with the residual SGD term), the reference;
- ``mia_log_count`` / ``mia_density``: the support count (log) or density as an SFT state
  input (``method.sft.support_state``; ``density`` needs every query point, so it trains
  with ``data.query_points: 0``);
- ``mia_prior``: a learned pull toward the meta-initialisation at low support
  (``method.prior_pull``, ``prior_pull_learned``);
- ``mia_mv_eof`` / ``cavia_mv_eof``: the INR learns the residual of the validation-chosen
  multivariate EOF reconstruction (``data.residual_base: mv_eof``); on one variable it is
  the univariate EOF;
- ``cavia``: the study's CAVIA, for the ratio.

The winner is the MIA variant with the lowest mean validation nMSE over bins, variables
and seeds; ties within 1 % keep the simpler (earlier) one.

    python benchmarks/sparse_variants.py --study configs/reproduce/fields_ncep_wind10m.yaml

writes ``benchmarks/results/sparse_variants_<study name>.json`` and the generated page
``docs/results/sparse_variants_<study name>.md``. Needs the study's store (its header
says how to build it). Two runs at a time, one thread each (``--parallel``).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._val_runs import per_bin, train_val  # noqa: E402
from pipelines.studies.reproduce_spec import load_reproduce  # noqa: E402

MIA_VARIANTS = {
    "mia": [],
    "mia_mv_eof": ["data.residual_base=mv_eof"],
    "mia_log_count": ["method.sft.support_state=log_count"],
    "mia_prior": ["method.prior_pull=1.0", "method.prior_pull_learned=true"],
    "mia_density": ["method.sft.support_state=density", "data.query_points=0"],
}
CAVIA_VARIANTS = {"cavia": [], "cavia_mv_eof": ["data.residual_base=mv_eof"]}
_TIE = 0.01
# Run order: the reference pairs and the residual base first, the SFT options after.
ORDER = ["mia", "cavia", "mia_mv_eof", "cavia_mv_eof", "mia_log_count", "mia_prior"]


def variants(study: Path) -> tuple[str, dict[str, tuple[str, list[str]]]]:
    """The study's name and variant -> (experiment YAML, overrides before the variant's)."""
    spec, _ = load_reproduce(study)
    out = {}
    for family, table in (("mia", MIA_VARIANTS), ("cavia", CAVIA_VARIANTS)):
        method = spec.methods[family]
        for name, extra in table.items():
            out[name] = (method.base, [*method.overrides, *spec.budget, *extra])
    return spec.name, out


def render(result: dict, results: Path) -> str:
    """The generated docs page."""
    bins = result["bins"]
    head = "| variant | variable | " + " | ".join(f"[{a:g}, {b:g}]" for a, b in bins) + " |"
    lines = [
        f"# Low-support variants on {result['study_name']}, chosen on validation",
        "",
        f"Generated from `{results.relative_to(ROOT)}` by `python benchmarks/sparse_variants.py "
        f"--study {result['study']}`; do not edit.",
        "",
        f"Validation nMSE x 1e2 per support-ratio bin, mean over seeds {result['seeds']}, "
        f"{result['steps']} outer steps, the study's method settings and budget. Every number "
        "is from the runs' end-of-training validation report: no test signal was read.",
        "",
        head,
        "|" + "---|" * (len(bins) + 2),
    ]
    for name, per_var in result["val_nmse_x1e2"].items():
        for var, vals in per_var.items():
            lines.append(f"| {name} | {var} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    lines += ["", "Mean over bins and variables:", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in result["mean_x1e2"].items()]
    lines += [
        "",
        f"Chosen MIA variant: **{result['chosen']}** (lowest mean; a variant within "
        f"{_TIE:.0%} of the best keeps the simpler, earlier one).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every variant and seed, choose on validation, write the JSON and the page."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="configs/reproduce/fields_ncep_wind10m.yaml")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated variants (default: all)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    name, table = variants(ROOT / args.study)
    if args.only:
        table = {k: v for k, v in table.items() if k in args.only.split(",")}
    out_dir = ROOT / "runs" / "sparse_variants" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for v in table for s in seeds]
    jobs.sort(key=lambda j: ORDER.index(j[0]) if j[0] in ORDER else len(ORDER))
    threads = 1 if args.parallel > 1 else 0

    def one(job: tuple[str, int]) -> dict:
        v, s = job
        config, extra = table[v]
        overrides = [*extra, f"run.steps={args.steps}", f"run.seed={s}"]
        report = train_val(config, overrides, f"{v}_s{s}", out_dir, threads)
        print(f"{v} seed {s}: done", flush=True)
        return report

    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        reports = dict(zip(jobs, pool.map(one, jobs), strict=True))
    scores, bins = {}, None
    for v in table:
        per_seed = [per_bin(reports[v, s]) for s in seeds]
        bins = per_seed[0][0]
        scores[v] = {
            var: np.mean([ps[1][var] for ps in per_seed], 0).round(6).tolist()
            for var in per_seed[0][1]
        }
    means = {v: float(np.mean([x for vals in d.values() for x in vals])) for v, d in scores.items()}
    mia = [v for v in table if v.startswith("mia")]
    best = min(means[v] for v in mia)
    chosen = next(v for v in mia if means[v] <= best * (1 + _TIE))
    suffix = f"_{args.steps}" if args.steps != 2000 else ""
    results = ROOT / f"benchmarks/results/sparse_variants_{name}{suffix}.json"
    result = {
        "study": args.study,
        "study_name": name,
        "protocol": "validation nMSE x 1e2 per support bin and variable, mean over seeds",
        "steps": args.steps,
        "seeds": seeds,
        "bins": bins,
        "val_nmse_x1e2": scores,
        "mean_x1e2": {k: round(v, 6) for k, v in means.items()},
        "chosen": chosen,
    }
    results.write_text(json.dumps(result, indent=1) + "\n")
    docs = ROOT / f"docs/results/sparse_variants_{name}{suffix}.md"
    docs.write_text(render(result, results))
    print(json.dumps({"chosen": chosen, "mean_x1e2": result["mean_x1e2"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

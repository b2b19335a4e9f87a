"""The results file of ``encode_throughput.py``: both code kinds in one JSON, its docs block.

One file holds the rows of the weight codes (Meta-INR SIREN, int8) and of the latent codes
(CAVIA Functa, entropy-coded), each measured by its own run of the script: a run replaces
the rows of the code kinds it measured and keeps the others, provided both runs used the
same store (grid, variables, time steps, chunk) on the same CPU and allocator. Every row
names its ``codes``; ``setups`` holds, per code kind, what was meta-trained and how it
encoded. Files written before the latent variant (no ``codes`` on the rows, ``steps`` and
``recipe`` at the top level) read as weight codes.
"""

from __future__ import annotations

import json
from pathlib import Path

# Keys that must match for two runs' rows to share one file (one table, one comparison).
SHARED = ("grid", "variables", "frames", "chunk", "cpu", "allocator")


def setups_of(result: dict) -> dict[str, dict]:
    """``codes -> setup`` of a results file (an old file: its top-level weight setup)."""
    if "setups" in result:
        return result["setups"]
    return {
        "weights": {
            "recipe": result.get("recipe", ""),
            "steps": result.get("steps"),
            "meta_steps": result.get("meta_steps"),
            "codes": "int8",
        }
    }


def rows_of(result: dict) -> list[dict]:
    """The rows of a results file, each with its ``codes`` (old files: ``weights``)."""
    return [{"codes": "weights", **r} for r in result.get("rows", [])]


def earlier(path: str, meta: dict) -> dict | None:
    """The results already in ``path`` (``None``: no file yet).

    Raises:
        ValueError: ``path`` is not a results file of this script, or was measured on
            another store, CPU or allocator (its rows would not compare with this run's).
    """
    file = Path(path)
    if not file.exists():
        return None
    try:
        old = json.loads(file.read_text())
        rows_of(old)
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise ValueError(
            f"--json {path} is not a results file of encode_throughput.py ({e}): name another file"
        ) from None
    diff = [k for k in SHARED if k in old and old[k] != meta[k]]
    if diff:
        was = ", ".join(f"{k}={old[k]!r} (now {meta[k]!r})" for k in diff)
        raise ValueError(
            f"--json {path} holds rows measured with {was}: rerun with its settings "
            "or name another file"
        )
    return old


def merged(old: dict | None, meta: dict, setups: dict[str, dict], rows: list[dict]) -> dict:
    """This run's rows and setups, plus ``old``'s rows of the code kinds it did not measure."""
    if old is None:
        kept_setups, kept_rows = {}, []
    else:
        kept_setups = {k: v for k, v in setups_of(old).items() if k not in setups}
        kept_rows = [r for r in rows_of(old) if r["codes"] not in setups]
    order = ("weights", "latent")
    all_setups = {**kept_setups, **setups}
    all_setups = {k: all_setups[k] for k in sorted(all_setups, key=order.index)}
    all_rows = sorted(kept_rows + rows, key=lambda r: order.index(r["codes"]))
    return {**meta, "setups": all_setups, "rows": all_rows}


def _label(setup: dict) -> str:
    """What a setup meta-trained and how it encoded, in words."""
    return setup.get("label") or f"K = {setup['steps']}, {setup['codes']} codes"


def readme_block(result: dict, source: str) -> str:
    """The generated table (``docs/encoding.md``) of an ``encode_throughput.py`` results JSON."""
    rows = [
        "| codes | encoder | time steps/s per core | PSNR mean / min (dB) | compression "
        "| others (cores) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows_of(result):
        rows.append(
            f"| {r['codes']} | {r['variant']} | {r['per_core']:.1f} | "
            f"{r['psnr_mean_db']:.1f} / {r['psnr_min_db']:.1f} | {r['compression']:.1f}x | "
            f"{r['foreign_cores']:.2f} |"
        )
    setups = "; ".join(f"{codes}: {_label(s)}" for codes, s in setups_of(result).items())
    best = []
    for codes in setups_of(result):
        top = max(r["per_core"] for r in rows_of(result) if r["codes"] == codes)
        verdict = "PASS" if top >= result["target_per_core"] else "MISS"
        best.append(f"{codes} {top:.1f}, {verdict}")
    return (
        f"{result['frames']} time steps of {result['grid']} x {len(result['variables'])} "
        f"variables, {result['cpu']}; {setups}. Target >= {result['target_per_core']:g} time "
        f"steps/s per core: best {'; '.join(best)}.\n\n"
        + "\n".join(rows)
        + f"\n\nGenerated from `{source}` by `python benchmarks/encode_throughput.py "
        f"--json {source} --readme --render-only`."
    )


__all__ = ["SHARED", "earlier", "merged", "readme_block", "rows_of", "setups_of"]

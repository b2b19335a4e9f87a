"""The patch-recipe choice's page: a table of the variants and a choice computed from it.

``benchmarks/results/patch_choice.json`` holds ``{"machine", "command", "case", "rows"}``
(``benchmarks/patch_choice_bench.py``); ``docs/results/patch_choice.md`` is generated from
it alone. The choice uses the validation split only (the test split is for final
reports): the best validation PSNR among the variants that can be encoded, and, when
another encodable variant is within ``TIE_DB`` of it, the one that encodes fastest.
Every sentence of "what was chosen and why" is computed from the numbers; a missing number
says ``not measured``.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]
TIE_DB = 0.5  # validation PSNR differences below this count as a tie (one seed, one run)
COLUMNS = (
    ("variant", "variant", "{}"),
    ("val_metric", "val nmse", "{:.3g}"),
    ("val_psnr_db", "val PSNR (dB)", "{:.2f}"),
    ("decoded_psnr_db", "decoded val PSNR, area-weighted (dB)", "{:.2f}"),
    ("encode_steps_per_s_per_core", "encode steps/s/core", "{:.3g}"),
    ("compression_codes", "compression (codes)", "{:.1f}x"),
    ("code_bytes_per_step", "code bytes/step", "{:,.0f}"),
    ("train_patches_per_s", "train patches/s", "{:.3g}"),
    ("note", "note", "{}"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return "-" if fmt == "{}" else "null"
    return fmt.format(value).replace("|", "/")


def table(rows: list[Row]) -> str:
    """The Markdown table of the rows (``null`` where a stage did not apply or failed)."""
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = [
        "| " + " | ".join(_cell(r.get(key), fmt) for key, _, fmt in COLUMNS) + " |" for r in rows
    ]
    return "\n".join([head, rule, *body])


def _by_name(rows: list[Row]) -> dict[str, Row]:
    return {r["variant"]: r for r in rows}


def choose(rows: list[Row]) -> tuple[str | None, str]:
    """The chosen variant and why (one sentence), from validation PSNR and encode speed."""
    scored = [r for r in rows if r.get("val_psnr_db") is not None]
    usable = [r for r in scored if r.get("encode_steps_per_s_per_core") is not None]
    if not usable:
        return None, "no variant has both a validation PSNR and an encode speed: none chosen"
    best = max(usable, key=lambda r: r["val_psnr_db"])
    ties = [r for r in usable if best["val_psnr_db"] - r["val_psnr_db"] < TIE_DB]
    pick = max(ties, key=lambda r: r["encode_steps_per_s_per_core"])
    if pick is best:
        why = f"the best validation PSNR of the encodable variants ({best['val_psnr_db']:.2f} dB)"
        if len(ties) > 1:
            why += f" and the fastest encoding of those within {TIE_DB} dB of it"
    else:
        why = (
            f"within {TIE_DB} dB of the best encodable validation PSNR "
            f"({best['variant']}, {best['val_psnr_db']:.2f} dB; this one "
            f"{pick['val_psnr_db']:.2f} dB) and the fastest encoding of those"
        )
    return pick["variant"], why


def _ratio_text(a: Row | None, b: Row | None, key: str) -> tuple[float | None, str]:
    if a is None or b is None or a.get(key) is None or not b.get(key):
        return None, "not measured"
    r = a[key] / b[key]
    return r, f"{r:.1f}x ({a[key]:.3g} vs {b[key]:.3g})"


def findings(rows: list[Row]) -> list[str]:
    """The sentences of "what was chosen and why"."""
    named = _by_name(rows)
    out = []
    scored = sorted(
        (r for r in rows if r.get("val_psnr_db") is not None),
        key=lambda r: -r["val_psnr_db"],
    )
    if scored:
        top = scored[0]
        rest = ", ".join(
            f"{r['variant']} {r['val_psnr_db'] - top['val_psnr_db']:+.2f} dB" for r in scored[1:]
        )
        out.append(
            f"Best validation PSNR: **{top['variant']}** ({top['val_psnr_db']:.2f} dB)"
            + (f"; the others: {rest}." if rest else ".")
        )
    else:
        out.append("No variant has a validation metric (not measured).")
    loc, glo = named.get("heads_local"), named.get("heads_global")
    if loc and glo and loc.get("val_psnr_db") is not None and glo.get("val_psnr_db") is not None:
        d = glo["val_psnr_db"] - loc["val_psnr_db"]
        verb = "raises" if d > 0 else "lowers"
        text = (
            f"Patch position as global coordinates (heads_global) {verb} the validation PSNR "
            f"by {abs(d):.2f} dB against per-patch codes on a shared network in the local "
            "frame (heads_local)"
        )
        if abs(d) < TIE_DB:
            text += f", within the {TIE_DB} dB tie margin"
        if glo.get("encode_steps_per_s_per_core") is None:
            text += "; global-coordinate models cannot be encoded (their codes could not be "
            text += "decoded at another grid)"
        out.append(text + ".")
    heads = loc or named.get("heads_global")
    _, speed = _ratio_text(heads, named.get("reptile_local"), "encode_steps_per_s_per_core")
    out.append(f"Encode speed per core, heads / reptile: {speed}.")
    _, size = _ratio_text(heads, named.get("reptile_local"), "compression_codes")
    out.append(f"Compression of the codes, heads / reptile: {size}.")
    pick, why = choose(rows)
    if pick is None:
        out.append(f"Choice: {why}.")
    else:
        out.append(f"Chosen: **{pick}**: {why}.")
    return out


def render(result: dict[str, Any], json_path: str) -> str:
    """The Markdown page of a result (``docs/results/patch_choice.md`` is made by this)."""
    case = result.get("case", {})
    grid = "x".join(map(str, case.get("grid", [])))
    return (
        "# Patch recipe: choice by validation (issue 32)\n\n"
        f"Generated by `benchmarks/patch_choice_bench.py` into `{json_path}`; do not edit.\n\n"
        f"Command: `{result.get('command', '')}`. Machine: {result.get('machine', '')}.\n\n"
        f"Case: ERA5-like {grid} grid, {case.get('variables')} variables, "
        f"{case.get('time_steps')} time steps, patches {case.get('patch')}; every variant "
        f"meta-trained {case.get('train_steps')} steps, then scored on the VALIDATION split "
        f"(the test split is not used). Encoded: validation steps {case.get('encode_range')} "
        "(local variants only).\n\n"
        f"{table(result.get('rows', []))}\n\n"
        "* val nmse: the training run's final validation metric (MLflow `val_nmse`: MSE of "
        "the store's min-max normalised values, all points of every validation patch, mean "
        "over variables); val PSNR = -10 log10(val nmse), a range of 1 in those units, the "
        "same for every variant.\n"
        "* decoded val PSNR: the decoded validation steps against the input netCDF, "
        "area-weighted (`benchmarks/_scale_psnr.py`), mean over variables.\n"
        "* encode steps/s/core and compression (raw float32 / code bytes) from the code "
        "store's summary; train patches/s between the first and last logged step.\n\n"
        "## What was chosen and why\n\n"
        + "\n".join(f"* {s}" for s in findings(result["rows"]))
        + "\n"
    )

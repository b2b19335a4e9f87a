"""The regrid benchmark's page: tables and a verdict computed from the numbers alone.

``benchmarks/results/regrid.json`` (``benchmarks/regrid_bench.py --json``) holds the
former dense einsums against the builder (``dense``) and, per regrid case, the builder
against ``xarray-regrid`` (``xarray_regrid``: seconds, and per region the largest
differences; see ``_regrid_compare.py``). ``docs/results/regrid.md`` is generated from it.
Issue 32's rule: keep the faster one that gives the same numbers (here: every region within
``TOL`` of the field's RMS and the same missing points).
"""

from __future__ import annotations

from typing import Any

TOL = 1e-5
REGIONS = ("interior", "holes", "poles", "seam")


def _agrees(row: dict[str, Any]) -> bool:
    return all(r["max_rel"] <= TOL and r["nan_mismatch"] == 0 for r in row["regions"].values())


def _bad(row: dict[str, Any], region: str) -> bool:
    r = row["regions"][region]
    return r["max_rel"] > TOL or r["nan_mismatch"] > 0


def _speed(rows: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The faster implementation (None when it depends on the case) and a sentence."""
    parts, faster = [], set()
    for row in rows:
        ratio = row["xarray_regrid_s"] / row["builder_s"]
        faster.add("builder" if ratio > 1 else "xarray-regrid")
        word = "slower" if ratio > 1 else "faster"
        parts.append(f"{row['case']}: xarray-regrid {max(ratio, 1 / ratio):.1f}x {word}")
    winner = faster.pop() if len(faster) == 1 else None
    return winner, "; ".join(parts)


def _where(r: dict[str, Any]) -> str:
    return "-" if r.get("where") is None else f"{r['where'][0]:.2f}, {r['where'][1]:.2f}"


def _causes(rows: list[dict[str, Any]]) -> list[str]:
    """Why the numbers differ, from the regions and the diagnostic fields."""
    out = []
    lat = max(r["diagnostics"]["lat_only"]["away from poles"]["max_rel"] for r in rows)
    lon = max(r["diagnostics"]["lon_only"]["all"]["max_rel"] for r in rows)
    inner = max(rows, key=lambda r: r["regions"]["interior"]["max_rel"])
    mimic = max(r["mimic"]["max_rel"] for r in rows)
    mimic_nan = sum(r["mimic"]["nan_mismatch"] for r in rows)
    if mimic <= TOL and mimic_nan == 0:
        out.append(
            "The builder's sparse code run with xarray-regrid's latitude weights reproduces "
            f"xarray-regrid to {mimic:.1e} of the RMS with the same missing points: every "
            "difference below comes from the latitude weights (and the pole rows in them)."
        )
    else:
        out.append(
            f"With xarray-regrid's latitude weights the builder's code still differs by "
            f"{mimic:.1e} of the RMS ({mimic_nan} points missing in one output only): more "
            "than the latitude weights differs."
        )
    if lat > TOL:
        out.append(
            f"**Latitude weights** (a field varying only in latitude differs by {lat:.1e} of "
            "its RMS away from the poles; on the random fields up to "
            f"{inner['regions']['interior']['max_rel']:.1e} inside, in {inner['case']} at "
            f"latitude, longitude {_where(inner['regions']['interior'])}): xarray-regrid "
            "weights a source row by its overlap in degrees times the band area of the *whole* "
            "source cell, `sin(phi+d/2) - sin(phi-d/2)` at the median spacing "
            "(`apply_spherical_correction`); the builder uses the exact overlap in `sin(phi)`. "
            "They differ wherever a target cell takes part of a source row (a planar overlap "
            "inside a spherical correction), most when refining (a fine cell straddling two "
            "coarse rows gets them in the ratio of the whole coarse cells' areas) and toward "
            "the poles, where neighbouring rows' areas differ most."
        )
    if any(_bad(r, "poles") for r in rows):
        worst = max(r["regions"]["poles"]["max_rel"] for r in rows)
        nans = sum(r["regions"]["poles"]["nan_mismatch"] for r in rows)
        out.append(
            f"**Poles** (up to {worst:.1e} of the RMS, {nans} points missing in one output "
            "only): xarray-regrid does not clip cell bounds at +-90, so a source row *at* the "
            "pole gets band area `sin(90+d/2) - sin(90-d/2) = 0`: its values are dropped, and "
            "target rows fed only by it are missing; the builder clips the cell to the pole "
            "and keeps its (small, true) area."
        )
    if lon > TOL:
        out.append(
            f"**Longitude** (a field varying only in longitude differs by {lon:.1e} of its "
            "RMS): the periodic overlaps differ."
        )
    else:
        out.append(
            f"Longitude agrees (a field varying only in longitude: {lon:.1e} of its RMS): "
            "xarray-regrid's wrap padding gives the same periodic overlaps."
        )
    for region, what in (("seam", "the 0/360 E wrap"), ("holes", "NaN holes")):
        near = max(r["regions"][region]["max_rel"] for r in rows)
        nans = sum(r["regions"][region]["nan_mismatch"] for r in rows)
        if nans or near > max(2 * inner["regions"]["interior"]["max_rel"], TOL):
            out.append(
                f"**Near {what}** the difference is larger than inside ({near:.1e} of the RMS, "
                f"{nans} points missing in one output only)"
                + (
                    ": xarray-regrid keeps a cell when its valid weight is >= 1e-6 of the "
                    "cell, the builder when it is > 1e-12 of the largest."
                    if region == "holes"
                    else "."
                )
            )
        else:
            out.append(
                f"Near {what} the difference ({near:.1e}) is no larger than inside"
                + (
                    ": missing values are treated alike (both renormalise by the valid weight)."
                    if region == "holes"
                    else "."
                )
            )
    return out


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """``{"faster", "agree", "keep", "speed", "causes"}`` computed from the numbers."""
    rows = result["xarray_regrid"]
    faster, speed = _speed(rows)
    agree = all(_agrees(r) for r in rows)
    keep = faster if agree and faster else "builder"
    return {
        "faster": faster,
        "agree": agree,
        "keep": keep,
        "speed": speed,
        "causes": [] if agree else _causes(rows),
    }


def _region_rows(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        for name in REGIONS:
            r = row["regions"][name]
            lines.append(
                f"| {row['case']} | {name} | {r['points']:,} | {r['max_abs']:.2e} | "
                f"{r['max_rel']:.2e} | {_where(r)} | {r['nan_mismatch']} |"
            )
        for var, diag in row["diagnostics"].items():
            for name, r in diag.items():
                lines.append(
                    f"| {row['case']} | {var} field, {name} | {r['points']:,} | "
                    f"{r['max_abs']:.2e} | {r['max_rel']:.2e} | {_where(r)} | "
                    f"{r['nan_mismatch']} |"
                )
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    """The Markdown page of a result (``docs/results/regrid.md`` is made by this)."""
    v = verdict(result)
    dense = "\n".join(
        f"| {r['case']} | {r['dense_s']:.3f} | {r['new_s']:.4f} | "
        f"{r['dense_s'] / r['new_s']:.1f}x | {r['max_rel']:.2e} |"
        for r in result["dense"]
    )
    timing = "\n".join(
        f"| {r['case']} | {r['builder_s']:.4f} | {r['xarray_regrid_s']:.4f} | "
        f"{r['xarray_regrid_s'] / r['builder_s']:.1f}x |"
        + (" contended |" if r["contended"] else " |")
        for r in result["xarray_regrid"]
    )
    keep = "the builder's sparse regrid" if v["keep"] == "builder" else "xarray-regrid"
    agree = (
        f"the numbers agree to within {TOL:g} of the field's RMS in every region"
        if v["agree"]
        else f"the numbers do **not** agree to within {TOL:g} of the field's RMS"
    )
    faster = {"builder": "the builder's sparse regrid", None: "neither in both cases"}.get(
        v["faster"], v["faster"]
    )
    causes = "".join(f"- {c}\n" for c in v["causes"])
    return (
        "# Conservative regrid: the builder against dense einsums and xarray-regrid\n\n"
        "Generated by `benchmarks/regrid_bench.py` (`--json benchmarks/results/regrid.json "
        "--docs docs/results/regrid.md`); do not edit.\n\n"
        f"Command: `{result['command']}`. CPU: {result['cpu']}, {result['machine']}. One time "
        f"step of {result['variables']} random variables with NaN holes; fine grid "
        f"{result['fine']}, coarse grid {result['coarse']}; xarray-regrid "
        f"{result['xarray_regrid_version']}; medians of {result['iters']} interleaved calls "
        "(weights built in every call, as the builder does per block).\n\n"
        "## Former dense einsums against the builder\n\n"
        "| case | dense s | builder s | speed-up | max rel diff |\n|---|---|---|---|---|\n"
        f"{dense}\n\n"
        "## xarray-regrid against the builder\n\n"
        "| case | builder s | xarray-regrid s | xarray-regrid / builder | note |\n"
        f"|---|---|---|---|---|\n{timing}\n\n"
        "Differences of xarray-regrid from the builder (float32 outputs; relative = absolute / "
        "RMS of the builder's field; NaN = points missing in one output only):\n\n"
        "| case | region | points | max abs | max rel | at lat, lon | NaN |\n"
        "|---|---|---|---|---|---|---|\n"
        f"{_region_rows(result['xarray_regrid'])}\n\n"
        "## Verdict\n\n"
        f"Faster: **{faster}** ({v['speed']}). Same numbers: {agree}.\n\n"
        f"{causes}{chr(10) if causes else ''}"
        f"Issue 32's rule (keep the faster one that gives the same numbers): keep **{keep}**.\n"
    )


__all__ = ["TOL", "render", "verdict"]

"""Classical rows of a study table: scored per seed on the methods' support draws, then cells.

A study's method cells are means over seeds of each seed's test evaluation; a classical
row (:mod:`pipelines.reports.classical`) is scored on the very support draws of each
seed's test evaluation (the evaluation's seed for that run) and its cells are the same
means over seeds. A cell also counts the draws of its bin (``count``, over seeds) and
those the method could not run on (``n_failed``: too few support points); its text
(:func:`cell_text`) says so, as ``n/a (k of n: too few points)`` when no draw ran.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines.data.stores import Store
from pipelines.reports.classical import EvalProtocol
from pipelines.reports.classical_base import Reconstructor
from pipelines.reports.evaluation import EvalRow

Cells = dict[str, dict[str, list[dict]]]  # row -> variable -> one cell per bin


def classical_cells(
    store: Store,
    rows: Mapping[str, Reconstructor],
    how: EvalProtocol,
    test_seeds: Mapping[int, int],
) -> Cells:
    """Row -> variable -> per-bin cells (nMSE x 1e2 mean and std over seeds, counts).

    Args:
        store: the study's store.
        rows: fitted classical reconstructors (:func:`~pipelines.reports.classical.fit_classical`).
        how: the methods' evaluation protocol.
        test_seeds: study seed -> support-draw seed of that seed's test evaluation.

    Returns:
        Cells ``{r_min, r_max, mean, std, values, area, rmse_phys, units, count,
        n_failed}``; ``mean`` is NaN where no draw ran.
    """
    per_seed = {s: how.evaluate(store, "test", seed, dict(rows)) for s, seed in test_seeds.items()}
    return cells_from_rows(per_seed, list(rows), list(store.modalities), how.bins)


def cells_from_rows(
    per_seed: Mapping[int, list[EvalRow]],
    names: list[str],
    variables: list[str],
    bins: list[tuple[float, float]],
) -> Cells:
    """Cells of :func:`classical_cells` from each seed's evaluation rows."""
    out: Cells = {}
    for name in names:
        out[name] = {}
        for m in variables:
            cells = []
            for lo, hi in bins:
                found = [
                    r
                    for rows in per_seed.values()
                    for r in rows
                    if r.method == name and r.modality == m and _same(r, lo, hi)
                ]
                area = _finite([100.0 * r.metrics.get("nmse_area_all", math.nan) for r in found])
                cell = seed_cell(
                    (lo, hi),
                    [100.0 * r.metrics["nmse_all"] for r in found],
                    [r.metrics.get("rmse_phys_all", math.nan) for r in found],
                    next((r.units for r in found if r.units), ""),
                    area=statistics.fmean(area) if area else math.nan,
                )
                cell["count"] = sum(r.count for r in found)
                cell["n_failed"] = sum(r.n_failed for r in found)
                cells.append(cell)
            out[name][m] = cells
    return out


@dataclass
class ClassicalRows:
    """A study's classical rows: cells and what each row fitted.

    Attributes:
        cells: row -> variable -> per-bin cells (:func:`classical_cells`).
        labels: row -> what was fitted, how (``Reconstructor.label``).
    """

    cells: Cells
    labels: dict[str, str]

    def table_rows(self, variables: Sequence[str]) -> list[list[str]]:
        """One table row per classical row: its name, then :func:`cell_text` per cell."""
        return [
            [name] + [cell_text(c) for m in variables for c in per_var[m]]
            for name, per_var in self.cells.items()
        ]

    def notes(self) -> str:
        """Markdown lines saying what each row is and how its cells were scored."""
        lines = [
            "Classical rows: fitted on the train split (EOF k chosen on validation), scored "
            "on the very support draws of each seed's test evaluation, nMSE x 1e2 mean over "
            "seeds; `n/a (k of n: too few points)` where a draw had too few support points.",
            "",
        ]
        return "\n".join(lines + [f"- `{n}`: {label}" for n, label in self.labels.items()]) + "\n"

    def results(self) -> dict:
        """The results JSON's keys for these rows.

        ``classical`` (row names), ``classical_x1e2`` (row -> variable -> per-bin mean
        nMSE x 1e2, NaN where no draw ran), ``classical_area_x1e2`` (area-weighted),
        ``classical_failed`` and ``classical_draws`` (per-bin draw counts over seeds),
        ``classical_labels``.
        """

        def per_bin(key: str, digits: int | None = 6) -> dict:
            return {
                n: {
                    m: [c[key] if digits is None else round(c[key], digits) for c in cells]
                    for m, cells in per_var.items()
                }
                for n, per_var in self.cells.items()
            }

        return {
            "classical": list(self.cells),
            "classical_x1e2": per_bin("mean"),
            "classical_area_x1e2": per_bin("area"),
            "classical_failed": per_bin("n_failed", None),
            "classical_draws": per_bin("count", None),
            "classical_labels": dict(self.labels),
        }


def cell_text(cell: dict, digits: int = 4) -> str:
    """A table cell: the mean, ``n/a (k of n: too few points)`` where no draw ran.

    Where some draws of the bin ran and others had too few points, the mean of those that
    ran is followed by ``(k of n n/a: too few points)``; ``-`` for a bin with no draw.
    """
    count, failed = int(cell.get("count", 0)), int(cell.get("n_failed", 0))
    if not count:
        return "-"
    if failed >= count or math.isnan(cell["mean"]):
        return f"n/a ({failed} of {count}: too few points)"
    value = f"{cell['mean']:.{digits}g}"
    return f"{value} ({failed} of {count} n/a: too few points)" if failed else value


def _same(row: EvalRow, lo: float, hi: float) -> bool:
    return round(row.r_min, 6) == round(lo, 6) and round(row.r_max, 6) == round(hi, 6)


def seed_cell(
    bin_: tuple[float, float], nmse: list[float], rmse: list[float], units: str, **extra: float
) -> dict:
    """A cell over seeds: mean ± sample std of the finite ``nmse`` (x 1e2), mean ``rmse``.

    A bin that received no signal has NaN metrics: it is left out of the mean. ``extra``
    keys follow ``values``.
    """
    nmse, rmse = _finite(nmse), _finite(rmse)
    return {
        "r_min": bin_[0],
        "r_max": bin_[1],
        "mean": statistics.fmean(nmse) if nmse else math.nan,
        "std": statistics.stdev(nmse) if len(nmse) > 1 else math.nan,
        "values": nmse,
        **extra,
        "rmse_phys": statistics.fmean(rmse) if rmse else math.nan,
        "units": units,
    }


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


__all__ = ["ClassicalRows", "Cells", "cell_text", "cells_from_rows", "classical_cells", "seed_cell"]

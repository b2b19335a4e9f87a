"""Attributes of normalised field variables, and how to get back to physical units."""

from __future__ import annotations

from typing import Any


def normalised_attrs(attrs: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Attributes of a normalised variable: ``units: "1"``, the physical units kept.

    The values are dimensionless after normalisation; ``physical_units`` and ``mia_norm``
    say how to get back (:func:`pipelines.data.stores.writer.invert_norm`).
    """
    out = {k: v for k, v in attrs.items() if k != "units"}
    if stats.get("kind", "none") != "none":
        out["units"] = "1"
        if "units" in attrs:
            out["physical_units"] = attrs["units"]
    elif "units" in attrs:
        out["units"] = attrs["units"]
    return {**out, "mia_norm": stats}


def physical_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`normalised_attrs` for values brought back to physical units."""
    out = {k: v for k, v in attrs.items() if k not in ("mia_norm", "physical_units")}
    if "physical_units" in attrs:
        out["units"] = attrs["physical_units"]
    elif out.get("units") == "1" and "mia_norm" in attrs:
        out.pop("units")
    return out

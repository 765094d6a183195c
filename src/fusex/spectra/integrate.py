r"""EDS spectrum images to element maps: line windows, detector resolution, side-window background.

A line's map is the sum, in every pixel, of the channels whose energies lie in
a window centred on the line and as wide as a multiple of the detector's
resolution there.  The resolution of a silicon-drift (or Si(Li)) detector
grows with energy because the number of electron-hole pairs a photon makes
fluctuates (Fano noise) on top of a constant electronic noise :math:`N`:

.. math::

    \mathrm{FWHM}(E)^2 = N^2 + 8 \ln 2 \, F \varepsilon E,
    \qquad
    N^2 = \mathrm{FWHM}_{\mathrm{Mn\,K\alpha}}^2 - 8 \ln 2 \, F \varepsilon E_{\mathrm{Mn\,K\alpha}},

so that :math:`\mathrm{FWHM}(E)^2 = \mathrm{FWHM}_{\mathrm{Mn\,K\alpha}}^2 +
8 \ln 2 \, F \varepsilon (E - E_{\mathrm{Mn\,K\alpha}})`, with silicon's Fano
factor :math:`F = 0.115`, its electron-hole pair energy :math:`\varepsilon =
3.64` eV and :math:`E_{\mathrm{Mn\,K\alpha}} = 5.8988` keV
(:math:`8 \ln 2 \, F \varepsilon = 2.32` eV; the rounded 2.5 eV of Fiori and
Newbury, used by exspy, gives FWHMs up to 9 eV wider at 0.2 keV and 6 eV
narrower at 20 keV for 130 eV at Mn Ka).
Detectors are specified by their FWHM at Mn Ka, which is what
HyperSpy-style metadata record (``energy_resolution_MnKa``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..elements import SYMBOLS, atomic_number
from ..labeled import ELEMENT_DIM
from .lines import XrayLine, family_lines, xray_line

__all__ = [
    "DEFAULT_FWHM_MN_KA",
    "DEFAULT_WINDOW",
    "SpectrumWarning",
    "detector_fwhm",
    "integrate_lines",
]

DEFAULT_FWHM_MN_KA = 130.0
"""Detector FWHM at Mn Ka in eV used when neither the caller nor the metadata give one.

A typical silicon-drift detector (121-135 eV); HyperSpy and exspy use the same value.
"""

DEFAULT_WINDOW = 2.0
"""Integration window width in units of the line's FWHM: the line centre +- 1 FWHM.

That holds 98 % of a Gaussian line's counts (+-2.35 sigma) and is exspy's
``get_lines_intensity`` default, so maps can be compared with exspy's.
"""

MN_KA = 5.8988
"""Mn Ka energy in keV, the reference of detector resolution."""

FANO = 0.115
"""Fano factor of silicon."""

PAIR_ENERGY = 3.64
"""Mean energy per electron-hole pair in silicon, eV."""

MIN_OVERVOLTAGE = 1.5
"""A line is picked for an element only if the beam energy exceeds its edge by this factor (when known)."""

_EV_THRESHOLD = 100.0  # an EDS axis in keV never reaches 100; one in eV always does


class SpectrumWarning(UserWarning):
    """A spectrum-image integration went ahead but its result may mislead (overlaps, empty lines, guessed units)."""


def detector_fwhm(energy: float | np.ndarray, fwhm_mn_ka: float = DEFAULT_FWHM_MN_KA) -> float | np.ndarray:
    r"""Return a silicon detector's FWHM in eV at ``energy`` keV.

    .. math::

        \mathrm{FWHM}(E) = \sqrt{\mathrm{FWHM}_{\mathrm{Mn\,K\alpha}}^2
        + 8 \ln 2 \, F \varepsilon \, (E - E_{\mathrm{Mn\,K\alpha}})}

    with :math:`F = 0.115`, :math:`\varepsilon = 3.64` eV, :math:`E` in eV
    (see the module docstring).

    Parameters
    ----------
    energy : float or numpy.ndarray
        Photon energy in keV.
    fwhm_mn_ka : float
        FWHM at Mn Ka (5.8988 keV) in eV.

    Returns
    -------
    float or numpy.ndarray
        FWHM in eV.

    Raises
    ------
    ValueError
        If ``fwhm_mn_ka`` is not positive or lies below silicon's Fano limit
        at Mn Ka (117.0 eV), where the electronic noise would be imaginary.

    """
    coefficient = 8.0 * math.log(2.0) * FANO * PAIR_ENERGY
    fwhm_mn_ka = float(fwhm_mn_ka)
    noise2 = fwhm_mn_ka**2 - coefficient * MN_KA * 1000.0
    if not math.isfinite(fwhm_mn_ka) or fwhm_mn_ka <= 0 or noise2 < 0:
        limit = math.sqrt(coefficient * MN_KA * 1000.0)
        raise ValueError(
            f"fwhm_mn_ka={fwhm_mn_ka!r} eV is below silicon's Fano limit at Mn Ka ({limit:.1f} eV); "
            "pass the detector's FWHM at Mn Ka in eV (typically 121-140)"
        )
    return np.sqrt(noise2 + coefficient * np.asarray(energy, dtype=float) * 1000.0)[()]


@dataclass(frozen=True)
class _Plan:
    line: XrayLine
    fwhm: float  # eV
    window: tuple[float, float]  # keV
    sides: tuple[tuple[float, float], tuple[float, float]] | None  # keV, left and right background windows

    @property
    def extent(self) -> tuple[float, float]:
        low, high = self.window
        if self.sides is not None:
            low, high = self.sides[0][0], self.sides[1][1]
        return low, high


def _plan(line: XrayLine, fwhm_mn_ka: float, window: float, background: tuple[float, float] | None) -> _Plan:
    fwhm = float(detector_fwhm(line.energy, fwhm_mn_ka))
    step = fwhm / 1000.0
    centre = line.energy
    sides = None
    if background is not None:
        offset, width = background
        sides = (
            (centre - (offset + width) * step, centre - offset * step),
            (centre + offset * step, centre + (offset + width) * step),
        )
    return _Plan(line, fwhm, (centre - window * step / 2, centre + window * step / 2), sides)


def _unit(units: Any, argument: str) -> str | None:
    if units is None or (isinstance(units, str) and units.strip() in ("", "<undefined>")):
        return None
    text = str(units).strip().lower()
    if text in ("kev", "kiloelectronvolt"):
        return "keV"
    if text in ("ev", "electronvolt"):
        return "eV"
    raise ValueError(f"{argument}={units!r} is not an energy unit; use 'keV' or 'eV'")


def _energy_kev(values: np.ndarray, units: str | None, source: str) -> np.ndarray:
    values = values.astype(float)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"the energy axis ({source}) must be 1-D, finite and hold at least two channels")
    if not np.all(np.diff(values) > 0):
        raise ValueError(f"the energy axis ({source}) must increase from channel to channel")
    top = float(np.max(np.abs(values)))
    looks_ev = top > _EV_THRESHOLD
    if units is None:
        units = "eV" if looks_ev else "keV"
        warnings.warn(
            f"the energy axis ({source}) has no units; its values reach {top:g}, so they are taken as {units}. "
            "Pass energy_units='keV' or 'eV' to say so",
            SpectrumWarning,
            stacklevel=4,
        )
    elif looks_ev != (units == "eV"):
        other = "eV" if looks_ev else "keV"
        raise ValueError(
            f"the energy axis ({source}) is said to be in {units} but its values reach {top:g}, which looks like "
            f"{other}: pass energy_units={other!r} (or fix the axis' units)"
        )
    return values / 1000.0 if units == "eV" else values


def _labelled(spectrum: Any, energy: Any, energy_units: str | None) -> tuple[xr.DataArray, np.ndarray]:
    declared = _unit(energy_units, "energy_units")
    if isinstance(spectrum, xr.DataArray):
        if spectrum.ndim < 1:
            raise ValueError("`spectrum` must have an energy axis as its last dimension")
        dim = spectrum.dims[-1]
        if energy is not None and dim in spectrum.coords:
            raise ValueError(f"`spectrum` has an energy coordinate {dim!r} and `energy=` was given too; pass only one")
        if energy is None:
            if dim not in spectrum.coords:
                raise ValueError(
                    f"the last dimension {dim!r} of `spectrum` has no coordinate; give it the energies "
                    "(spectrum.assign_coords) or pass energy=[...]"
                )
            values = np.asarray(spectrum[dim].values)
            declared = declared or _unit(spectrum[dim].attrs.get("units"), f"the units attr of {dim!r}")
            source = f"coordinate {dim!r}"
        else:
            values = np.asarray(energy)
            source = "`energy`"
        data = spectrum
    else:
        if energy is None:
            raise ValueError(
                "a plain array `spectrum` needs its energy axis: pass energy=[...] (one value per channel)"
            )
        if not hasattr(spectrum, "ndim"):
            spectrum = np.asarray(spectrum)
        if spectrum.ndim < 1:
            raise ValueError("`spectrum` must have an energy axis as its last dimension")
        nav = spectrum.ndim - 1
        names = [f"dim_{i}" for i in range(nav - 2)] + ["y", "x"][max(0, 2 - nav) :]
        data = xr.DataArray(spectrum, dims=[*names, "energy"])
        values = np.asarray(energy)
        source = "`energy`"
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"the energy axis ({source}) must be numbers, got dtype {values.dtype}")
    if values.shape != (data.shape[-1],):
        raise ValueError(
            f"the energy axis has shape {values.shape} but `spectrum` has {data.shape[-1]} channels along its last "
            "dimension"
        )
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise TypeError(f"`spectrum` must hold counts (integers or floats), got dtype {data.dtype}")
    return data, _energy_kev(values, declared, source)


def _fits(plan: _Plan, energies: np.ndarray) -> bool:
    low, high = plan.extent
    return low >= energies[0] and high <= energies[-1]


def _span(energies: np.ndarray) -> str:
    return f"{energies[0]:.3f}-{energies[-1]:.3f} keV"


def _requested_plans(
    lines: Sequence[str] | None,
    elements: Sequence[str] | None,
    energies: np.ndarray,
    fwhm_mn_ka: float,
    window: float,
    background: tuple[float, float] | None,
    beam_energy: float | None,
) -> list[_Plan]:
    if isinstance(lines, str) or isinstance(elements, str):
        raise TypeError("`lines` and `elements` are lists, e.g. lines=['Fe_Ka'] or elements=['Fe']")
    if not lines and not elements:
        raise ValueError("say which X-ray lines to integrate: lines=['Fe_Ka', ...] or elements=['Fe', ...]")
    plans = []
    for name in lines or ():
        plan = _plan(xray_line(name), fwhm_mn_ka, window, background)
        if not _fits(plan, energies):
            what = "with its background windows " if background is not None else ""
            low, high = plan.extent
            raise ValueError(
                f"X-ray line {plan.line.name} at {plan.line.energy:.3f} keV {what}({low:.3f}-{high:.3f} keV) lies "
                f"outside the energy axis ({_span(energies)}); drop it from `lines` or pick another line"
            )
        plans.append(plan)
    picked = []
    for element in elements or ():
        plan = _pick(element, energies, fwhm_mn_ka, window, background, beam_energy)
        plans.append(plan)
        picked.append(f"{plan.line.element}: {plan.line.name} at {plan.line.energy:.3f} keV")
    if picked:
        warnings.warn(
            "X-ray lines picked (the highest-energy family inside the energy axis"
            + (f" excited by the {beam_energy:g} keV beam" if beam_energy else "")
            + "): "
            + "; ".join(picked)
            + ". Pass lines=[...] to choose others",
            SpectrumWarning,
            stacklevel=3,
        )
    by_element: dict[str, list[str]] = {}
    for plan in plans:
        by_element.setdefault(plan.line.element, []).append(plan.line.name)
    repeated = {e: n for e, n in by_element.items() if len(n) > 1}
    if repeated:
        raise ValueError(
            f"several lines of one element: {repeated}; fusion needs one map per element, keep one line of each"
        )
    return plans


def _pick(
    element: str,
    energies: np.ndarray,
    fwhm_mn_ka: float,
    window: float,
    background: tuple[float, float] | None,
    beam_energy: float | None,
) -> _Plan:
    symbol = SYMBOLS[atomic_number(element) - 1]
    reasons = []
    for line in family_lines(symbol):
        plan = _plan(line, fwhm_mn_ka, window, background)
        if not _fits(plan, energies):
            reasons.append(f"{line.name} at {line.energy:.3f} keV is outside the axis")
        elif beam_energy is not None and line.edge * MIN_OVERVOLTAGE > beam_energy:
            reasons.append(f"{line.name} needs a beam above {line.edge * MIN_OVERVOLTAGE:.1f} keV")
        else:
            return plan
    why = "; ".join(reasons) if reasons else "xraydb lists no K, L or M line for it"
    raise ValueError(
        f"no X-ray line of {symbol} fits the energy axis ({_span(energies)}): {why}. "
        "Drop it from `elements` or give its line in `lines`"
    )


def _warn_overlaps(plans: Sequence[_Plan]) -> None:
    def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    for i, first in enumerate(plans):
        for second in plans[i + 1 :]:
            if overlap(first.window, second.window):
                warnings.warn(
                    f"the integration windows of {first.line.name} ({first.window[0]:.3f}-{first.window[1]:.3f} keV) "
                    f"and {second.line.name} ({second.window[0]:.3f}-{second.window[1]:.3f} keV) overlap: their "
                    "shared counts go into both maps. Pick other lines or a narrower `window`",
                    SpectrumWarning,
                    stacklevel=3,
                )
        for other in plans:
            if other is first or first.sides is None:
                continue
            if any(overlap(side, other.window) for side in first.sides):
                warnings.warn(
                    f"a background window of {first.line.name} overlaps the line {other.line.name}: its background "
                    "is overestimated. Change background_windows or pick other lines",
                    SpectrumWarning,
                    stacklevel=3,
                )


def _channels(energies: np.ndarray, bounds: tuple[float, float], name: str) -> slice:
    # Whole channels only, so that sums of counts stay counts: those whose centre lies in the window.
    start, stop = np.searchsorted(energies, bounds[0], "left"), np.searchsorted(energies, bounds[1], "left")
    if stop <= start:
        raise ValueError(
            f"the window of {name} ({bounds[0]:.4f}-{bounds[1]:.4f} keV) holds no channel of the energy axis; "
            "widen `window` (it is in units of the line's FWHM)"
        )
    return slice(int(start), int(stop))


def _integrate(data: xr.DataArray, energies: np.ndarray, plan: _Plan) -> xr.DataArray:
    dim = data.dims[-1]
    bare = data.drop_vars(dim, errors="ignore")
    inside = _channels(energies, plan.window, plan.line.name)
    if plan.sides is None:
        dtype = np.int64 if np.issubdtype(data.dtype, np.integer) else None
        return bare.isel({dim: inside}).sum(dim, dtype=dtype)
    # The least-squares line a + b (E - mean) through the side channels, summed over the window's
    # channels, is a fixed weighted sum of the side channels: subtract it as one.
    left, right = (_channels(energies, side, f"{plan.line.name}'s background window") for side in plan.sides)
    side_energies = np.concatenate([energies[left], energies[right]])
    centred = side_energies - side_energies.mean()
    window_energies = energies[inside] - side_energies.mean()
    weights = window_energies.size / side_energies.size + centred * window_energies.sum() / np.sum(centred**2)
    n_left = energies[left].size
    net = bare.isel({dim: inside}).sum(dim, dtype=np.float64)
    for part, w in ((left, weights[:n_left]), (right, weights[n_left:])):
        net = net - (bare.isel({dim: part}) * xr.DataArray(w, dims=dim)).sum(dim)
    return net


def _check_counts(maps: xr.DataArray, plans: Sequence[_Plan], background: bool) -> None:
    if not isinstance(maps.data, np.ndarray):
        return  # a lazy (dask) result: checking would compute it
    totals = maps.sum([d for d in maps.dims if d != ELEMENT_DIM]).values
    for plan, total in zip(plans, np.atleast_1d(totals)):
        if total == 0 or (background and total <= 0):
            what = "no counts above the background" if background else "no counts"
            warnings.warn(
                f"{plan.line.name} has {what} in {plan.window[0]:.3f}-{plan.window[1]:.3f} keV: the element is "
                "absent, or the line or the energy calibration is wrong",
                SpectrumWarning,
                stacklevel=3,
            )


def integrate_lines(
    spectrum: Any,
    *,
    energy: Any = None,
    energy_units: str | None = None,
    lines: Sequence[str] | None = None,
    elements: Sequence[str] | None = None,
    fwhm_mn_ka: float | None = None,
    window: float = DEFAULT_WINDOW,
    background: bool = False,
    background_windows: tuple[float, float] = (2.0, 1.0),
    beam_energy: float | None = None,
) -> xr.DataArray:
    r"""Integrate X-ray lines of an EDS spectrum image into element maps.

    Each line's map is the sum of the channels whose centre energy lies in
    :math:`E_\ell \pm \tfrac{w}{2} \mathrm{FWHM}(E_\ell)`, with
    :math:`\mathrm{FWHM}(E)` the detector resolution scaled from Mn Ka as for
    silicon-drift detectors (`detector_fwhm`, formula in the module docstring).
    With ``background=True`` a straight line :math:`a + bE` is fitted by least
    squares, per pixel, through the channels of two side windows, at
    :math:`E_\ell \pm o \, \mathrm{FWHM}` extending :math:`v \, \mathrm{FWHM}`
    outwards (``background_windows=(o, v)``), and its sum over the window's
    channels is subtracted.

    Parameters
    ----------
    spectrum : xarray.DataArray or array_like
        Counts whose last dimension is the energy axis: ``(..., y, x,
        channel)``.  A DataArray carries its energies as the coordinate of
        that dimension (with a ``units`` attr ``"keV"`` or ``"eV"``); a plain
        NumPy or dask array needs ``energy=``.  Never modified.
    energy : array_like, optional
        The energy of each channel, for a plain array.
    energy_units : {"keV", "eV"}, optional
        Units of the energy axis.  Default: the coordinate's ``units`` attr;
        without one, eV if the values exceed 100 and keV otherwise, with a
        `SpectrumWarning`.  Units that disagree with the values (a "keV" axis
        reaching 20000) raise.
    lines : sequence of str, optional
        X-ray lines, e.g. ``["Fe_Ka", "Pt_La"]`` (names as in `xray_line`).
    elements : sequence of str, optional
        Element symbols; each gets its highest-energy line family (``Ka``,
        then ``La``, then ``Ma``) whose window (and background windows) lie
        inside the energy axis and, when ``beam_energy`` is given, whose edge
        the beam exceeds 1.5 times.  This is the family with the highest
        fluorescence yield that the spectrum holds.  A `SpectrumWarning` says
        which line was picked for each element.
    fwhm_mn_ka : float, optional
        Detector FWHM at Mn Ka in eV; default `DEFAULT_FWHM_MN_KA` (130 eV).
    window : float
        Integration window width in units of the line's FWHM; default
        `DEFAULT_WINDOW` (2: +- 1 FWHM, 98 % of a Gaussian line).
    background : bool
        Subtract a linear background fitted through side windows.  The result
        is then float and may be negative where the background fit exceeds
        the counts (noise, or an overlapping line): fusion needs counts, so
        clip or leave it out as the caller sees fit.
    background_windows : tuple of float
        ``(offset, width)`` of each side window in units of the line's FWHM;
        default ``(2, 1)``: from 2 to 3 FWHM either side of the line.
    beam_energy : float, optional
        Beam energy in keV, used only to pick lines for ``elements``.

    Returns
    -------
    xarray.DataArray
        ``(element, ..., y, x)``: one map per line, ``element`` coordinate =
        symbols, the other dimensions and coordinates of ``spectrum``.  The
        dtype is int64 for integer counts without background (so they stay
        counts for `fusex.tune`'s count splitting), float otherwise.  attrs:
        ``lines``, ``line_energy`` (keV), ``window_start``/``window_stop``
        (keV), ``fwhm`` (eV at each line), ``fwhm_mn_ka`` (eV), ``window``,
        ``background`` (``"none"`` or ``"linear"``), ``units`` (``"counts"``).

    Raises
    ------
    ValueError
        If a line lies outside the energy axis, an element has no line in it,
        an element has several lines, the energy units disagree with the
        values, or a window holds no channel.

    Warns
    -----
    SpectrumWarning
        For the lines picked for ``elements``, windows that overlap (naming
        both lines), a line with no counts, and guessed energy units.

    Examples
    --------
    >>> import numpy as np
    >>> energy = np.arange(0.0, 10.0, 0.01)
    >>> counts = np.zeros((4, 4, energy.size), dtype=np.uint16)
    >>> counts[..., 640] = 3  # Fe Ka, 6.40 keV
    >>> maps = integrate_lines(counts, energy=energy, energy_units="keV", lines=["Fe_Ka"])
    >>> int(maps.sel(element="Fe")[0, 0]), maps.dtype
    (3, dtype('int64'))

    """
    if isinstance(background, str) or not isinstance(background, (bool, np.bool_)):
        raise TypeError(f"background={background!r}: pass True (linear side-window fit) or False")
    if isinstance(window, bool) or not (isinstance(window, numbers.Real) and window > 0 and math.isfinite(window)):
        raise ValueError(f"window={window!r}: give the window width in units of the line's FWHM, e.g. 2.0")
    if len(background_windows) != 2 or not all(float(v) > 0 for v in background_windows):
        raise ValueError(
            f"background_windows={background_windows!r}: give (offset, width) > 0 in units of the line's FWHM"
        )
    if float(background_windows[0]) < window / 2:
        raise ValueError(
            f"background_windows offset {background_windows[0]!r} FWHM lies inside the integration window "
            f"(+-{window / 2:g} FWHM); pick an offset of at least window / 2"
        )
    fwhm_mn_ka = DEFAULT_FWHM_MN_KA if fwhm_mn_ka is None else float(fwhm_mn_ka)
    data, energies = _labelled(spectrum, energy, energy_units)
    sides = (float(background_windows[0]), float(background_windows[1])) if background else None
    plans = _requested_plans(lines, elements, energies, fwhm_mn_ka, float(window), sides, beam_energy)
    _warn_overlaps(plans)
    maps = xr.concat([_integrate(data, energies, plan) for plan in plans], dim=ELEMENT_DIM)
    maps = maps.assign_coords({ELEMENT_DIM: [plan.line.element for plan in plans]})
    maps.name = None
    maps.attrs = {
        "long_name": "X-ray line intensity",
        "units": "counts",
        "lines": [plan.line.name for plan in plans],
        "line_energy": [plan.line.energy for plan in plans],
        "window_start": [plan.window[0] for plan in plans],
        "window_stop": [plan.window[1] for plan in plans],
        "fwhm": [plan.fwhm for plan in plans],
        "fwhm_mn_ka": fwhm_mn_ka,
        "window": float(window),
        "background": "linear" if background else "none",
    }
    _check_counts(maps, plans, background)
    return maps

r"""EELS spectrum images to element maps: edge windows above a power-law background.

Each edge's map is the sum of its channels from the onset :math:`E_0` to
:math:`E_0 + \Delta`, less a power-law background :math:`A E^{-r}` fitted per
pixel in a pre-edge window and extrapolated under the edge (Egerton's
method).  The fit is HyperSpy's ``Signal1D.remove_background(...,
background_type="PowerLaw")``; HyperSpy is an optional (GPL) package, installed
with ``pip install "fusex[hyperspy]"``.  Edge onsets are the ionization
energies of xraydb (MIT), which match the onsets EELS shows to within a few eV.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..elements import SYMBOLS, atomic_number
from ..labeled import ELEMENT_DIM
from .lines import _xraydb
from .signals import spectrum_dataarray

__all__ = ["EDGE_PREFERENCE", "edge_onset", "integrate_eels"]

EDGE_PREFERENCE = ("K", "L3", "M5")
"""Edges tried, in order, for an element given by symbol: the first that fits the energy axis is used."""

# HyperSpy and vendor spellings of the combined edges name their onset shell.
_SHELL_ALIASES = {"L23": "L3", "L2,3": "L3", "M45": "M5", "M4,5": "M5"}


def _hyperspy() -> Any:
    try:
        return importlib.import_module("hyperspy.api")
    except ImportError as exc:
        raise ImportError(
            'integrating EELS spectrum images needs HyperSpy (power-law background fits): pip install "fusex[hyperspy]"'
        ) from exc


def edge_onset(edge: str) -> float:
    """Return the onset energy in eV of an ionization edge such as ``"Fe_L3"``, ``"O_K"`` or ``"Dy_M5"``.

    ``L2,3``/``L23`` mean ``L3`` and ``M4,5``/``M45`` mean ``M5``: the onset of
    the combined edge.

    Raises
    ------
    ValueError
        If the name is not ``"<element>_<shell>"`` or xraydb has no such edge.

    """
    if not isinstance(edge, str) or edge.count("_") != 1:
        raise ValueError(f"EELS edge {edge!r} is not '<element>_<shell>', e.g. 'Fe_L3', 'O_K', 'Dy_M5'")
    element, shell = edge.split("_")
    symbol = SYMBOLS[atomic_number(element) - 1]
    shell = _SHELL_ALIASES.get(shell.upper(), shell.upper())
    edges = _xraydb().xray_edges(symbol)
    if shell not in edges:
        raise ValueError(f"xraydb has no {shell} edge for {symbol} (in {edge!r}); its edges are {sorted(edges)}")
    return float(edges[shell].energy)


def _to_ev(spectrum: xr.DataArray) -> np.ndarray:
    dim = spectrum.dims[-1]
    values = np.asarray(spectrum[dim].values, dtype=float)
    units = str(spectrum[dim].attrs.get("units", "eV")).strip().lower()
    if units not in ("ev", "kev"):
        raise ValueError(f"the energy axis {dim!r} is in {units!r}; EELS integration needs eV or keV")
    return values * 1000.0 if units == "kev" else values


def _plans(
    edges: Sequence[str] | None,
    elements: Sequence[str] | None,
    energies: np.ndarray,
    window: float,
    background_window: tuple[float, float],
) -> list[tuple[str, float]]:
    if isinstance(edges, str) or isinstance(elements, str):
        raise TypeError("`edges` and `elements` are lists, e.g. edges=['Fe_L3'] or elements=['Fe']")
    if not edges and not elements:
        raise ValueError("say which edges to integrate: edges=['Fe_L3', 'O_K'] or elements=['Fe', 'O']")
    pre = sum(background_window)

    def fits(onset: float) -> bool:
        return onset - pre >= energies[0] and onset + window <= energies[-1]

    span = f"{energies[0]:g}-{energies[-1]:g} eV"
    plans = []
    for edge in edges or ():
        onset = edge_onset(edge)
        if not fits(onset):
            raise ValueError(
                f"EELS edge {edge} at {onset:g} eV with its windows ({onset - pre:g}-{onset + window:g} eV) lies "
                f"outside the energy axis ({span})"
            )
        plans.append((edge, onset))
    for element in elements or ():
        symbol = SYMBOLS[atomic_number(element) - 1]
        found = [(f"{symbol}_{s}", edge_onset(f"{symbol}_{s}")) for s in EDGE_PREFERENCE if _has(symbol, s)]
        chosen = next(((name, onset) for name, onset in found if fits(onset)), None)
        if chosen is None:
            raise ValueError(
                f"no edge of {symbol} ({', '.join(f'{n} at {o:g} eV' for n, o in found)}) fits the energy axis "
                f"({span}) with its windows; drop it or widen the axis"
            )
        plans.append(chosen)
    symbols = [name.split("_")[0] for name, _ in plans]
    repeated = sorted({s for s in symbols if symbols.count(s) > 1})
    if repeated:
        raise ValueError(f"several edges of {repeated}; fusion needs one map per element, keep one edge of each")
    return plans


def _has(symbol: str, shell: str) -> bool:
    return shell in _xraydb().xray_edges(symbol)


def integrate_eels(
    signal: Any,
    *,
    edges: Sequence[str] | None = None,
    elements: Sequence[str] | None = None,
    window: float = 50.0,
    background_window: tuple[float, float] = (50.0, 5.0),
) -> xr.DataArray:
    r"""Integrate EELS edges of a spectrum image above a power-law background.

    For each edge with onset :math:`E_0`, a power law :math:`A E^{-r}` is
    fitted per pixel over :math:`[E_0 - g - w_b, E_0 - g]`
    (``background_window=(w_b, g)``) and the counts minus the extrapolated
    background are summed over the channels in :math:`[E_0, E_0 + \Delta)`
    (``window`` = :math:`\Delta`).

    Parameters
    ----------
    signal : hyperspy signal or dict
        An EELS spectrum image: exspy's ``EELSSpectrum``, a ``Signal1D``, or
        a RosettaSciIO signal dict, with the energy-loss axis (eV or keV)
        last.  Never modified; a lazy signal is loaded.
    edges : sequence of str, optional
        Edges such as ``["Fe_L3", "O_K", "Dy_M5"]`` (see `edge_onset`).
    elements : sequence of str, optional
        Element symbols; each uses the first of its K, L3, M5 edges
        (`EDGE_PREFERENCE`) whose windows fit the energy axis.
    window : float
        Integration width :math:`\Delta` above the onset, eV; default 50 eV.
    background_window : tuple of float
        ``(width, gap)`` of the pre-edge fitting window in eV: it ends
        ``gap`` below the onset; default ``(50, 5)``.

    Returns
    -------
    xarray.DataArray
        ``(element, y, x)`` float maps (background-subtracted, so they may be
        negative), with the signal's navigation coordinates.  attrs:
        ``edges``, ``onset`` (eV), ``window_start``/``window_stop`` (eV),
        ``background`` (``"power law"``), ``units`` (``"counts"``).

    Raises
    ------
    ImportError
        Without HyperSpy (the ``hyperspy`` extra).
    ValueError
        For unknown edges, edges whose windows leave the energy axis, or
        several edges of one element.

    """
    hs = _hyperspy()
    if not (window > 0 and background_window[0] > 0 and background_window[1] >= 0):
        raise ValueError(
            f"window={window!r} and background_window={background_window!r}: give positive widths in eV "
            "(and a gap >= 0)"
        )
    spectrum, _ = spectrum_dataarray(signal)
    energies = _to_ev(spectrum)
    plans = _plans(edges, elements, energies, float(window), background_window)
    # HyperSpy fits on a float copy of its own, so the caller's signal and data are never touched.
    axes = [{"size": size, "navigate": True} for size in spectrum.shape[:-1]]
    axes.append({"axis": energies, "units": "eV", "navigate": False})
    work = hs.signals.Signal1D(np.asarray(spectrum.data, dtype=float), axes=axes)
    width, gap = background_window
    maps = []
    for _, onset in plans:
        subtracted = work.remove_background(
            signal_range=(onset - gap - width, onset - gap),
            background_type="PowerLaw",
            fast=True,
            show_progressbar=False,
        )
        inside = (energies >= onset) & (energies < onset + window)
        net = np.asarray(subtracted.data[..., inside].sum(axis=-1), dtype=float)
        maps.append(xr.DataArray(net, dims=spectrum.dims[:-1], coords={d: spectrum[d] for d in spectrum.dims[:-1]}))
    result = xr.concat(maps, dim=ELEMENT_DIM).assign_coords({ELEMENT_DIM: [e.split("_")[0] for e, _ in plans]})
    result.attrs = {
        "long_name": "EELS edge intensity",
        "units": "counts",
        "edges": [edge for edge, _ in plans],
        "onset": [onset for _, onset in plans],
        "window_start": [onset for _, onset in plans],
        "window_stop": [onset + window for _, onset in plans],
        "background": "power law",
    }
    return result

"""HyperSpy/exspy signals and RosettaSciIO dicts holding spectrum images, as labeled arrays with their metadata.

HyperSpy, exspy and RosettaSciIO are optional (GPL) packages: nothing here
imports them.  A signal is read through its public attributes (``data``,
``axes_manager``, ``metadata``); a RosettaSciIO dict through its ``data``,
``axes`` and ``metadata`` keys.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..labeled import ELEMENT_DIM
from .integrate import DEFAULT_WINDOW, SpectrumWarning, integrate_lines

__all__ = ["integrate_signal", "lines_from_metadata", "spectrum_dataarray"]

_INSTRUMENTS = ("TEM", "SEM")


def _as_dict(metadata: Any) -> Mapping[str, Any]:
    if metadata is None:
        return {}
    if hasattr(metadata, "as_dictionary"):  # HyperSpy's DictionaryTreeBrowser
        return metadata.as_dictionary()
    if not isinstance(metadata, Mapping):
        raise TypeError(f"`metadata` must be a nested dict (HyperSpy layout), got {type(metadata).__name__}")
    return metadata


def _item(metadata: Mapping[str, Any], *path: str) -> Any:
    node: Any = metadata
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _instrument_item(metadata: Mapping[str, Any], *path: str) -> Any:
    for instrument in _INSTRUMENTS:
        value = _item(metadata, "Acquisition_instrument", instrument, *path)
        if value is not None:
            return value
    return None


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = [str(v) for v in np.atleast_1d(np.asarray(value, dtype=object)).tolist() if str(v).strip()]
    return items or None


def lines_from_metadata(metadata: Any) -> tuple[list[str] | None, float | None]:
    """Read the X-ray lines and the detector resolution from HyperSpy-style metadata.

    Parameters
    ----------
    metadata : dict or DictionaryTreeBrowser
        Nested metadata as RosettaSciIO readers return it (``signal["metadata"]``)
        or a HyperSpy signal's ``metadata``.

    Returns
    -------
    lines : list of str or None
        ``Sample.xray_lines`` (e.g. ``["Ag_La", "Cu_Ka"]``), None when absent
        or empty.
    fwhm_mn_ka : float or None
        ``Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa``
        (or ``.SEM.``) in eV, None when absent.

    """
    metadata = _as_dict(metadata)
    fwhm = _instrument_item(metadata, "Detector", "EDS", "energy_resolution_MnKa")
    return _strings(_item(metadata, "Sample", "xray_lines")), None if fwhm is None else float(fwhm)


def _axis_name(axis: Mapping[str, Any], default: str, taken: Sequence[str]) -> str:
    name = str(axis.get("name") or default)
    if name in ("<undefined>", "None", "", ELEMENT_DIM) or name in taken:
        name = default if default not in taken else f"{default}_{len(taken)}"
    return name


def _axis_values(axis: Mapping[str, Any]) -> np.ndarray:
    if axis.get("axis") is not None:  # a non-uniform axis lists its values
        return np.asarray(axis["axis"], dtype=float)
    return float(axis.get("offset", 0.0)) + float(axis.get("scale", 1.0)) * np.arange(int(axis["size"]))


def _signal_parts(signal: Any) -> tuple[Any, list[dict[str, Any]], Mapping[str, Any]]:
    if isinstance(signal, Mapping):
        if "data" not in signal:
            raise ValueError("`signal` dict has no 'data': pass a RosettaSciIO signal dict or a HyperSpy signal")
        axes = sorted(signal.get("axes", []), key=lambda a: a.get("index_in_array", 0))
        return signal["data"], [dict(a) for a in axes], _as_dict(signal.get("metadata"))
    manager = getattr(signal, "axes_manager", None)
    if manager is None or not hasattr(signal, "data"):
        raise TypeError(
            f"`signal` must be a HyperSpy/exspy signal or a RosettaSciIO dict, got {type(signal).__name__}; "
            "for arrays use fusex.spectra.integrate_lines"
        )
    axes = []
    for axis in sorted([*manager.navigation_axes, *manager.signal_axes], key=lambda a: a.index_in_array):
        name = axis.name if isinstance(axis.name, str) else None
        entry = {"name": name, "size": axis.size, "units": axis.units if isinstance(axis.units, str) else None}
        entry["axis"] = np.asarray(axis.axis, dtype=float)
        axes.append(entry)
    return signal.data, axes, _as_dict(signal.metadata)


def spectrum_dataarray(signal: Any) -> tuple[xr.DataArray, Mapping[str, Any]]:
    """Label a spectrum-image signal: a HyperSpy/exspy signal or a RosettaSciIO dict.

    Parameters
    ----------
    signal : hyperspy signal or dict
        A signal whose last array axis is its (energy) signal axis.  Lazy
        signals stay lazy (their dask array is wrapped, not computed).

    Returns
    -------
    spectrum : xarray.DataArray
        The data with one dimension per axis, named after the axes (``y``,
        ``x``, ``energy`` when unnamed), coordinates from their calibration
        and ``units`` attrs.
    metadata : dict
        The signal's metadata as a nested dict.

    """
    data, axes, metadata = _signal_parts(signal)
    ndim = np.ndim(data) if not hasattr(data, "ndim") else data.ndim
    if ndim < 1 or len(axes) != ndim:
        raise ValueError(f"`signal` has {len(axes)} axes for data of {ndim} dimensions; it is not a spectrum image")
    defaults = [f"dim_{i}" for i in range(ndim - 3)] + ["y", "x"][max(0, 3 - ndim) :] + ["energy"]
    dims: list[str] = []
    coords = {}
    for axis, default in zip(axes, defaults):
        name = _axis_name(axis, default, dims)
        dims.append(name)
        units = axis.get("units")
        attrs = {"units": units} if isinstance(units, str) and units not in ("", "<undefined>") else {}
        coords[name] = (name, _axis_values(axis), attrs)
    return xr.DataArray(data, dims=dims, coords=coords), metadata


def integrate_signal(
    signal: Any,
    *,
    lines: Sequence[str] | None = None,
    elements: Sequence[str] | None = None,
    fwhm_mn_ka: float | None = None,
    window: float = DEFAULT_WINDOW,
    background: bool = False,
    background_windows: tuple[float, float] = (2.0, 1.0),
    beam_energy: float | None = None,
) -> xr.DataArray:
    """Integrate the X-ray lines of an EDS spectrum image given as a HyperSpy signal or a RosettaSciIO dict.

    What is not given comes from the signal's metadata: the lines from
    ``Sample.xray_lines`` (else each of ``Sample.elements``' strongest line
    family, see `integrate_lines`), the detector FWHM at Mn Ka from
    ``Acquisition_instrument.{TEM,SEM}.Detector.EDS.energy_resolution_MnKa``
    (else 130 eV) and the beam energy from ``...beam_energy``.

    Parameters
    ----------
    signal : hyperspy signal or dict
        An ``EDS_TEM``/``EDS_SEM`` spectrum image (exspy's ``EDSTEMSpectrum``,
        a plain ``Signal1D``, or one dict of ``rsciio.<plugin>.file_reader``'s
        list).  Never modified; lazy signals stay lazy.
    lines, elements, fwhm_mn_ka, window, background, background_windows, beam_energy
        As in `integrate_lines`; each overrides the metadata.

    Returns
    -------
    xarray.DataArray
        ``(element, y, x)`` maps as `integrate_lines` returns them, with the
        signal's navigation axes as coordinates; attrs also hold ``title``.

    Raises
    ------
    ValueError
        If neither the arguments nor the metadata name any line or element,
        or the signal is an EELS one (use `integrate_eels`).

    """
    spectrum, metadata = spectrum_dataarray(signal)
    signal_type = str(_item(metadata, "Signal", "signal_type") or "")
    if signal_type.upper().startswith("EELS"):
        raise ValueError("this is an EELS signal: integrate its edges with fusex.spectra.integrate_eels")
    meta_lines, meta_fwhm = lines_from_metadata(metadata)
    if lines is None and elements is None:
        lines = meta_lines
        if lines is None:
            elements = _strings(_item(metadata, "Sample", "elements"))
        if lines is None and elements is None:
            title = _item(metadata, "General", "title")
            raise ValueError(
                f"the metadata of {title!r} list no X-ray lines or elements (Sample.xray_lines / Sample.elements); "
                "pass lines=['Fe_Ka', ...] or elements=['Fe', ...]"
            )
    if beam_energy is None:
        found = _instrument_item(metadata, "beam_energy")
        beam_energy = None if found is None else float(found)
    if fwhm_mn_ka is None and meta_fwhm is None:
        warnings.warn(
            "the metadata give no detector resolution (energy_resolution_MnKa): windows use 130 eV at Mn Ka. "
            "Pass fwhm_mn_ka= to set it",
            SpectrumWarning,
            stacklevel=2,
        )
    maps = integrate_lines(
        spectrum,
        lines=lines,
        elements=elements,
        fwhm_mn_ka=meta_fwhm if fwhm_mn_ka is None else fwhm_mn_ka,
        window=window,
        background=background,
        background_windows=background_windows,
        beam_energy=beam_energy,
    )
    title = _item(metadata, "General", "title")
    if title:
        maps.attrs["title"] = str(title)
    return maps

"""RosettaSciIO dictionaries and HyperSpy signals to and from labeled data.

RosettaSciIO and HyperSpy are GPL-licensed optional packages
(``pip install rosettasciio hyperspy exspy``); nothing here imports them
until a function needs them, and fusex copies no code from them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import UnreadableFileError
from ..labeled import ELEMENT_DIM
from ..spectra import integrate_eels, integrate_signal
from .choose import Grid, Selection, Signal, _symbol_or_none, catalogue, select
from .hdf5 import HDF5_SUFFIXES, _optional, read_hdf5_signals

__all__ = ["RSCIIO_READERS", "dataset", "from_hyperspy", "from_rsciio", "read_rsciio", "read_signals", "to_hyperspy"]

RSCIIO_READERS = {
    ".emd": "rsciio.emd",
    ".bcf": "rsciio.bruker",
    ".dm3": "rsciio.digitalmicrograph",
    ".dm4": "rsciio.digitalmicrograph",
    ".hspy": "rsciio.hspy",
    ".zspy": "rsciio.zspy",
}
"""File suffixes read through RosettaSciIO, and the plugin module of each."""


def _on_grid(signal: Signal, grid: Grid, *, attrs: bool = True) -> xr.DataArray:
    """Return a 2-D signal's data on ``grid``'s coordinates (lazy data stay lazy), with its title as attrs."""
    described = {"title": signal.title, "signal_type": signal.signal_type} if attrs else {}
    return xr.DataArray(
        signal.data, dims=grid.names, coords=grid.coords(), attrs={k: v for k, v in described.items() if v}
    )


def dataset(selection: Selection) -> xr.Dataset:
    """Build the Dataset `fusex.fuse` takes from a `Selection`: integrate the spectrum image or stack the maps.

    Returns
    -------
    xarray.Dataset
        ``haadf`` (y, x) and ``maps`` (element, y, x) on the maps' grid, with
        the file's axis names and units; ``attrs["source"]`` says which
        signals were used.

    """
    grid = selection.grid
    if selection.spectrum is not None:
        maps = _integrate(selection)
    else:
        stack = [_on_grid(m, grid, attrs=False) for m in selection.maps]
        maps = xr.concat(stack, dim=ELEMENT_DIM, coords="minimal", compat="override")
        maps = maps.assign_coords({ELEMENT_DIM: [m.label for m in selection.maps]})
        types = {m.signal_type for m in selection.maps} - {""}
        if len(types) == 1:
            maps.attrs["signal_type"] = types.pop()
    ds = xr.Dataset({"haadf": _on_grid(selection.haadf, grid), "maps": maps})
    ds.attrs["source"] = selection.summary()
    return ds


def _integrate(selection: Selection) -> xr.DataArray:
    """Integrate the selected spectrum image into maps on the selection's grid (raw counts for EDS)."""
    spectrum = selection.spectrum
    axes = [
        {"name": a.name, "size": a.size, "offset": a.offset, "scale": a.scale, "units": a.units, "navigate": i < 2}
        for i, a in enumerate(spectrum.axes)
    ]
    signal = {"data": spectrum.data, "axes": axes, "metadata": spectrum.metadata}
    if spectrum.is_eels:
        maps = integrate_eels(signal, edges=selection.lines, elements=selection.elements)
    else:
        maps = integrate_signal(signal, lines=selection.lines, elements=selection.elements)
    maps = maps.rename(dict(zip(maps.dims[-2:], selection.grid.names)))
    maps = maps.assign_coords(selection.grid.coords())
    maps.attrs.setdefault("signal_type", spectrum.signal_type)
    return maps


def from_rsciio(
    signals: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    haadf: str | None = None,
    elements: Sequence[str] | None = None,
    lines: Sequence[str] | None = None,
) -> xr.Dataset:
    """Turn RosettaSciIO reader output into a Dataset for `fusex.fuse`.

    The signals are chosen as `fusex.io.choose` describes: a spectrum image
    is integrated at its X-ray lines (raw counts); without one, the 2-D
    maps titled by an element (``"Fe"``, ``"Fe-EELS"``, ``"Sr La"``) are
    used as given.  The HAADF image is the image on the maps' grid, titled
    HAADF, ADF, DF, BF or BSE in this order of preference.  1-D sum spectra
    are left out; repeated titles are numbered (``"Ch 1 #2"``).

    Parameters
    ----------
    signals : list of dict
        What an ``rsciio.<plugin>.file_reader`` returns (one dict per signal,
        ``data`` plus ``axes`` in array order), or several readers' lists
        joined.
    haadf : str, optional
        Title (or numbered label) of the HAADF image.
    elements : sequence of str, optional
        With a spectrum image: element symbols to integrate (each at its
        strongest line in the energy range).  Without one: the maps to use,
        by title or element, in this order.
    lines : sequence of str, optional
        X-ray lines to integrate from the spectrum image (``"Fe_Ka"``),
        instead of the ones in its metadata.

    Returns
    -------
    xarray.Dataset
        ``haadf`` (y, x) and ``maps`` (element, y, x) with the files' axis
        names, coordinates (offset + scale * index) and units.

    Raises
    ------
    ValueError
        When the signals to use cannot be told apart, are on other grids (the
        message says by how much), or the spectrum image's lines are unknown.

    """
    signals = [signals] if isinstance(signals, Mapping) else list(signals)
    chosen = select(catalogue(signals), haadf=haadf, elements=elements, lines=lines)
    for note in chosen.notes:
        if note.startswith("the HAADF image has"):
            warnings.warn(note, UserWarning, stacklevel=2)
    return dataset(chosen)


def read_signals(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read every signal of a microscope file (``.emd``, ``.bcf``, ``.hspy``, ``.h5``...) as RosettaSciIO dicts.

    HDF5 files (``.h5``, ``.hdf5``) are HyperSpy's or plain datasets (see `fusex.io.hdf5`).
    """
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return read_hdf5_signals(path)
    module = RSCIIO_READERS.get(path.suffix.lower())
    if module is None:
        known = ", ".join([*RSCIIO_READERS, *HDF5_SUFFIXES])
        raise ValueError(f"{path}: not a microscope format fusex knows ({known})")
    reader = _optional(module, "rosettasciio")
    return list(reader.file_reader(str(path)))


def read_rsciio(path: str | os.PathLike, **kwargs: Any) -> xr.Dataset:
    """Read a microscope file (``.emd``, ``.bcf``, ``.dm3``/``.dm4``, ``.hspy``, ``.zspy``, ``.h5``) for `fusex.fuse`.

    Keyword arguments go to `from_rsciio`.  ``haadf`` may also name another
    file that holds the HAADF image (formats such as ``.hspy`` hold one
    signal per file).

    Raises
    ------
    UnreadableFileError
        When the file's signals cannot be used (no maps, no image on their
        grid, a spectrum image without lines); the message says what to pass.
    """
    signals = read_signals(path)
    haadf = kwargs.pop("haadf", None)
    if haadf is not None and _is_file(haadf):
        images = read_signals(haadf)
        signals, haadf = [*signals, *images], _title_of_first_image(images, haadf)
    try:
        return from_rsciio(signals, haadf=haadf, **kwargs)
    except ValueError as exc:
        if isinstance(exc, UnreadableFileError):
            raise
        raise UnreadableFileError(path, str(exc)) from exc


def _is_file(name: Any) -> bool:
    # exists, not is_file: a .zspy (zarr) file is a folder
    return isinstance(name, os.PathLike) or (isinstance(name, str) and Path(name).suffix != "" and Path(name).exists())


def _title_of_first_image(signals: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    entries = catalogue(signals)
    images = [s for s in entries if s.data.ndim == 2 and s.kind in ("image", "map")]
    if not images:
        raise ValueError(f"`haadf`: {path} holds no 2-D image")
    return images[0].title


def _hyperspy_dict(signal: Any, title: str | None = None) -> dict[str, Any]:
    # HyperSpy lists navigation and signal axes x-first; the data array is (navigation..., signal...)
    # in reverse.  exspy's line maps are images along navigation axes, with no signal axis.
    manager = signal.axes_manager
    ordered = [*reversed(manager.navigation_axes), *reversed(manager.signal_axes)]
    axes = [
        {
            "name": a.name,
            "size": a.size,
            "offset": a.offset,
            "scale": a.scale,
            "units": a.units,
            "navigate": a.navigate,
            "index_in_array": i,
        }
        for i, a in enumerate(ordered)
    ]
    metadata = signal.metadata.as_dictionary()
    lines = signal.metadata.get_item("Sample.xray_lines") or []
    metadata.setdefault("General", {})["title"] = title or (
        lines[0] if len(lines) == 1 else signal.metadata.General.title
    )
    return {"data": signal.data, "axes": axes, "metadata": metadata}


def from_hyperspy(
    maps: Sequence[Any] | Any,
    haadf: Any,
    *,
    elements: Sequence[str] | None = None,
    lines: Sequence[str] | None = None,
) -> xr.Dataset:
    """Build a Dataset from HyperSpy signals: element maps (or an EDS spectrum image) and a HAADF image.

    Lazy signals stay lazy (the Dataset holds dask arrays); the maps' and
    the HAADF image's metadata are kept as JSON in the ``hyperspy_metadata``
    attrs, which `to_hyperspy` puts back.

    Parameters
    ----------
    maps : list of Signal2D, or an EDS spectrum image
        The element maps, e.g. what ``exspy``'s ``get_lines_intensity`` returns
        (their X-ray line, ``metadata.Sample.xray_lines``, names them), or an
        ``EDSTEMSpectrum``/``EDSSEMSpectrum`` to integrate at its lines.
    haadf : Signal2D
        The HAADF image of the same scan.
    elements : sequence of str, optional
        Names for the maps, replacing the ones found in their metadata; for a
        spectrum image, the element symbols to integrate.
    lines : sequence of str, optional
        X-ray lines to integrate from a spectrum image, instead of its own.

    """
    single = not isinstance(maps, Sequence)
    signals = [maps] if single else list(maps)
    dicts = [_hyperspy_dict(m) for m in signals]
    haadf_dict = _hyperspy_dict(haadf, title="HAADF")
    entries = catalogue([haadf_dict, *dicts])
    spectra = [e for e in entries[1:] if e.kind == "spectrum image"]
    if spectra:
        if len(entries) != 2:
            raise ValueError("pass one spectrum image as `maps`, or a list of 2-D maps; not both")
        chosen = select(entries, haadf=entries[0].label, elements=elements, lines=lines)
    else:
        if lines is not None:
            raise ValueError("`lines` are for a spectrum image; these maps are already integrated")
        if elements is not None:
            if len(elements) != len(dicts):
                raise ValueError(f"`elements` has {len(elements)} names for {len(dicts)} maps")
            for entry, name in zip(entries[1:], elements):
                entry.label = entry.title = str(name)
        names = [e.label for e in entries[1:]]
        if len(set(names)) != len(names):
            raise ValueError(f"the maps' names {names} repeat; pass elements=[...] to name them")
        for entry in entries[1:]:
            entry.kind = "map"
        chosen = select(entries, haadf=entries[0].label)
    ds = dataset(chosen)
    ds["haadf"].attrs["hyperspy_metadata"] = _json(haadf_dict["metadata"])
    ds["maps"].attrs["hyperspy_metadata"] = _json(dicts[0]["metadata"])
    return ds


def _json(metadata: Mapping[str, Any]) -> str:
    # netCDF attrs hold strings, not nested dicts; dates and arrays are written as their text.
    return json.dumps(metadata, default=str)


def to_hyperspy(ds: xr.Dataset, variable: str = "maps") -> Any:
    """Return a result variable as HyperSpy ``Signal2D`` objects (one per element for maps).

    Axis names, scales, offsets and units come from the coordinates.  The
    metadata the inputs came with (see `from_hyperspy`) is put back; each
    map gets its element and X-ray line (``Sample.elements``,
    ``Sample.xray_lines``) and the input's ``signal_type`` (``"EDS_TEM"``,
    ``"EDS_SEM"``, ``"EELS"``), the HAADF image none; the fusion parameters
    go to ``metadata.fusex``.  Dask-backed variables give lazy signals.
    """
    hs = _optional("hyperspy.api", "hyperspy")
    da = ds[variable]
    da = da if isinstance(da.data, np.ndarray) or _is_dask(da.data) else da.as_numpy()

    def signal(image: xr.DataArray, title: str) -> Any:
        metadata = json.loads(image.attrs.get("hyperspy_metadata", "{}"))
        metadata.pop("Sample", None)
        metadata.setdefault("General", {})["title"] = title
        signal_type = image.attrs.get("signal_type", "") if ELEMENT_DIM in da.dims else ""
        metadata.setdefault("Signal", {})["signal_type"] = signal_type
        if "units" in image.attrs:
            metadata["Signal"]["quantity"] = str(image.attrs["units"])
        cls = hs.signals.Signal2D
        s = cls(image.data, metadata=metadata).as_lazy() if _is_dask(image.data) else cls(image.data, metadata=metadata)
        for axis, dim in zip(s.axes_manager.signal_axes, reversed(image.dims)):
            values = np.asarray(image[dim].values, dtype=float) if dim in image.coords else np.arange(image.sizes[dim])
            axis.name = str(dim)
            axis.offset = float(values[0])
            axis.scale = float(values[1] - values[0]) if values.size > 1 else 1.0
            axis.units = image[dim].attrs.get("units", "px") if dim in image.coords else "px"
        s.metadata.set_item("fusex", {k: v for k, v in ds.attrs.items() if isinstance(v, (int, float, str))})
        return s

    if ELEMENT_DIM not in da.dims:
        return signal(da, variable)
    out = []
    for name in da[ELEMENT_DIM].values:
        s = signal(da.sel({ELEMENT_DIM: name}, drop=True), f"{name} ({variable})")
        symbol = _symbol_or_none(str(name))
        if symbol is not None:
            s.metadata.set_item("Sample.elements", [symbol])
        line = _line_of(str(name), da.attrs)
        if line is not None:
            s.metadata.set_item("Sample.xray_lines", [line])
        out.append(s)
    return out


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask")


def _line_of(name: str, attrs: Mapping[str, Any]) -> str | None:
    """Return the X-ray line a map was integrated at: its name (``"Fe_Ka"``) or the ``lines`` attr, by element order."""
    if "_" in name and _symbol_or_none(name) is not None:
        return name
    lines = attrs.get("lines")
    if lines is None:
        return None
    lines = [lines] if isinstance(lines, str) else [str(v) for v in lines]
    return next((line for line in lines if _symbol_or_none(line) == _symbol_or_none(name)), None)

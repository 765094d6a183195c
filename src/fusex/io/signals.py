"""RosettaSciIO dictionaries and HyperSpy signals to and from labeled data.

RosettaSciIO and HyperSpy are GPL-licensed optional packages
(``pip install rosettasciio hyperspy exspy``); nothing here imports them
until a function needs them, and fusex copies no code from them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..xarray import ELEMENT_DIM

__all__ = ["RSCIIO_READERS", "from_hyperspy", "from_rsciio", "read_rsciio", "to_hyperspy"]

RSCIIO_READERS = {
    ".emd": "rsciio.emd",
    ".bcf": "rsciio.bruker",
    ".dm3": "rsciio.digitalmicrograph",
    ".dm4": "rsciio.digitalmicrograph",
    ".hspy": "rsciio.hspy",
}
"""File suffixes read through RosettaSciIO, and the plugin module of each."""


def _optional(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this needs {package}: pip install {package}") from exc


def _axis_coord(name: str, size: int, offset: float, scale: float, units: Any) -> tuple:
    units = units if isinstance(units, str) and units not in ("", "<undefined>") else "px"
    return name, offset + scale * np.arange(size), {"units": units}


def _signal_dataarray(signal: Mapping[str, Any]) -> xr.DataArray:
    data = np.asarray(signal["data"])
    axes = sorted(signal.get("axes", []), key=lambda a: a.get("index_in_array", 0))
    if data.ndim != 2 or len(axes) != 2:
        title = signal.get("metadata", {}).get("General", {}).get("title", "?")
        raise ValueError(
            f"signal {title!r} has shape {data.shape}: fusex needs 2-D images. Spectrum images must first be "
            "turned into element maps (e.g. exspy's get_lines_intensity), then passed to from_hyperspy"
        )
    dims, coords = [], {}
    for default, axis in zip(("y", "x"), axes):
        name = str(axis.get("name") or default)
        if name in ("<undefined>", "None", ELEMENT_DIM) or name in dims:
            name = default if default not in dims else f"{default}_{len(dims)}"
        dims.append(name)
        coords[name] = _axis_coord(
            name, int(axis["size"]), float(axis.get("offset", 0.0)), float(axis.get("scale", 1.0)), axis.get("units")
        )
    return xr.DataArray(data, dims=dims, coords={k: (v[0], v[1], v[2]) for k, v in coords.items()})


def _title(signal: Mapping[str, Any]) -> str:
    return str(signal.get("metadata", {}).get("General", {}).get("title", ""))


def _element_name(title: str) -> str:
    # exspy titles its line maps "X-ray line intensity of <title>: Fe_Ka at 6.40 keV".
    if ": " in title and " at " in title:
        return title.split(": ", 1)[1].split(" at ", 1)[0]
    return title


def _assemble(haadf: xr.DataArray, maps: dict[str, xr.DataArray]) -> xr.Dataset:
    for name, image in maps.items():
        if image.shape != haadf.shape:
            raise ValueError(f"map {name!r} has shape {image.shape} but the HAADF image has {haadf.shape}")
        for own, ref in zip(image.dims, haadf.dims):
            if not np.allclose(image[own].values, haadf[ref].values, rtol=1e-6, atol=0):
                raise ValueError(f"map {name!r} is not sampled like the HAADF image along {ref!r}")
    stack = np.stack([np.asarray(m.values) for m in maps.values()])
    return xr.Dataset(
        {"haadf": haadf, "maps": ((ELEMENT_DIM, *haadf.dims), stack)},
        coords={ELEMENT_DIM: [str(name) for name in maps]},
    )


def from_rsciio(
    signals: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    haadf: str | None = None,
    elements: Sequence[str] | None = None,
) -> xr.Dataset:
    """Turn RosettaSciIO reader output into a Dataset for `fusex.fuse`.

    Parameters
    ----------
    signals : list of dict
        What an ``rsciio.<plugin>.file_reader`` returns (one dict per signal,
        ``data`` plus ``axes`` in array order), or several readers' lists
        joined.  2-D signals are used; others raise.
    haadf : str, optional
        Title of the HAADF signal (default: the one whose title contains
        ``"HAADF"``, case-insensitive).
    elements : sequence of str, optional
        Titles of the maps to use, in this order (default: all other 2-D
        signals).  exspy's line-map titles are shortened to the line name
        (``"Fe_Ka"``).

    Returns
    -------
    xarray.Dataset
        ``haadf`` (y, x) and ``maps`` (element, y, x) with the files' axis
        names, coordinates (offset + scale * index) and units.

    """
    signals = [signals] if isinstance(signals, Mapping) else list(signals)
    titles = [_element_name(_title(s)) or f"signal{i}" for i, s in enumerate(signals)]
    repeated = sorted({t for t in titles if titles.count(t) > 1})
    if repeated:
        raise ValueError(f"several signals are titled {repeated}; give each map its own title")
    titled = dict(zip(titles, signals))
    if haadf is None:
        found = [t for t in titled if "haadf" in t.lower()]
        if len(found) != 1:
            raise ValueError(f"cannot tell which signal is the HAADF image among {list(titled)}; pass haadf='<title>'")
        haadf = found[0]
    if haadf not in titled:
        raise ValueError(f"no signal titled {haadf!r}; titles are {list(titled)}")
    names = [t for t in titled if t != haadf] if elements is None else list(elements)
    missing = [n for n in names if n not in titled]
    if missing:
        raise ValueError(f"no signal titled {missing}; titles are {list(titled)}")
    if not names:
        raise ValueError("only a HAADF image was given; add the elemental maps")
    return _assemble(_signal_dataarray(titled[haadf]), {n: _signal_dataarray(titled[n]) for n in names})


def read_rsciio(path: str | Path, **kwargs: Any) -> xr.Dataset:
    """Read a microscopy file (``.emd``, ``.bcf``, ``.dm3``/``.dm4``, ``.hspy``) with RosettaSciIO.

    Keyword arguments go to `from_rsciio`.
    """
    path = Path(path)
    module = RSCIIO_READERS.get(path.suffix.lower())
    if module is None:
        raise ValueError(f"{path}: not a RosettaSciIO format fusex knows ({', '.join(RSCIIO_READERS)})")
    reader = _optional(module, "rosettasciio")
    return from_rsciio(reader.file_reader(str(path)), **kwargs)


def _hyperspy_dict(signal: Any) -> dict[str, Any]:
    # HyperSpy lists navigation and signal axes x-first; the data array is (navigation..., signal...)
    # in reverse.  exspy's line maps are images along navigation axes, with no signal axis.
    manager = signal.axes_manager
    ordered = [*reversed(manager.navigation_axes), *reversed(manager.signal_axes)]
    axes = [
        {"name": a.name, "size": a.size, "offset": a.offset, "scale": a.scale, "units": a.units, "index_in_array": i}
        for i, a in enumerate(ordered)
    ]
    metadata = signal.metadata
    lines = metadata.get_item("Sample.xray_lines") or []
    title = lines[0] if len(lines) == 1 else metadata.General.title
    return {"data": np.asarray(signal.data), "axes": axes, "metadata": {"General": {"title": title}}}


def from_hyperspy(maps: Sequence[Any], haadf: Any, *, elements: Sequence[str] | None = None) -> xr.Dataset:
    """Build a Dataset from HyperSpy signals: element maps and a HAADF image.

    Parameters
    ----------
    maps : list of Signal2D
        The element maps, e.g. what ``exspy``'s ``get_lines_intensity`` returns
        (their X-ray line, ``metadata.Sample.xray_lines``, names them).
    haadf : Signal2D
        The HAADF image of the same scan.
    elements : sequence of str, optional
        Names for the maps, replacing the ones found in their metadata.

    """
    dicts = [_hyperspy_dict(m) for m in maps]
    if elements is not None:
        if len(elements) != len(dicts):
            raise ValueError(f"`elements` has {len(elements)} names for {len(dicts)} maps")
        for d, name in zip(dicts, elements):
            d["metadata"]["General"]["title"] = name
    names = [d["metadata"]["General"]["title"] for d in dicts]
    if len(set(names)) != len(names):
        raise ValueError(f"the maps' names {names} repeat; pass elements=[...] to name them")
    haadf_dict = _hyperspy_dict(haadf)
    haadf_dict["metadata"]["General"]["title"] = "HAADF"
    maps_da = {n: _signal_dataarray(d) for n, d in zip(names, dicts)}
    return _assemble(_signal_dataarray(haadf_dict), maps_da)


def to_hyperspy(ds: xr.Dataset, variable: str = "maps") -> Any:
    """Return a result variable as HyperSpy ``Signal2D`` objects (one per element for maps).

    Axis names, scales, offsets and units come from the coordinates; the
    element and the fusion parameters go into the metadata.
    """
    hs = _optional("hyperspy.api", "hyperspy")
    da = ds[variable].as_numpy()

    def signal(image: xr.DataArray, title: str) -> Any:
        s = hs.signals.Signal2D(np.asarray(image.values))
        for axis, dim in zip(s.axes_manager.signal_axes, reversed(image.dims)):
            values = np.asarray(image[dim].values, dtype=float) if dim in image.coords else np.arange(image.sizes[dim])
            axis.name = str(dim)
            axis.offset = float(values[0])
            axis.scale = float(values[1] - values[0]) if values.size > 1 else 1.0
            axis.units = image[dim].attrs.get("units", "px") if dim in image.coords else "px"
        s.metadata.General.title = title
        s.metadata.set_item("fusex", {k: v for k, v in ds.attrs.items() if isinstance(v, (int, float, str))})
        return s

    if ELEMENT_DIM not in da.dims:
        return signal(da, variable)
    out = []
    for name in da[ELEMENT_DIM].values:
        s = signal(da.sel({ELEMENT_DIM: name}, drop=True), f"{name} ({variable})")
        s.metadata.set_item("Sample.elements", [str(name).split("_")[0]])
        out.append(s)
    return out

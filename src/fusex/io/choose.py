"""Which signals of a multi-signal file `fuse` uses: the HAADF image, and the maps or the spectrum image.

A microscope file holds more than fusex needs: sum spectra, overview images,
secondary-electron images, a spectrum image *and* the vendor's own maps, often
with repeated titles.  `catalogue` describes every signal in a neutral form
(`Signal`), and `select` picks

* the element maps: the spectrum image integrated at X-ray lines when the
  file has one (raw counts), otherwise the 2-D maps titled by an element;
* the HAADF image: the image on the maps' grid, preferring by title HAADF,
  ADF, DF, BF, BSE in this order.

Signals of one scan with the same shape and pixel size but other axis
offsets (Velox) are one grid; lengths in other units (nm, µm, Å) are
converted before they are compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..elements import parse_element_name

__all__ = ["HAADF_PREFERENCE", "Grid", "Selection", "Signal", "catalogue", "select"]

HAADF_PREFERENCE = ("HAADF", "ADF", "DF", "BF", "BSE")
"""Title fragments of the HAADF image (or its stand-in), most preferred first."""

# Length units in nanometres, to compare pixel sizes written in different units.
_NM_PER_UNIT = {"m": 1e9, "mm": 1e6, "µm": 1e3, "μm": 1e3, "um": 1e3, "nm": 1.0, "Å": 0.1, "A": 0.1, "pm": 1e-3}
_ENERGY_UNITS = ("ev", "kev")
# Pixel sizes that agree this closely are one grid (file formats round them differently).
_SCALE_RTOL = 1e-3
# An image of the maps' shape whose pixel size is off by more than this is not taken on its own (only when named).
_SCALE_LIMIT = 0.25


def _undefined(value: Any) -> bool:
    return value is None or str(value) in ("", "<undefined>", "None")


@dataclass(frozen=True)
class Axis:
    """One calibrated axis, as RosettaSciIO describes it."""

    name: str
    size: int
    offset: float
    scale: float
    units: str
    navigate: bool | None

    @property
    def is_energy(self) -> bool:
        """Whether this is a spectrum's energy axis (in eV or keV)."""
        return self.units.lower() in _ENERGY_UNITS

    def describe(self) -> str:
        """Say the axis's name, size, pixel size and origin."""
        origin = f" from {self.offset:.4g}" if self.offset else ""
        return f"{self.name}: {self.size} x {self.scale:.4g} {self.units}{origin}"


@dataclass(frozen=True)
class Grid:
    """The pixel grid of an image: rows then columns."""

    names: tuple[str, str]
    shape: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    units: tuple[str, str]

    def coords(self) -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
        """Return the xarray coordinates of the grid: offset + scale * index, with units."""
        return {
            name: (name, offset + scale * np.arange(size), {"units": units})
            for name, size, offset, scale, units in zip(self.names, self.shape, self.offset, self.scale, self.units)
        }

    def describe(self) -> str:
        """Say the grid's shape and pixel size."""
        sizes = {f"{s:.4g} {u}" for s, u in zip(self.scale, self.units)}
        return f"{self.shape[0]}x{self.shape[1]} px of {' x '.join(sorted(sizes))}"

    def scale_mismatch(self, reference: Grid) -> float:
        """Return the largest relative pixel-size difference from ``reference`` (0 for units that do not compare)."""
        ratios = [
            _scale_ratio(scale, units, ref_scale, ref_units)
            for scale, units, ref_scale, ref_units in zip(self.scale, self.units, reference.scale, reference.units)
        ]
        return max(abs(r - 1.0) if r is not None else 0.0 for r in ratios)

    def differences(self, reference: Grid) -> list[str]:
        """How this grid differs from ``reference`` (empty when they are one grid; offsets are ignored)."""
        if self.shape != reference.shape:
            return [f"{self.describe()} instead of {reference.describe()}"]
        found = []
        for name, scale, units, ref_scale, ref_units in zip(
            reference.names, self.scale, self.units, reference.scale, reference.units
        ):
            ratio = _scale_ratio(scale, units, ref_scale, ref_units)
            if ratio is not None and not math.isclose(ratio, 1.0, rel_tol=_SCALE_RTOL):
                found.append(
                    f"a pixel size of {scale:.4g} {units} along {name} instead of {ref_scale:.4g} {ref_units} "
                    f"({100 * (ratio - 1):+.1f} %)"
                )
        return found


def _scale_ratio(scale: float, units: str, ref_scale: float, ref_units: str) -> float | None:
    """``scale / ref_scale`` in one length unit, or None when the units cannot be compared."""
    if units == ref_units:
        return scale / ref_scale
    if units in _NM_PER_UNIT and ref_units in _NM_PER_UNIT:
        return scale * _NM_PER_UNIT[units] / (ref_scale * _NM_PER_UNIT[ref_units])
    return None


@dataclass
class Signal:
    """One signal of a file: its data (possibly lazy), calibrated axes in array order, and metadata.

    ``kind`` is ``"image"``, ``"map"`` (a 2-D signal titled by an element),
    ``"spectrum image"`` (two spatial axes and an energy axis),
    ``"spectrum"`` (1-D, such as a sum spectrum) or ``"other"``.
    """

    label: str
    title: str
    data: Any
    axes: tuple[Axis, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "other"
    element: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape."""
        return tuple(self.data.shape)

    @property
    def signal_type(self) -> str:
        """HyperSpy's signal type (``"EDS_TEM"``, ``"EDS_SEM"``, ``"EELS"``, or ``""``)."""
        return str(self.metadata.get("Signal", {}).get("signal_type") or "")

    @property
    def is_eels(self) -> bool:
        """Whether this is an EELS signal (by its signal type)."""
        return self.signal_type.upper().startswith("EELS")

    @property
    def xray_lines(self) -> list[str]:
        """The X-ray lines the metadata names (``Sample.xray_lines``)."""
        return [str(line) for line in self.metadata.get("Sample", {}).get("xray_lines") or []]

    @property
    def sample_elements(self) -> list[str]:
        """The elements the metadata names (``Sample.elements``)."""
        return [str(e) for e in self.metadata.get("Sample", {}).get("elements") or []]

    @property
    def grid(self) -> Grid:
        """The grid of the two spatial axes (for a spectrum image, the ones before the energy axis)."""
        rows, cols = self.axes[:2]
        return Grid(
            (rows.name, cols.name),
            (rows.size, cols.size),
            (rows.scale, cols.scale),
            (rows.offset, cols.offset),
            (rows.units, cols.units),
        )

    def describe(self) -> str:
        """One line: label, kind, shape, data type and quantity, axes and X-ray lines."""
        shape = "x".join(map(str, self.shape))
        axes = "; ".join(a.describe() for a in self.axes)
        kind = self.kind + (f" of {self.element}" if self.element else "")
        kind += f", {self.signal_type}" if self.signal_type else ""
        quantity = self.metadata.get("Signal", {}).get("quantity")
        values = f"{self.data.dtype}" + (f" {quantity}" if quantity else "")
        lines = f"; X-ray lines {', '.join(self.xray_lines)}" if self.xray_lines else ""
        return f"{self.label!r}: {kind}, {shape} {values} ({axes}){lines}"


def _axes(signal: Mapping[str, Any], ndim: int) -> tuple[Axis, ...]:
    raw = sorted(signal.get("axes", []), key=lambda a: a.get("index_in_array") or 0)
    if len(raw) != ndim:
        raw = [{"size": n} for n in signal["data"].shape]
    defaults = ("y", "x") if ndim == 2 else ("y", "x", "energy")[-ndim:] if ndim <= 3 else ()
    axes: list[Axis] = []
    for i, a in enumerate(raw):
        default = defaults[i] if i < len(defaults) else f"axis{i}"
        name = default if _undefined(a.get("name")) else str(a["name"])
        if name in [b.name for b in axes] or name == "element":
            name = default if default not in [b.name for b in axes] else f"{default}_{i}"
        units = "px" if _undefined(a.get("units")) else str(a["units"])
        axes.append(
            Axis(
                name,
                int(a["size"]),
                float(a.get("offset") or 0.0),
                float(a.get("scale") or 1.0),
                units,
                a.get("navigate"),
            )
        )
    return tuple(axes)


def _kind(title: str, axes: tuple[Axis, ...], signal_type: str) -> tuple[str, str | None]:
    if len(axes) == 1:
        return "spectrum", None
    if (
        len(axes) == 3
        and (axes[2].is_energy or signal_type.startswith(("EDS", "EELS")))
        and axes[2].navigate is not True
    ):
        return "spectrum image", None
    if len(axes) == 2 and not any(a.is_energy for a in axes):
        try:
            return "map", parse_element_name(title, case_sensitive=True)
        except ValueError:
            return "image", None
    return "other", None


def catalogue(signals: Sequence[Mapping[str, Any]]) -> list[Signal]:
    """Describe RosettaSciIO reader output (one dict per signal) as `Signal` records.

    Repeated titles get a number (``"Ch 1 #1"``, ``"Ch 1 #2"``, in file
    order), so that every signal has a label of its own.
    """
    titles = [
        str(s.get("metadata", {}).get("General", {}).get("title") or f"signal {i}") for i, s in enumerate(signals)
    ]
    seen: dict[str, int] = {}
    out = []
    for title, signal in zip(titles, signals):
        seen[title] = seen.get(title, 0) + 1
        label = f"{title} #{seen[title]}" if titles.count(title) > 1 else title
        data = signal["data"]
        data = data if hasattr(data, "shape") and hasattr(data, "dtype") else np.asarray(data)
        metadata = signal.get("metadata", {})
        axes = _axes(signal, data.ndim)
        kind, element = _kind(title, axes, str(metadata.get("Signal", {}).get("signal_type") or ""))
        out.append(Signal(label, title, data, axes, metadata, kind, element))
    return out


@dataclass
class Selection:
    """What `fuse` uses from a file: the HAADF image and either maps or a spectrum image with its lines.

    ``spectrum`` is set when the maps are to be integrated from it, at
    ``lines`` (X-ray lines) or ``elements`` (symbols whose strongest line is
    taken); ``maps`` holds the 2-D maps to read as given otherwise.
    ``notes`` say what was chosen and why.
    """

    haadf: Signal
    grid: Grid
    maps: list[Signal] = field(default_factory=list)
    spectrum: Signal | None = None
    lines: list[str] | None = None
    elements: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a log: where the HAADF image and the maps come from."""
        if self.spectrum is not None:
            given = (("lines", self.lines), ("elements", self.elements))
            how = " and ".join(f"{kind} {', '.join(names)}" for kind, names in given if names)
            maps = f"integrated from {self.spectrum.label!r} at {how}"
        else:
            maps = ", ".join(repr(m.label) for m in self.maps)
        return f"HAADF {self.haadf.label!r} ({self.haadf.grid.describe()}); maps {maps}"


def _find(signals: Sequence[Signal], name: str) -> list[Signal]:
    by_label = [s for s in signals if s.label == name]
    return by_label or [s for s in signals if s.title == name]


def _spectrum_image(signals: Sequence[Signal], has_maps: bool) -> Signal | None:
    """Return the EDS spectrum image to integrate; an EELS one only when the file holds no maps."""
    found = [s for s in signals if s.kind == "spectrum image"]
    eds = [s for s in found if not s.is_eels]
    use = eds or ([] if has_maps else [s for s in found if s.is_eels])
    if len(use) > 1:
        raise ValueError(
            f"the file holds several spectrum images ({', '.join(repr(s.label) for s in use)}); "
            "fusex integrates one: read them one by one with rsciio and pass the one to use to fusex.io.from_rsciio"
        )
    return use[0] if use else None


def _maps_from_file(signals: Sequence[Signal], elements: Sequence[str] | None) -> list[Signal]:
    maps = [s for s in signals if s.kind == "map"]
    if elements is None:
        return maps
    chosen = []
    for name in elements:
        found = _find(maps, name) or [m for m in maps if m.element == _symbol_or_none(name)]
        if len(found) != 1:
            which = "no map" if not found else f"several maps ({', '.join(repr(m.label) for m in found)})"
            raise ValueError(
                f"{which} for {name!r} in `elements`; the maps are {[m.label for m in maps]}"
                + ("" if found else "; a spectrum image would let fusex integrate any element")
            )
        chosen.append(found[0])
    return chosen


def _symbol_or_none(name: str) -> str | None:
    try:
        return parse_element_name(name)
    except ValueError:
        return None


def _grid_of_maps(maps: Sequence[Signal]) -> Grid:
    reference = maps[0].grid
    for m in maps[1:]:
        differs = m.grid.differences(reference)
        if differs:
            raise ValueError(
                f"map {m.label!r} is not on the grid of map {maps[0].label!r}: it has {'; '.join(differs)}"
            )
    return reference


def _rank(signal: Signal) -> int:
    title = signal.title.upper()
    return next((i for i, key in enumerate(HAADF_PREFERENCE) if key in title), len(HAADF_PREFERENCE))


def _choose_haadf(signals: Sequence[Signal], grid: Grid, haadf: str | None, notes: list[str]) -> Signal:
    images = [s for s in signals if s.kind in ("image", "map") and s.data.ndim == 2]
    if haadf is not None:
        named = _find(images, haadf)
        if not named:
            raise ValueError(f"no image titled {haadf!r} for `haadf`; the 2-D signals are {[s.label for s in images]}")
        fitting = [s for s in named if s.grid.shape == grid.shape]
        if len(fitting) > 1:
            raise ValueError(f"several images are titled {haadf!r}: pass one of {[s.label for s in fitting]}")
        if not fitting:
            raise ValueError(
                f"the image {haadf!r} is not on the maps' grid: it has {named[0].grid.differences(grid)[0]}; "
                "fusex needs the HAADF image and the maps pixel for pixel (resample or crop one of them first)"
            )
        return fitting[0]
    candidates = [
        s
        for s in images
        if s.kind == "image" and s.grid.shape == grid.shape and s.grid.scale_mismatch(grid) <= _SCALE_LIMIT
    ]
    if not candidates:
        others = "; ".join(f"{s.label!r} has {s.grid.differences(grid)[0]}" for s in images if s.kind == "image")
        raise ValueError(
            f"no image in the file is on the maps' grid ({grid.describe()})"
            + (f": {others}" if others else ", and the file holds no image at all")
            + "; fusex needs the HAADF image and the maps pixel for pixel: pass haadf= (--haadf) naming an image "
            "or a file holding one (an image of the maps' shape is taken when named, whatever its pixel size)"
        )
    candidates.sort(key=lambda s: (_rank(s), bool(s.grid.differences(grid))))
    best = candidates[0]
    for s in images:
        if s.kind == "image" and s.grid.shape != grid.shape:
            notes.append(f"left out image {s.label!r}: {s.grid.differences(grid)[0]}")
    if _rank(best) == len(HAADF_PREFERENCE):
        if len(candidates) > 1:
            raise ValueError(
                f"cannot tell which image is the HAADF among {[s.label for s in candidates]} (none is titled "
                f"{', '.join(HAADF_PREFERENCE)}); pass haadf='<title>' (--haadf TITLE)"
            )
        notes.append(f"took {best.label!r}, the only image on the maps' grid, as the HAADF image")
    return best


def select(
    signals: Sequence[Signal],
    *,
    haadf: str | None = None,
    elements: Sequence[str] | None = None,
    lines: Sequence[str] | None = None,
) -> Selection:
    """Choose the HAADF image and the maps (or the spectrum image and its lines) of a file.

    Parameters
    ----------
    signals : sequence of Signal
        What `catalogue` made of the file.
    haadf : str, optional
        The HAADF image's label or title (default: the image on the maps'
        grid whose title comes first in `HAADF_PREFERENCE`, or the only one).
    elements : sequence of str, optional
        With a spectrum image: element symbols to integrate.  Without one:
        the maps to use, by title or element, in this order.
    lines : sequence of str, optional
        X-ray lines to integrate from the spectrum image (``"Fe_Ka"``), or
        EELS edges (``"Fe_L3"``) for an EELS one.

    Raises
    ------
    ValueError
        When no choice can be made; the message says what to pass.

    """
    notes: list[str] = []
    file_maps = [s for s in signals if s.kind == "map"]
    spectrum = _spectrum_image(signals, bool(file_maps))
    ignored = [s.label for s in signals if s.kind in ("spectrum", "other")]
    if ignored:
        notes.append(
            f"left out {len(ignored)} signal(s) that are neither images, maps nor spectrum images (such as 1-D "
            f"sum spectra): {', '.join(ignored)}"
        )
    if lines is not None and spectrum is None:
        raise ValueError("`lines` need a spectrum image to integrate, and the file holds none")
    if spectrum is not None:
        if lines is None and elements is None:
            lines = spectrum.xray_lines or None
            elements = None if lines else spectrum.sample_elements or None
        if lines is None and elements is None and file_maps:
            elements = [m.element for m in file_maps if m.element]
            notes.append(f"integrating the elements of the file's own maps ({', '.join(elements)})")
        if lines is None and elements is None:
            raise ValueError(
                f"{spectrum.label!r} is a spectrum image ({'x'.join(map(str, spectrum.shape))}) whose metadata "
                "names no X-ray lines nor elements: say which to integrate with --elements (e.g. --elements Fe O) "
                "or --lines (e.g. --lines Fe_Ka O_Ka); in Python, elements=[...] or lines=[...]"
            )
        if file_maps:
            notes.append(
                f"left out the file's own maps ({', '.join(m.label for m in file_maps)}): counts are integrated "
                "from the spectrum image instead"
            )
        chosen = _choose_haadf(signals, spectrum.grid, haadf, notes)
        _note_grid(chosen, spectrum.grid, notes)
        return Selection(
            chosen,
            spectrum.grid,
            spectrum=spectrum,
            lines=None if lines is None else list(lines),
            elements=None if elements is None else list(elements),
            notes=notes,
        )
    maps = [m for m in _maps_from_file(signals, elements) if m.label != haadf and m.title != haadf]
    if not maps:
        titles = [s.label for s in signals]
        raise ValueError(f"the file holds no element maps nor a spectrum image (signals: {titles})")
    grid = _grid_of_maps(maps)
    chosen = _choose_haadf(signals, grid, haadf, notes)
    _note_grid(chosen, grid, notes)
    return Selection(chosen, grid, maps=[m for m in maps if m is not chosen], notes=notes)


def _note_grid(haadf: Signal, grid: Grid, notes: list[str]) -> None:
    if haadf.grid.offset != grid.offset:
        notes.append("the HAADF image is on the maps' grid with other axis offsets; the maps' coordinates are used")
    for problem in haadf.grid.differences(grid):
        notes.append(f"the HAADF image has {problem}; the maps' pixel size is used")

"""X-ray emission lines: names, energies and relative weights from xraydb.

Line energies and intensities come from `xraydb
<https://xraypy.github.io/XrayDB/>`_ (MIT), the Elam, Ravel and Sieber
compilation.  xraydb names single transitions in Siegbahn notation (``Ka1``,
``Ka2``, ``Lb1``, ...); an EDS detector cannot resolve some of them, so a few
names stand for the group a spectrum shows as one peak:

* ``Ka``: ``Ka1``, ``Ka2``, ``Ka3`` (K - L1,2,3);
* ``Kb``: ``Kb1``, ``Kb3`` (K - M2,3);
* ``La``: ``La1``, ``La2`` (L3 - M4,5);
* ``Lb2``: ``Lb2,15`` (L3 - N4,5).

Every other name (``Lb1``, ``Ma``, ``Mb``, ``Ka1``, ...) is one xraydb
transition.  A group's energy is the intensity-weighted mean of its
transitions, i.e. the centroid of the unresolved peak.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from ..elements import SYMBOLS, atomic_number

__all__ = ["FAMILIES", "XrayLine", "family_lines", "xray_line"]

_GROUPS: dict[str, tuple[str, ...]] = {
    "Ka": ("Ka1", "Ka2", "Ka3"),
    "Kb": ("Kb1", "Kb3"),
    "La": ("La1", "La2"),
    "Lb2": ("Lb2,15",),
}

FAMILIES: tuple[str, ...] = ("Ka", "La", "Ma")
"""Main line of each family, highest energy first."""


@dataclass(frozen=True)
class XrayLine:
    """One X-ray line as an EDS spectrum shows it.

    Attributes
    ----------
    name : str
        ``"<symbol>_<line>"``, e.g. ``"Fe_Ka"``.
    element : str
        The element symbol.
    energy : float
        Energy in keV (the intensity-weighted centroid of a group).
    weight : float
        The summed xraydb intensity of the line's transitions: the fraction of
        the vacancies of its initial sub-shell that it carries (0-1).
    edge : float
        Energy of the initial shell's ionization edge in keV (what the beam
        must exceed to excite the line).
    transitions : tuple of str
        The xraydb transitions making up the line.

    """

    name: str
    element: str
    energy: float
    weight: float
    edge: float
    transitions: tuple[str, ...]


def _xraydb() -> Any:
    # Imported on first use: xraydb pulls in SQLAlchemy, about half a second.
    try:
        return importlib.import_module("xraydb")
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ImportError("X-ray line energies need xraydb: pip install xraydb") from exc


def _split(name: str) -> tuple[str, str]:
    if not isinstance(name, str):
        raise TypeError(f"X-ray lines must be strings such as 'Fe_Ka', got {name!r} ({type(name).__name__})")
    parts = name.strip().replace(" ", "_").split("_")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"X-ray line {name!r} is not '<element>_<line>', e.g. 'Fe_Ka', 'Pt_La', 'Au_Ma'")
    symbol = SYMBOLS[atomic_number(parts[0]) - 1]
    return symbol, parts[1][0].upper() + parts[1][1:].lower()


@functools.lru_cache(maxsize=256)
def _lookup(symbol: str, line: str) -> XrayLine | None:
    db = _xraydb()
    table = db.xray_lines(symbol)
    names = _GROUPS.get(line, (line,))
    found = [(table[n].energy, table[n].intensity, table[n].initial_level) for n in names if n in table]
    weight = sum(w for _, w, _ in found)
    if not found or weight <= 0:
        return None
    energy = sum(e * w for e, w, _ in found) / weight
    shell = found[0][2]
    edge = db.xray_edge(symbol, shell)
    return XrayLine(
        name=f"{symbol}_{line}",
        element=symbol,
        energy=energy / 1000.0,
        weight=float(weight),
        edge=float(edge.energy) / 1000.0 if edge is not None else float("nan"),
        transitions=tuple(n for n in names if n in table),
    )


def xray_line(name: str) -> XrayLine:
    """Look up an X-ray line by name.

    Parameters
    ----------
    name : str
        ``"<element>_<line>"`` in HyperSpy's spelling: ``"Fe_Ka"``,
        ``"Pt_La"``, ``"Au_Ma"``, ``"Cu_Lb1"``; a space may replace the
        underscore.  See the module docstring for the grouped names.

    Returns
    -------
    XrayLine

    Raises
    ------
    ValueError
        If the name is malformed, the element unknown, or xraydb has no such
        line for the element (the message lists the lines it has).

    """
    symbol, line = _split(name)
    found = _lookup(symbol, line)
    if found is None:
        known = sorted({_group_of(t) for t in _xraydb().xray_lines(symbol)})
        raise ValueError(f"xraydb has no line {line!r} for {symbol} (in {name!r}); its lines are {known}")
    return found


def _group_of(transition: str) -> str:
    return next((group for group, members in _GROUPS.items() if transition in members), transition)


def family_lines(element: str) -> list[XrayLine]:
    """Return the main line of each family (``Ka``, ``La``, ``Ma``) that xraydb lists for an element.

    Parameters
    ----------
    element : str
        An element symbol (case-insensitive).

    Returns
    -------
    list of XrayLine
        Highest energy first; families xraydb does not list (e.g. no ``La``
        for Al) are left out.

    """
    symbol = SYMBOLS[atomic_number(element) - 1]
    return [line for family in FAMILIES if (line := _lookup(symbol, family)) is not None]

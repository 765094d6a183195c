"""Chemical element symbols and atomic numbers.

fusex keeps its own table so that element lookup needs no optional (and
GPL-licensed) microscopy package.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

__all__ = ["SYMBOLS", "atomic_number", "atomic_numbers", "parse_element_name"]

# Symbols in order of atomic number, Z = 1 .. 118.
SYMBOLS: tuple[str, ...] = tuple(
    """
    H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni
    Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe
    Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg
    Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg
    Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og
    """.split()
)

_Z_BY_LOWER = {symbol.lower(): z for z, symbol in enumerate(SYMBOLS, start=1)}


def atomic_number(name: str) -> int:
    """Return the atomic number of an element symbol.

    Parameters
    ----------
    name : str
        An element symbol such as ``"Fe"`` (case-insensitive).  X-ray line
        suffixes as written by EDS software (``"Fe_Ka"``, ``"O_K"``) are
        accepted: everything after the first underscore is ignored.  So are
        the vendor and HyperSpy names `parse_element_name` reads
        (``"Fe-EELS"``, ``"Sr La"``, ``"Fe L3"``, ``"Stack of Fe_Ka"``).

    Returns
    -------
    int
        The atomic number Z.

    Raises
    ------
    ValueError
        If the symbol is unknown; the message suggests the closest symbols.

    """
    if not isinstance(name, str):
        raise TypeError(f"element symbols must be strings, got {name!r} ({type(name).__name__})")
    symbol = (_symbol_in(name, case_sensitive=False) or name.strip().split("_", 1)[0]).lower()
    try:
        return _Z_BY_LOWER[symbol]
    except KeyError:
        close = difflib.get_close_matches(symbol, _Z_BY_LOWER, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(SYMBOLS[_Z_BY_LOWER[c] - 1] for c in close)}?" if close else ""
        raise ValueError(
            f"unknown element symbol {name!r} in `elements`.{hint} "
            "Pass chemical symbols such as 'Sr', 'Ti', 'O', or give atomic numbers with `z=`."
        ) from None


def atomic_numbers(names: Sequence[str]) -> tuple[int, ...]:
    """Return the atomic numbers of several element symbols (see `atomic_number`)."""
    return tuple(atomic_number(name) for name in names)


# What may follow the symbol in a vendor's or HyperSpy's name: an X-ray line or family (Ka, Ka1, Lb3, K),
# an EELS edge (L3, L2,3, M4,5, M45), or the technique and similar words.
_QUALIFIER = re.compile(
    r"^(?:[KLMN](?:[a-z]{1,2}\d{0,2}|\d{1,2}(?:,\d{1,2})?)?|(?i:eels|eds|edx|xeds|edxs|map|maps|intensity|edge|line))$"
)
# exspy titles its line maps "X-ray line intensity of <title>: Fe_Ka at 6.40 keV"; HyperSpy's stack,
# "Stack of <title>".
_EXSPY_TITLE = re.compile(r"^X-ray line intensity of .*:\s*(?P<line>\S+) at .*$", re.IGNORECASE)
_STACK_OF = re.compile(r"^(?:stack of\s+)+", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s_\-:/()\[\]]+")


def _symbol_in(name: str, *, case_sensitive: bool) -> str | None:
    """Return the element symbol a name starts with, or None when the name is not an element's."""
    text = _STACK_OF.sub("", name.strip())
    exspy = _EXSPY_TITLE.match(text)
    if exspy:
        text = exspy["line"]
    tokens = [t for t in _SEPARATORS.split(text) if t]
    qualifier = _QUALIFIER if case_sensitive else re.compile(_QUALIFIER.pattern, re.IGNORECASE)
    if not tokens or not all(qualifier.match(t) for t in tokens[1:]):
        return None
    z = _Z_BY_LOWER.get(tokens[0].lower())
    if z is None or (case_sensitive and tokens[0] != SYMBOLS[z - 1]):
        return None
    return SYMBOLS[z - 1]


def parse_element_name(name: str, *, case_sensitive: bool = False) -> str:
    """Return the element symbol in a map's or line's name, as vendors and HyperSpy write them.

    Accepted forms are a symbol optionally followed by an X-ray line, an
    EELS edge or the technique, joined by spaces, ``_``, ``-`` or ``:``:
    ``"Fe"``, ``"Fe_Ka"``, ``"Sr La"``, ``"Fe L3"``, ``"Mn L2,3"``,
    ``"Fe-EELS"``, ``"O K map"``, as well as HyperSpy's ``"Stack of Fe_Ka"``
    and exspy's ``"X-ray line intensity of <title>: Fe_Ka at 6.40 keV"``.

    Parameters
    ----------
    name : str
        The name to read.
    case_sensitive : bool
        Accept the symbol only as chemistry writes it (``"Se"``, not
        ``"SE"``), so that a detector's title such as ``"SE"`` (secondary
        electrons) is not taken for selenium.  Default: any case.

    Returns
    -------
    str
        The symbol, capitalised as in `SYMBOLS` (``"Fe"``).

    Raises
    ------
    ValueError
        If the name does not start with an element symbol, or has words
        after it that are neither a line, an edge nor a technique.

    """
    if not isinstance(name, str):
        raise TypeError(f"element names must be strings, got {name!r} ({type(name).__name__})")
    symbol = _symbol_in(name, case_sensitive=case_sensitive)
    if symbol is None:
        raise ValueError(
            f"cannot read an element from {name!r}: expected a symbol, optionally followed by an X-ray line, "
            "an EELS edge or the technique, such as 'Fe', 'Fe_Ka', 'Sr La', 'Fe L3' or 'Fe-EELS'"
        )
    return symbol

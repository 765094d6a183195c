"""Chemical element symbols and atomic numbers.

fusex keeps its own table so that element lookup needs no optional (and
GPL-licensed) microscopy package.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["SYMBOLS", "atomic_number", "atomic_numbers"]

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
        accepted: everything after the first underscore is ignored.

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
    symbol = name.strip().split("_", 1)[0].lower()
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

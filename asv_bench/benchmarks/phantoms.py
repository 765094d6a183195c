"""The benchmarks' test data: phantom crystals of 2 to 5 elements, cached in the process and on disk."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import tempfile
from pathlib import Path

import numpy as np

from fusex import datasets
from fusex.datasets import Phantom
from fusex.elements import atomic_numbers

__all__ = ["lattice", "sample"]

# One column per unit cell for each element, at distinct positions, so that any
# 2 to 5 of them make a valid phantom (the same cell as scripts/roofline.py).
_SITES: dict[str, tuple[tuple[float, float], ...]] = {
    "Sr": ((0.0, 0.0),),
    "Ti": ((0.5, 0.5),),
    "O": ((0.5, 0.0),),
    "Ba": ((0.25, 0.25),),
    "Zr": ((0.75, 0.75),),
}


def lattice(n_elements: int) -> dict[str, tuple[tuple[float, float], ...]]:
    """Return a projected unit cell with ``n_elements`` elements (2 to 5).

    Parameters
    ----------
    n_elements : int
        Number of elements, 2 to 5: Sr, Ti, O, Ba, Zr in this order.

    Returns
    -------
    dict
        Element symbol -> fractional (row, column) positions, for
        `fusex.datasets.phantom`'s ``lattice``.

    """
    if not 2 <= n_elements <= len(_SITES):
        raise ValueError(f"n_elements must be 2 to {len(_SITES)}, got {n_elements}")
    return dict(list(_SITES.items())[:n_elements])


@functools.cache
def sample(size: int, n_elements: int = 3) -> Phantom:
    """Return a square phantom (NumPy, float32), cached in this process and on disk.

    asv runs every benchmark case in its own process, and a 4096 x 4096 phantom
    takes seconds to simulate, so phantoms are kept as ``.npz`` files in
    ``$FUSEX_BENCH_CACHE`` (default: ``fusex-asv-phantoms`` in the temporary
    directory), under a name that includes a hash of `fusex.datasets`' source:
    a commit that changes the simulation gets new files.

    Parameters
    ----------
    size : int
        Edge length in pixels.
    n_elements : int
        Number of elemental maps, 2 to 5.

    Returns
    -------
    Phantom
        ``dose=3.0`` (a few counts per column, where fusion is used), ``seed=0``.

    """
    cells = lattice(n_elements)
    source = hashlib.sha256(inspect.getsource(datasets).encode()).hexdigest()[:12]
    folder = Path(os.environ.get("FUSEX_BENCH_CACHE") or Path(tempfile.gettempdir()) / "fusex-asv-phantoms")
    path = folder / f"phantom-{size}-{n_elements}-{source}.npz"
    if path.is_file():
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in ("haadf", "maps", "truth")}
        z = atomic_numbers(tuple(cells))
        return Phantom(elements=tuple(cells), z=tuple(z), dose=3.0, **arrays)
    made = datasets.phantom((size, size), lattice=cells, dose=3.0, seed=0)
    with contextlib.suppress(OSError):  # a read-only or full disk only costs the next process time
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.npz")
        np.savez(partial, haadf=made.haadf, maps=made.maps, truth=made.truth)
        os.replace(partial, path)  # atomic: a concurrent reader sees the whole file or none
    return made

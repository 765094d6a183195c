r"""Synthetic phantoms with ground truth, for demos, tests and benchmarks.

A phantom is a projected crystal: each element occupies atomic columns at
fixed fractional positions of a square unit cell, each column with its own
random occupancy.  From the true maps :math:`t_e` it simulates

* a HAADF image :math:`\propto \sum_e (Z_e t_e)^\gamma` plus Gaussian noise, and
* chemical maps of Poisson counts with mean ``dose * t_e + background``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .elements import atomic_numbers

__all__ = ["LATTICES", "Phantom", "nrmse", "phantom"]

LATTICES: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    # ABO3 perovskite along [001]: A columns at the corners, B-O columns at the
    # centre, pure O columns on the edges.
    "perovskite": {
        "Sr": ((0.0, 0.0),),
        "Ti": ((0.5, 0.5),),
        "O": ((0.5, 0.0), (0.0, 0.5), (0.5, 0.5)),
    },
    # Rock salt along [001]: alternating cation and anion columns.
    "rocksalt": {
        "Mg": ((0.0, 0.0), (0.5, 0.5)),
        "O": ((0.5, 0.0), (0.0, 0.5)),
    },
}
"""Projected unit cells: element -> fractional (row, column) positions of its columns."""


@dataclass(frozen=True)
class Phantom:
    """A simulated acquisition with its ground truth (NumPy, float32).

    Attributes
    ----------
    haadf : ndarray (H, W)
        Noisy HAADF image, scaled so that the noise-free image peaks at 1.
    maps : ndarray (E, H, W)
        Noisy chemical maps in counts.
    truth : ndarray (E, H, W)
        True column occupancy maps in [0, 1].
    elements : tuple of str
        Element symbols, one per map.
    z : tuple of int
        Their atomic numbers.
    dose : float
        Expected counts at the centre of a fully occupied column.

    """

    haadf: np.ndarray
    maps: np.ndarray
    truth: np.ndarray
    elements: tuple[str, ...]
    z: tuple[int, ...]
    dose: float


def phantom(
    shape: tuple[int, int] = (128, 128),
    *,
    lattice: str | Mapping[str, Sequence[tuple[float, float]]] = "perovskite",
    elements: Sequence[str] | None = None,
    cell: float = 16.0,
    sigma: float = 1.6,
    occupancy: tuple[float, float] = (0.5, 1.0),
    dose: float = 4.0,
    background: float = 0.05,
    haadf_noise: float = 0.05,
    gamma: float = 1.7,
    seed: int | None = None,
) -> Phantom:
    """Simulate a HAADF image and chemical maps of a projected crystal.

    Parameters
    ----------
    shape : (int, int)
        Image size (H, W) in pixels.
    lattice : str or mapping
        A name from `LATTICES` or a mapping element -> fractional positions.
    elements : sequence of str, optional
        Symbols that replace the lattice's own, in order (``["Ba", "Zr", "O"]``
        turns the perovskite into BaZrO3).
    cell : float
        Unit-cell edge in pixels.
    sigma : float
        Gaussian width of an atomic column in pixels.
    occupancy : (float, float)
        Range of the uniform random occupancy of each column.
    dose : float
        Expected counts at the centre of a fully occupied column; low doses
        (1-10) are where fusion helps most.
    background : float
        Expected background counts per pixel in every map.
    haadf_noise : float
        Standard deviation of the HAADF Gaussian noise, relative to its peak.
    gamma : float
        Z-contrast exponent of the simulated HAADF image.
    seed : int, optional
        Seed of the random generator, for reproducible phantoms.

    """
    cells = dict(LATTICES[lattice]) if isinstance(lattice, str) else dict(lattice)
    if elements is not None:
        if len(elements) != len(cells):
            raise ValueError(f"`elements` has {len(elements)} symbols but the lattice has {len(cells)} sites")
        cells = dict(zip(elements, cells.values()))
    names = tuple(cells)
    z = atomic_numbers(names)
    rng = np.random.default_rng(seed)
    truth = np.zeros((len(names), *shape))
    radius = int(np.ceil(4 * sigma))
    offsets = np.arange(-radius, radius + 1)
    for e, positions in enumerate(cells.values()):
        for fy, fx in positions:
            for cy in np.arange((fy - 1.0) * cell, shape[0] + cell, cell):
                for cx in np.arange((fx - 1.0) * cell, shape[1] + cell, cell):
                    occ = rng.uniform(*occupancy)
                    _add_column(truth[e], cy, cx, occ, sigma, offsets)
    truth = np.minimum(truth, 1.0)
    clean = np.sum((np.asarray(z, dtype=np.float64)[:, None, None] * truth) ** gamma, axis=0)
    clean /= clean.max()
    haadf = clean + rng.normal(0.0, haadf_noise, shape)
    maps = rng.poisson(dose * truth + background)
    return Phantom(
        haadf=haadf.astype(np.float32),
        maps=maps.astype(np.float32),
        truth=truth.astype(np.float32),
        elements=names,
        z=z,
        dose=float(dose),
    )


def _add_column(image: np.ndarray, cy: float, cx: float, height: float, sigma: float, offsets: np.ndarray) -> None:
    """Add a Gaussian column, cut off at 4 sigma, to ``image`` in place."""
    rows = np.round(cy).astype(int) + offsets
    cols = np.round(cx).astype(int) + offsets
    rows = rows[(rows >= 0) & (rows < image.shape[0])]
    cols = cols[(cols >= 0) & (cols < image.shape[1])]
    if rows.size and cols.size:
        profile_y = np.exp(-((rows - cy) ** 2) / (2 * sigma**2))
        profile_x = np.exp(-((cols - cx) ** 2) / (2 * sigma**2))
        image[np.ix_(rows, cols)] += height * np.outer(profile_y, profile_x)


def nrmse(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    r"""Return the normalized RMS error of each map after the best affine fit to the truth.

    For each map, :math:`\min_{a,c} \lVert a\,\hat{x} + c - t \rVert / \lVert t - \bar t \rVert`:
    maps in any units (counts, normalized) are compared fairly, 0 is perfect
    and 1 is no better than a constant.

    Parameters
    ----------
    estimate, truth : ndarray (E, H, W) or (H, W)
        NumPy arrays (convert GPU results with ``.get()`` or ``.cpu().numpy()``).

    """
    est = np.asarray(estimate, dtype=np.float64).reshape(-1, *np.shape(truth)[-2:])
    tru = np.asarray(truth, dtype=np.float64).reshape(est.shape)
    out = []
    for e, t in zip(est, tru):
        design = np.stack([e.ravel(), np.ones(e.size)], axis=1)
        coef, *_ = np.linalg.lstsq(design, t.ravel(), rcond=None)
        resid = design @ coef - t.ravel()
        out.append(np.linalg.norm(resid) / np.linalg.norm(t - t.mean()))
    return np.asarray(out).reshape(np.shape(truth)[:-2])

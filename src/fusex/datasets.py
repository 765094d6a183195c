r"""Synthetic phantoms with ground truth, and a real acquisition, for demos, tests and benchmarks.

A phantom is a projected crystal: each element occupies atomic columns at
fixed fractional positions of a square unit cell, each column with its own
random occupancy.  From the true maps :math:`t_e` it simulates

* a HAADF image :math:`\propto \sum_e (Z_e t_e)^\gamma` plus Gaussian noise, and
* chemical maps of Poisson counts with mean ``dose * t_e + background``.

`dysco3` loads the published tutorial's DyScO3 acquisition, shipped with fusex.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .elements import atomic_numbers
from .params import FusionParams

__all__ = ["LATTICES", "Acquisition", "Phantom", "dysco3", "nrmse", "phantom", "raw_nrmse"]

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


@dataclass(frozen=True)
class Acquisition:
    """A real acquisition: a HAADF image and its chemical maps (NumPy, float32), without ground truth.

    Attributes
    ----------
    haadf : ndarray (H, W)
        The HAADF image, as recorded.
    maps : ndarray (E, H, W)
        The chemical maps, as published (see `units`).
    elements : tuple of str
        Element symbols, one per map.
    z : tuple of int
        Their atomic numbers.
    units : str
        What the maps hold (``"counts"``, or how they were scaled).
    citation : str
        Where the data come from, to cite when using them.
    params : FusionParams
        The parameters the data's source fused them with.

    """

    haadf: np.ndarray
    maps: np.ndarray
    elements: tuple[str, ...]
    z: tuple[int, ...]
    units: str
    citation: str
    params: FusionParams


DYSCO3_CITATION = (
    "J. Manassa et al., Fused Multi-Modal Electron "
    "Microscopy, Elemental Microscopy (2024), doi:10.69761/MXVR4353 (data: MIT license, Copyright (c) 2023 "
    "Microscopy Society of America - EM Journal); method: J. Schwartz et al., Imaging atomic-scale chemistry "
    "from fused multi-modal electron microscopy, npj Comput. Mater. 8, 16 (2022), doi:10.1038/s41524-021-00692-5"
)


def dysco3() -> Acquisition:
    r"""Load the DyScO3 acquisition of the published fused multi-modal EM tutorial.

    An atomic-resolution STEM scan of DyScO3, 256 x 256 pixels: the HAADF
    image (raw detector values, about 6400-33600) and X-EDS maps of Sc, Dy and
    O, which the tutorial distributes already scaled to about [0, 1], so they
    are **not counts** (`fusex.tune`'s count splitting does not apply).  The
    tutorial fuses them with :math:`\gamma = 1.6`, ``lambda_chem`` 0.08,
    ``lambda_tv`` 0.15, :math:`\epsilon = 0.24`, 30 iterations of 3 TV
    iterations each and HAADF weights :math:`Z_e / \overline{Z}`; the
    result's ``params``, ``FusionParams.published(gamma=1.6, lambda_chem=0.08,
    lambda_tv=0.15, eps=0.24, n_iter=30, n_tv=2, haadf_weights="z_mean")``,
    reproduce that fusion of the reference package (``n_tv=2``: the
    reference's TV drops its last dual update; see `FusionParams.published`).

    The data are the tutorial's (MIT license, Copyright (c) 2023 Microscopy
    Society of America - EM Journal; the notice ships next to the file as
    ``fusex/data/LICENSE-dysco3.txt``), stored as float32.  Cite the tutorial,
    J. Manassa et al., "Fused Multi-Modal Electron Microscopy", *Elemental
    Microscopy* (2024), doi:10.69761/MXVR4353, and the method, J. Schwartz et
    al., "Imaging atomic-scale chemistry from fused multi-modal electron
    microscopy", *npj Comput. Mater.* 8, 16 (2022),
    doi:10.1038/s41524-021-00692-5 (also in the result's ``citation``).

    Returns
    -------
    Acquisition
        ``haadf`` (256, 256), ``maps`` (3, 256, 256), ``elements``
        ``("Sc", "Dy", "O")``: new arrays on every call.

    Examples
    --------
    >>> import fusex
    >>> data = fusex.datasets.dysco3()
    >>> data.maps.shape, data.elements
    ((3, 256, 256), ('Sc', 'Dy', 'O'))
    >>> res = fusex.fuse(data.haadf, data.maps, elements=data.elements, params=data.params)

    """
    with resources.files("fusex").joinpath("data", "dysco3.npz").open("rb") as f, np.load(f) as npz:
        elements = tuple(str(e) for e in npz["elements"])
        return Acquisition(
            haadf=npz["haadf"],
            maps=npz["maps"],
            elements=elements,
            z=atomic_numbers(elements),
            units="scaled to about [0, 1] by the tutorial (not counts)",
            citation=DYSCO3_CITATION,
            params=FusionParams.published(
                gamma=1.6, lambda_chem=0.08, lambda_tv=0.15, eps=0.24, n_iter=30, n_tv=2, haadf_weights="z_mean"
            ),
        )


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


def raw_nrmse(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    r"""Return the normalized RMS error of each map at raw scale: no fit, so scale and offset errors count.

    For each map, :math:`\lVert \hat{x} - t \rVert / \lVert t - \bar t \rVert`, with
    ``estimate`` in the truth's units (for a fusion, ``result.to_input_units()``
    against the expected counts).  0 is perfect, 1 is the error of the
    truth's mean; unlike `nrmse` it sees a map that is right up to a factor.

    Parameters
    ----------
    estimate : ndarray (..., E, H, W) or (..., H, W)
        One or more estimates (a leading batch axis broadcasts against ``truth``).
    truth : ndarray (E, H, W) or (H, W)
        The true maps, in the estimate's units.

    """
    estimate, truth = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if estimate.shape[estimate.ndim - truth.ndim :] != truth.shape:
        raise ValueError(
            f"`estimate` must end in `truth`'s shape {truth.shape} (maps, rows, columns), got {estimate.shape}"
        )
    centred = truth - truth.mean(axis=(-2, -1), keepdims=True)
    return np.sqrt(np.sum((estimate - truth) ** 2, axis=(-2, -1)) / np.sum(centred**2, axis=(-2, -1)))

r"""Simple alternatives to fusion, each with its smoothing chosen from the data, for fair comparisons.

A fused map is only worth having if it beats what a microscopist gets from the
same counts with a simple filter.  This module gives those filters, with the
weight chosen automatically so that no one has to guess it:

* `gaussian_counts`: a Gaussian blur :math:`G_\sigma * b` of each map, with
  :math:`\sigma` chosen per element by count splitting and the held-out error
  estimate `fusex.tune` ranks fusions and its own blurs by (the fair
  automatic baseline for counts);
* `gaussian_jinvariant`: the same blur with :math:`\sigma` chosen by a
  J-invariant pixel hold-out (Batson & Royer 2019), for maps that are not
  counts; `jinvariant_loss` scores any denoiser that way;
* `gaussian_truth`: the :math:`\sigma` closest to a known truth (phantoms), the
  best any Gaussian can do;
* `poisson_tv`: fusion without its HAADF term (:math:`\lambda_H = 0`), i.e.
  Poisson-likelihood total-variation denoising of each map alone.

Every function takes NumPy arrays ``(E, H, W)`` (or one map ``(H, W)``) and
returns new arrays; the caller's arrays are never modified.  The blur uses
reflecting borders, so every map keeps its total.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._blur import as_stack, gaussian
from ._folds import Folds, simple_scores
from ._xp import to_numpy
from .api import fuse
from .params import FusionParams
from .tune import _check_counts, split_counts

__all__ = [
    "DEFAULT_SIGMAS",
    "GaussianChoice",
    "HeldOutScore",
    "gaussian",
    "gaussian_counts",
    "gaussian_jinvariant",
    "gaussian_truth",
    "jinvariant_loss",
    "poisson_tv",
]

DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
"""Blur widths searched by default, in pixels; 0 leaves the map as it is."""


@dataclass(frozen=True)
class HeldOutScore:
    """A held-out score per element and its noise.

    Attributes
    ----------
    value : ndarray (E,)
        The score (lower is better).
    spread : ndarray (E,)
        Its standard error over the independent parts it is pooled from (the
        pixel masks).

    """

    value: np.ndarray
    spread: np.ndarray


@dataclass(frozen=True)
class GaussianChoice:
    """A Gaussian blur of each map with a chosen width.

    Attributes
    ----------
    maps : ndarray (E, H, W)
        The blurred maps, float64, in the units of the input.
    sigma : ndarray (E,)
        The chosen width of each map's blur, in pixels.
    sigmas : ndarray (S,)
        The widths tried.
    scores : ndarray (S, E)
        The criterion of every width for every map (lower is better).
    spread : ndarray (E,)
        Standard error of the chosen width's score (NaN where it has none).
    criterion : str
        What ``scores`` holds.

    """

    maps: np.ndarray
    sigma: np.ndarray
    sigmas: np.ndarray
    scores: np.ndarray
    spread: np.ndarray
    criterion: str


def _sigmas(sigmas: Sequence[float]) -> np.ndarray:
    grid = np.asarray(sigmas, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ValueError(f"`sigmas` must be a non-empty 1-D sequence of widths >= 0 (pixels), got {sigmas!r}")
    return grid


def _choice(
    stack: np.ndarray, grid: np.ndarray, scores: np.ndarray, spread: np.ndarray, criterion: str
) -> GaussianChoice:
    """Blur each map with the width of its smallest score."""
    best = np.nanargmin(scores, axis=0)
    sigma = grid[best]
    return GaussianChoice(gaussian(stack, sigma), sigma, grid, scores, spread, criterion)


def gaussian_counts(
    maps: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS, *, folds: int = 4, seed: int | None = 0
) -> GaussianChoice:
    r"""Blur each map of counts with the width chosen by count splitting, as `fusex.tune` chooses fusion weights.

    The counts are split into ``folds`` independent Poisson folds
    (`fusex.tune.split_counts`); each width blurs the other folds,
    :math:`b^{(-k)}`, and is scored by the same held-out estimate of the
    raw-scale squared error `fusex.tune` uses (on the same splits, relative
    to the raw map's: 1 is as good as the raw counts), per element.  The
    chosen width then blurs the full counts.

    Parameters
    ----------
    maps : array (E, H, W) or (H, W)
        Raw counts (non-negative integers, any dtype).
    sigmas : sequence of float
        Widths to try, in pixels (default `DEFAULT_SIGMAS`).
    folds : int
        Number of count splits :math:`K \ge 2` (default 4).
    seed : int or None
        Seed of the splitting (default 0).

    Returns
    -------
    GaussianChoice
        ``scores`` holds the estimated squared error over the raw map's
        (``(S, E)``), ``spread`` the standard error of the chosen width's
        score over the folds.

    """
    stack = as_stack(maps)
    _check_counts(stack)
    grid = _sigmas(sigmas)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"`folds` must be an integer >= 2, got {folds!r}")
    split = split_counts(stack, folds, np.random.default_rng(seed)).astype(np.float64)
    # the very score and splits fusex.tune weighs its own blurs with (same seed, same folds)
    holdout = Folds(stack.sum(axis=0), stack[None] - split, split, np, None, "mse")
    scores, parts, _ = simple_scores(holdout, grid)  # (S, E), (K, S, E)
    chosen = parts[:, np.nanargmin(scores, axis=0), np.arange(stack.shape[0])]  # (K, E)
    spread = chosen.std(axis=0, ddof=1) / np.sqrt(folds) / holdout.denominator
    return _choice(stack, grid, scores, spread, "held-out raw-scale squared error from count splits (fusex.tune)")


def jinvariant_loss(maps: Any, denoise: Callable[[np.ndarray], np.ndarray], *, stride: int = 4) -> HeldOutScore:
    r"""Score a denoiser of maps by a J-invariant pixel hold-out (Batson & Royer 2019), per element.

    Every pixel of a grid of stride ``stride`` is hidden, replaced by the mean
    of its four neighbours, and predicted by ``denoise`` run on the result;
    the ``stride**2`` shifted grids cover the image
    (`skimage.restoration.denoise_invariant`).  A prediction never sees the
    pixel it predicts, so its error is independent of that pixel's noise
    whenever the noise of different pixels is independent, and

    .. math::

        L_e = \frac{\lVert f_J(b)_e - b_e \rVert^2}{\lVert b_e - \bar b_e \rVert^2}

    ranks denoisers as their error against the unknown truth would (up to a
    constant, the noise's variance).  1 is no better than predicting the mean.
    Maps need not be counts.

    Parameters
    ----------
    maps : array (E, H, W) or (H, W)
        The maps.
    denoise : callable
        ``denoise(maps) -> maps``, arrays ``(E, H, W)``; it is given a masked
        copy and may use any other data (such as a HAADF image of the same scan).
    stride : int
        Spacing of the hidden pixels (default 4, as `skimage.restoration.calibrate_denoiser`).

    Returns
    -------
    HeldOutScore
        :math:`L_e`, and its standard error over the ``stride**2`` masks.

    """
    try:
        from skimage.restoration import denoise_invariant
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("jinvariant_loss needs scikit-image: pip install 'fusex[baselines]'") from error
    stack = as_stack(maps)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 2:
        raise ValueError(f"`stride` must be an integer >= 2, got {stride!r}")

    def channels_last(image: np.ndarray, channel_axis: int) -> np.ndarray:
        return np.moveaxis(np.asarray(denoise(np.moveaxis(image, channel_axis, 0)), dtype=np.float64), 0, -1)

    predicted = denoise_invariant(
        np.moveaxis(stack, 0, -1), channels_last, stride=stride, denoiser_kwargs={"channel_axis": -1}
    )
    squared = (np.moveaxis(predicted, -1, 0) - stack) ** 2
    variance = np.sum((stack - stack.mean(axis=(-2, -1), keepdims=True)) ** 2, axis=(-2, -1))
    variance = np.maximum(variance, 1e-300)
    # each mask's pixels are one grid of the stride: their losses are the independent parts
    grids = [squared[:, i::stride, j::stride] for i in range(stride) for j in range(stride)]
    per_mask = np.stack([g.mean(axis=(-2, -1)) * squared[0].size for g in grids]) / variance
    return HeldOutScore(squared.sum(axis=(-2, -1)) / variance, per_mask.std(axis=0, ddof=1) / np.sqrt(len(per_mask)))


def gaussian_jinvariant(maps: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS, *, stride: int = 4) -> GaussianChoice:
    """Blur each map with the width of the smallest J-invariant loss (for maps that are not counts).

    Each width is scored per element by `jinvariant_loss`, as
    `skimage.restoration.calibrate_denoiser` would with its full loss.

    Parameters
    ----------
    maps : array (E, H, W) or (H, W)
        The maps, in any units.
    sigmas : sequence of float
        Widths to try, in pixels (default `DEFAULT_SIGMAS`).
    stride : int
        Spacing of the hidden pixels (default 4).

    Returns
    -------
    GaussianChoice
        ``scores`` holds the J-invariant loss ``(S, E)``, ``spread`` its
        standard error over the masks at the chosen width.

    """
    stack = as_stack(maps)
    grid = _sigmas(sigmas)
    losses = [jinvariant_loss(stack, lambda m, s=s: gaussian(m, s), stride=stride) for s in grid]
    scores = np.stack([loss.value for loss in losses])
    best = np.argmin(scores, axis=0)
    spread = np.stack([loss.spread for loss in losses])[best, np.arange(stack.shape[0])]
    return _choice(stack, grid, scores, spread, "J-invariant loss (pixel hold-out)")


def gaussian_truth(maps: Any, truth: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> GaussianChoice:
    r"""Blur each map with the width closest to the truth, the best a Gaussian can do.

    Scores :math:`\lVert G_\sigma * b_e - t_e \rVert / \lVert t_e - \bar t_e \rVert`,
    the NRMSE at raw scale, so ``truth`` must be in the units of the maps (for
    a phantom, the expected counts ``dose * truth + background``).

    Parameters
    ----------
    maps : array (E, H, W) or (H, W)
        The maps.
    truth : array like ``maps``
        The noise-free maps, in the same units.
    sigmas : sequence of float
        Widths to try, in pixels (default `DEFAULT_SIGMAS`).

    Returns
    -------
    GaussianChoice

    """
    stack, target = as_stack(maps), as_stack(truth, "truth")
    if stack.shape != target.shape:
        raise ValueError(f"`truth` must have the shape of `maps`, {stack.shape}, got {target.shape}")
    grid = _sigmas(sigmas)
    norm = np.linalg.norm((target - target.mean(axis=(-2, -1), keepdims=True)).reshape(len(target), -1), axis=1)
    scores = np.stack(
        [np.linalg.norm((gaussian(stack, s) - target).reshape(len(target), -1), axis=1) for s in grid]
    ) / np.maximum(norm, 1e-300)
    return _choice(stack, grid, scores, np.full(stack.shape[0], np.nan), "NRMSE against the truth, raw scale")


def poisson_tv(maps: Any, haadf: Any = None, *, params: FusionParams | None = None, **fuse_options: Any) -> np.ndarray:
    r"""Denoise each map alone by Poisson-likelihood total variation: `fusex.fuse` with :math:`\lambda_H = 0`.

    Parameters
    ----------
    maps : array (E, H, W)
        The maps (counts).
    haadf : array (H, W), optional
        A HAADF image of the scan.  It carries no weight here; `fusex.fuse`
        needs one to normalize, so by default the sum of the maps stands in.
    params : FusionParams, optional
        The other weights (default `FusionParams()`); ``lambda_haadf`` is set to 0.
    **fuse_options :
        Passed to `fusex.fuse` (``elements``, ``backend``, ...).

    Returns
    -------
    ndarray (E, H, W)
        The denoised maps in the units of ``maps`` (`FusionResult.to_input_units`).

    """
    stack = as_stack(maps)
    image = stack.sum(axis=0) if haadf is None else np.array(haadf, dtype=np.float64)
    chosen = (FusionParams() if params is None else params).replace(lambda_haadf=0.0)
    result = fuse(image, stack, params=chosen, **fuse_options)
    return np.asarray(to_numpy(result.to_input_units()), dtype=np.float64)

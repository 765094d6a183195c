r"""Choosing the fusion weights from the data: count splitting and held-out Poisson deviance.

For counts :math:`b \sim \mathrm{Poisson}(\mu)`, splitting every count at
random into :math:`K` folds (multinomial thinning) gives folds
:math:`b^{(k)} \sim \mathrm{Poisson}(\mu/K)` that are *independent* of one
another.  For each candidate :math:`\theta` on a grid and each fold
:math:`k`, fusex fuses the other folds, :math:`b^{(-k)} = b - b^{(k)}`, with
the full HAADF image; maps the fused estimate to counts by the least-squares
affine fit :math:`a\hat{x} + c` to :math:`b^{(-k)}` (fusion fixes the maps'
shape, not their scale, which the HAADF model sets); and scores how well it
predicts the held-out fold, :math:`\hat\mu = (a\hat{x} + c)/(K-1)`, by the
Poisson deviance

.. math::

    D_{\theta,e} = 2 \sum_k \sum_{px} \Bigl[ b^{(k)}_e \log\frac{b^{(k)}_e}{\hat\mu_e}
                    - \bigl(b^{(k)}_e - \hat\mu_e\bigr) \Bigr].

Because the held-out counts are independent of everything the prediction
used, :math:`D_{\theta,e}` estimates, up to a constant that does not depend
on :math:`\theta`, the error of the estimate against the unknown :math:`\mu`.
The criterion adds the elements' deviances, each divided by an estimate of
its signal variance, :math:`\sum_{px}(b_e - \bar b_e)^2 - \sum_{px} b_e`, so
that a weak element counts as much as a strong one, and the smallest sum
wins.  All :math:`K \times` grid fusions run as one batched solve.

Each fit sees :math:`(K-1)/K` of the dose.  In the min-max normalized units
fusex solves in by default, the Poisson term's weight relative to the others
scales with the dose, so the fits use :math:`\lambda_C (K-1)/K` and the chosen
:math:`\lambda_C` applies to the full data (with ``normalize="none"`` the
counts carry the dose themselves and no correction is made).

The criterion needs the maps to be **raw counts**: thinning is exact only for
Poisson data.  Maps that were normalized, background-subtracted, scaled by a
detector gain or summed from deconvolved spectra are not Poisson, and are
refused.  The HAADF image is not split: it enters every fit in full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ._xp import convert, namespace_of, to_numpy
from .inputs import stack_maps
from .params import PER_ITEM_FIELDS, FusionParams
from .result import FusionResult
from .xarray import is_labeled, unwrap

__all__ = ["DEFAULT_GRID", "TuneResult", "split_counts", "tune"]

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "lambda_tv": (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
    "lambda_chem": (0.0025, 0.005, 0.01, 0.02, 0.04),
}
"""Candidates searched by default: 7 x 5 values, about log-spaced around fusex's defaults."""


@dataclass(frozen=True)
class TuneResult:
    r"""The outcome of `tune`.

    Attributes
    ----------
    params : FusionParams
        The chosen parameters.
    scores : xarray.Dataset
        ``deviance`` (one dimension per grid field, then ``element``): the
        held-out Poisson deviance summed over folds and pixels;
        ``signal_variance`` (element): the weights; ``total``: the criterion,
        :math:`\sum_e` deviance / signal variance; ``diverged``: candidates whose
        fit diverged in some fold (their scores are NaN).  The grid values are
        the coordinates; attrs record the folds and the choice.
    result : FusionResult, xarray.Dataset or None
        The fusion of the full data with `params`, a Dataset for labeled input
        (None with ``refit=False``).

    """

    params: FusionParams
    scores: xr.Dataset
    result: FusionResult | xr.Dataset | None

    def plot(self, ax: Any = None) -> Any:
        """Plot the score surface with the choice marked (see `fusex.plot.score_surface`)."""
        from .plot import score_surface

        return score_surface(self.scores, ax=ax)


def split_counts(counts: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Split integer counts into ``folds`` independent Poisson folds (multinomial thinning).

    Returns an array ``(folds, *counts.shape)`` of integers that sums to ``counts`` over its first axis.
    """
    remaining = np.asarray(counts, dtype=np.int64)
    parts = []
    for k in range(folds - 1):
        part = rng.binomial(remaining, 1.0 / (folds - k))
        parts.append(part)
        remaining = remaining - part
    parts.append(remaining)
    return np.stack(parts)


def _check_counts(maps: np.ndarray) -> None:
    if not np.all(maps >= 0) or not np.all(maps == np.round(maps)):
        raise ValueError(
            "`maps` must hold raw counts (non-negative integers) for count splitting; these maps hold "
            "non-integer or negative values, as after normalization, background subtraction or gain "
            "correction. Pass the raw counts, or choose the parameters by hand (FusionParams)"
        )
    if maps.max() > 2**31:
        raise ValueError("`maps` holds counts above 2**31; these are not raw counts of one acquisition")


def _grid(grid: Mapping[str, Sequence[float]] | None, base: FusionParams) -> dict[str, np.ndarray]:
    grid = dict(DEFAULT_GRID if grid is None else grid)
    if not grid:
        raise ValueError("`grid` is empty: give at least one field and its candidate values")
    out = {}
    for name, values in grid.items():
        if name not in PER_ITEM_FIELDS:
            raise ValueError(f"`grid` may vary {PER_ITEM_FIELDS}, not {name!r}")
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"`grid[{name!r}]` must be a non-empty 1-D sequence of numbers, got {values!r}")
        out[name] = array
    if base.batch_shape:
        raise ValueError("`params` must hold one value per field; the grid supplies the candidates")
    return out


def tune(
    haadf: Any,
    maps: Any = None,
    *,
    elements: Sequence[str] | None = None,
    z: Sequence[int] | None = None,
    params: FusionParams | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    folds: int = 4,
    seed: int | None = 0,
    refit: bool = True,
    backend: str | None = None,
    device: Any = None,
    progress: bool = False,
    batch_size: int | None = None,
    callback: Any = None,
) -> TuneResult:
    r"""Choose fusion parameters from the data alone, by count splitting.

    Every combination of the ``grid`` values is fused on :math:`K-1` of
    ``folds`` random splits of the counts and scored by the Poisson deviance
    of the held-out split (see the module docstring); the best candidate is
    returned, with the fusion of the full data.

    Parameters
    ----------
    haadf : array (H, W), xarray.DataArray or xarray.Dataset
        The HAADF image (one acquisition), or a Dataset holding it and the maps
        (as `fusex.fuse` accepts them).
    maps : array (E, H, W), sequence or mapping of maps, or DataArray
        The elemental maps as **raw counts** (non-negative integers, any
        dtype).  Refused otherwise: the criterion is valid for Poisson counts only.
    elements, z :
        As in `fusex.fuse`.
    params : FusionParams, optional
        Parameters of every fit; the grid overrides its fields.  Default `FusionParams()`.
    grid : mapping, optional
        Field name -> candidate values, for any of ``gamma``, ``lambda_haadf``,
        ``lambda_chem``, ``lambda_tv``, ``eps``; every combination is tried.
        Default `DEFAULT_GRID` (``lambda_tv`` x ``lambda_chem``, 7 x 5).
    folds : int
        Number of count splits :math:`K \ge 2` (default 4): each fit sees
        :math:`(K-1)/K` of the counts.  More folds fit closer to the full dose and
        average more, at :math:`K` times the grid's cost.
    seed : int or None
        Seed of the random splitting (default 0, reproducible).
    refit : bool
        Fuse the full data with the chosen parameters (default True).
    backend, device, progress, batch_size :
        As in `fusex.fuse`; the whole search is one batched call.
    callback : callable, optional
        As in `fusex.fuse`, for the final fusion of the full data.

    Returns
    -------
    TuneResult

    """
    base = FusionParams() if params is None else params
    if not isinstance(base, FusionParams):
        raise TypeError(f"`params` must be a FusionParams (or None), got {type(base).__name__}")
    candidates = _grid(grid, base)
    given = (haadf, maps)
    if is_labeled(haadf, maps):
        labeled_haadf, labeled_maps, elements = unwrap(haadf, maps, elements)
        haadf, maps = labeled_haadf.data, labeled_maps.data
    elif maps is None:
        raise TypeError("`maps` is missing: pass the elemental maps, or one xarray.Dataset holding HAADF and maps")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"`folds` must be an integer >= 2, got {folds!r}")
    maps, names = stack_maps(maps)
    elements = names if elements is None else elements
    input_xp, input_device = namespace_of(haadf=haadf, maps=maps)
    if getattr(haadf, "ndim", 0) != 2 or getattr(maps, "ndim", 0) != 3:
        raise ValueError(
            "tune takes one acquisition: `haadf` (H, W) and `maps` (E, H, W); "
            f"got shapes {tuple(haadf.shape)} and {tuple(maps.shape)}. Tune one item of a batch, then fuse the batch"
        )
    counts = to_numpy(maps)
    _check_counts(counts)
    image = np.asarray(to_numpy(haadf))
    split = split_counts(counts, folds, np.random.default_rng(seed))
    fit = (counts[None].astype(np.int64) - split).astype(np.float32 if counts.dtype.itemsize <= 4 else np.float64)

    names = list(candidates)
    shape = tuple(v.size for v in candidates.values())
    axes = len(names)
    fields = {
        name: np.reshape(values, (values.size,) + (1,) * (axes - 1 - i))
        for i, (name, values) in enumerate(candidates.items())
    }
    if base.normalize == "minmax":
        fields["lambda_chem"] = np.asarray(fields.get("lambda_chem", base.lambda_chem)) * (folds - 1) / folds
    search = base.replace(**{name: value.tolist() for name, value in fields.items()})
    lead = (folds,) + (1,) * axes
    from .api import fuse

    # the search runs in the caller's library and on its device, like the final fusion
    fits = fuse(
        convert(np.broadcast_to(image, (*lead, *image.shape)), input_xp, input_device),
        convert(np.reshape(fit, (folds,) + (1,) * axes + fit.shape[1:]), input_xp, input_device),
        elements=elements,
        z=z,
        params=search,
        backend=backend,
        device=device,
        progress=progress,
        on_divergence="mark",
        batch_size=batch_size,
    )
    deviance, diverged = _heldout_deviance(fits, fit, split, folds)
    spread = counts.astype(np.float64)
    signal = np.sum((spread - spread.mean(axis=(-2, -1), keepdims=True)) ** 2, axis=(-2, -1)) - spread.sum(
        axis=(-2, -1)
    )
    signal = np.maximum(signal, 1e-6 * np.maximum(spread.sum(axis=(-2, -1)), 1.0))
    total = np.sum(deviance / signal, axis=-1)
    if np.all(np.isnan(total)):
        raise RuntimeError("every candidate diverged in some fold; widen the grid towards smaller weights")
    best = np.unravel_index(int(np.nanargmin(total)), shape)
    chosen = base.replace(**{name: float(candidates[name][i]) for name, i in zip(names, best)})
    scores = xr.Dataset(
        {
            "deviance": ((*names, "element"), deviance),
            "signal_variance": ("element", signal),
            "total": (tuple(names), total),
            "diverged": (tuple(names), diverged),
        },
        coords={**{name: values for name, values in candidates.items()}, "element": list(fits.elements)},
        attrs={
            "criterion": "held-out Poisson deviance of count splits",
            "folds": folds,
            "seed": "None" if seed is None else seed,
            **{f"chosen_{name}": float(candidates[name][i]) for name, i in zip(names, best)},
        },
    )
    result = None
    if refit:
        result = fuse(
            *given,
            elements=elements,
            z=z,
            params=chosen,
            backend=backend,
            device=device,
            progress=progress,
            callback=callback,
        )
    return TuneResult(chosen, scores, result)


def _heldout_deviance(
    fits: FusionResult, fitted: np.ndarray, split: np.ndarray, folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deviance ``grid + (E,)`` summed over folds and pixels, and which candidates diverged."""
    estimate = np.asarray(to_numpy(fits.maps), dtype=np.float64)  # (K, *grid, E, H, W)
    diverged = np.any(np.asarray(fits.stop_reason) == "diverged", axis=0)
    floor = 1e-3 * max(float(split.mean()), 1e-12)  # a zero prediction of a nonzero count is infinitely bad
    grid_axes = estimate.ndim - 4
    deviance = 0.0
    for k in range(folds):
        x = estimate[k]
        target = np.reshape(fitted[k], (1,) * grid_axes + fitted.shape[1:]).astype(np.float64)
        x_mean = x.mean(axis=(-2, -1), keepdims=True)
        t_mean = target.mean(axis=(-2, -1), keepdims=True)
        covariance = ((x - x_mean) * (target - t_mean)).mean(axis=(-2, -1), keepdims=True)
        variance = ((x - x_mean) ** 2).mean(axis=(-2, -1), keepdims=True)
        slope = covariance / np.maximum(variance, 1e-30)
        mu = np.maximum((slope * (x - x_mean) + t_mean) / (folds - 1), floor)
        held = np.reshape(split[k], (1,) * grid_axes + split.shape[1:]).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(held > 0, held * np.log(held / mu), 0.0) - (held - mu)
        deviance = deviance + 2.0 * term.sum(axis=(-2, -1))
    deviance = np.where(diverged[..., None], np.nan, deviance)
    return deviance, diverged

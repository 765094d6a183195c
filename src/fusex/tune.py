r"""Choosing the fusion weights from the data: count splitting and a held-out error estimate.

For counts :math:`b \sim \mathrm{Poisson}(\mu)`, splitting every count at
random into :math:`K` folds (multinomial thinning) gives folds
:math:`b^{(k)} \sim \mathrm{Poisson}(\mu/K)` that are *independent* of one
another.  For each candidate :math:`\theta` on a grid and each fold
:math:`k`, fusex fuses the other folds, :math:`b^{(-k)} = b - b^{(k)}`, with
the full HAADF image, and asks how well the fused maps :math:`\hat x_k`
predict the fold they did not see.

The default score (``criterion="nrmse"``) estimates each element's NRMSE,
the error after the best affine fit to the truth (fusion fixes the maps'
shape; their scale comes from the HAADF model).  Fitting :math:`a\hat x_k + c`
to the held-out counts by least squares leaves a residual :math:`R_k` whose
expectation is the same fit's residual against :math:`\mu/K` plus the Poisson
variance of the fold, :math:`\sum_{px}\mu/K` (less the two fitted degrees of
freedom), because the held-out noise is independent of :math:`\hat x_k`.  The
counts estimate that variance (a Poisson count's variance is its mean), and
:math:`\lVert b^{(k)} - \bar b^{(k)}\rVert^2 - \sum b^{(k)}` the signal's
spread, so

.. math::

    \widehat{\mathrm{NRMSE}}^2_{\theta,e} = \frac{\sum_k \bigl(R_{k} - \sum_{px} b^{(k)}_e\bigr)}
        {\sum_k \bigl(\lVert b^{(k)}_e - \bar b^{(k)}_e\rVert^2 - \sum_{px} b^{(k)}_e\bigr)}

(with the exact finite-sample factors in the code) estimates, without the
truth, the squared NRMSE of the fits; the mean over elements is the
criterion.  ``criterion="deviance"`` instead scores the held-out Poisson
deviance of :math:`\hat\mu = (a\hat x_k + c)/(K-1)`, with :math:`a, c` fitted
to :math:`b^{(-k)}`, each element's deviance divided by its signal variance.
It weighs pixels by the inverse of their expected count, which at low dose
favours over-smoothed maps that never predict zero; the error estimate
weighs every pixel alike, as the NRMSE does, and on our phantoms picks
closer to the weights chosen with the truth (see the docs).  All
:math:`K \times` grid fusions run as one batched solve.

Each fit sees :math:`(K-1)/K` of the dose.  In the min-max normalized units
fusex solves in by default, the Poisson term's weight relative to the others
scales with the dose, so the fits use :math:`\lambda_C (K-1)/K` and the chosen
:math:`\lambda_C` applies to the full data (with ``normalize="none"`` the
counts carry the dose themselves and no correction is made).

The criterion needs the maps to be **raw counts**: thinning is exact only for
Poisson data, and the error estimate relies on their variance being their mean.
Maps that were normalized, background-subtracted, scaled by a
detector gain or summed from deconvolved spectra are not Poisson, and are
refused.  The HAADF image is not split: it enters every fit in full.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from ._folds import Folds, Scored
from ._xp import convert, namespace_of, to_numpy
from .inputs import stack_maps
from .params import PER_ELEMENT_FIELDS, PER_ITEM_FIELDS, FusionParams
from .result import FusionResult
from .xarray import is_labeled, unwrap

__all__ = ["CRITERIA", "DEFAULT_GRID", "TuneResult", "split_counts", "tune"]

CRITERIA: dict[str, str] = {
    "nrmse": "held-out estimate of the NRMSE, from count splits",
    "deviance": "held-out Poisson deviance of count splits",
}
"""The scores `tune` can rank candidates by, and their descriptions."""

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "lambda_tv": (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
    "lambda_chem": (0.0025, 0.005, 0.01, 0.02, 0.04),
}
"""Candidates searched by default: 7 x 5 values, about log-spaced, fusex's defaults among them."""


@dataclass(frozen=True)
class TuneResult:
    r"""The outcome of `tune`.

    Attributes
    ----------
    params : FusionParams
        The chosen parameters.
    scores : xarray.Dataset
        Per-element scores (one dimension per grid field, then ``element``),
        named by the criterion: ``nrmse``, the estimated NRMSE of the fold fits
        (negative where the error is below what the held-out counts resolve),
        or ``deviance``, the held-out Poisson deviance summed over folds and
        pixels, with ``signal_variance`` (element), its weights; ``total``:
        the criterion (mean estimated NRMSE, or :math:`\sum_e` deviance /
        signal variance); ``diverged``: candidates whose fit diverged in some
        fold (their scores are NaN).  The grid values are the coordinates;
        attrs record the criterion (``score`` names its variable), the folds
        and the choice.
    result : FusionResult, xarray.Dataset or None
        The fusion of the full data with `params`, a Dataset for labeled input
        (None with ``refit=False``).
    average : array or xarray.DataArray
        The cross-fitted estimate ``(E, H, W)``: the :math:`K` fold fusions
        with `params`, each brought to the counts it was fitted to by a
        least-squares affine fit, averaged, scaled to the full dose and
        clipped at zero (so its totals can exceed the counts slightly).  Every count enters :math:`K-1`
        of the fits, so it uses all the data; averaging fits of independent
        splits also averages out the fits' own variability, which at low dose
        makes it more accurate than `result` (see the accuracy table in the
        docs).  In the caller's array library and device (a DataArray like
        the maps for labeled input), in counts, not min-max units.

    """

    params: FusionParams
    scores: xr.Dataset
    result: FusionResult | xr.Dataset | None
    average: Any = None

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
    per_element: bool = True,
    criterion: Literal["nrmse", "deviance"] = "nrmse",
) -> TuneResult:
    r"""Choose fusion parameters from the data alone, by count splitting.

    Every combination of the ``grid`` values is fused on :math:`K-1` of
    ``folds`` random splits of the counts and scored on the held-out split
    (see the module docstring); the best candidate is returned, with the
    fusion of the full data.

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
    per_element : bool
        After the shared search, give each element the ``lambda_chem`` and
        ``lambda_tv`` of its own best held-out score (any other grid
        field stays at the shared choice), and keep this
        choice if its criterion, scored on the same folds, beats the best
        shared candidate (default True).  Elements differ in dose and in what
        the HAADF image says about them, so one shared pair must trade one
        element's error against another's.
    criterion : {"nrmse", "deviance"}
        The held-out score: the estimated NRMSE of each element (default), or
        the Poisson deviance (see the module docstring).

    Returns
    -------
    TuneResult

    """
    base = FusionParams() if params is None else params
    if not isinstance(base, FusionParams):
        raise TypeError(f"`params` must be a FusionParams (or None), got {type(base).__name__}")
    candidates = _grid(grid, base)
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {tuple(CRITERIA)}, got {criterion!r}")
    given = (haadf, maps)
    labeled_maps = None
    if is_labeled(haadf, maps):
        labeled_haadf, labeled_maps, elements = unwrap(haadf, maps, elements)
        haadf, maps = labeled_haadf.data, labeled_maps.data
    elif maps is None:
        raise TypeError("`maps` is missing: pass the elemental maps, or one xarray.Dataset holding HAADF and maps")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"`folds` must be an integer >= 2, got {folds!r}")
    maps, names = stack_maps(maps, elements)
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
    from .api import fuse

    names = list(candidates)
    shape = tuple(v.size for v in candidates.values())
    axes = len(names)
    fields = {
        name: np.reshape(values, (values.size,) + (1,) * (axes - 1 - i))
        for i, (name, values) in enumerate(candidates.items())
    }
    folds_data = Folds(image, fit, split, input_xp, input_device, criterion)
    common = {"elements": elements, "z": z, "backend": backend, "device": device, "batch_size": batch_size}
    search = folds_data.score(
        base.replace(**{name: value.tolist() for name, value in fields.items()}), axes, progress, common
    )
    values, search_diverged, fused_elements = search.values, search.diverged, search.fits.elements
    total = folds_data.total(values)
    if np.all(np.isnan(total)):
        raise RuntimeError("every candidate diverged in some fold; widen the grid towards smaller weights")
    best = np.unravel_index(int(np.nanargmin(total)), shape)
    chosen = base.replace(**{name: float(candidates[name][i]) for name, i in zip(names, best)})
    attrs = {f"chosen_{name}": float(candidates[name][i]) for name, i in zip(names, best)}
    winner = (search.fits, best)
    if per_element and len(fused_elements) > 1:
        chosen, found, winner = _per_element_choice(chosen, candidates, search, folds_data, common, winner)
        attrs.update(found)
    average = convert(folds_data.average(*winner).astype(fit.dtype), input_xp, input_device)
    del search, winner  # the grid's fits: let them go before the refit
    variables = {criterion: ((*names, "element"), values)}
    if criterion == "deviance":
        variables["signal_variance"] = ("element", folds_data.signal_variance)
    scores = xr.Dataset(
        {**variables, "total": (tuple(names), total), "diverged": (tuple(names), search_diverged)},
        coords={**{name: values for name, values in candidates.items()}, "element": list(fused_elements)},
        attrs={
            "criterion": CRITERIA[criterion],
            "score": criterion,
            "folds": folds,
            "seed": "None" if seed is None else seed,
            **attrs,
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
    if labeled_maps is not None:
        average = labeled_maps.copy(data=average)
    return TuneResult(chosen, scores, result, average)


def _per_element_choice(
    shared: FusionParams,
    candidates: dict[str, np.ndarray],
    search: Scored,
    folds: Folds,
    common: dict[str, Any],
    winner: tuple[FusionResult, tuple[int, ...]],
) -> tuple[FusionParams, dict[str, Any], tuple[FusionResult, tuple[int, ...]]]:
    """Give each element the grid point of its own best score, if that scores better on the folds.

    Returns the parameters, the attrs that record the trial (none when there was none), and the
    fits and index the fold average is taken from.
    """
    names = list(candidates)
    per = [name for name in names if name in PER_ELEMENT_FIELDS]
    if not per:
        return shared, {}, winner
    # other grid fields (gamma, ...) stay at the shared choice: each element searches the weights only
    free = tuple(slice(None) if name in per else i for name, i in zip(names, winner[1]))
    picks = {}
    for e, element in enumerate(search.fits.elements):
        own_scores = search.values[(*free, e)]
        if np.all(np.isnan(own_scores)):
            return shared, {}, winner
        own = iter(np.unravel_index(int(np.nanargmin(own_scores)), own_scores.shape))
        picks[element] = tuple(next(own) if name in per else i for name, i in zip(names, winner[1]))
    if all(index == winner[1] for index in picks.values()):
        return shared, {}, winner  # every element's own pick is the shared one
    changes = {
        name: {el: float(candidates[name][index[names.index(name)]]) for el, index in picks.items()} for name in per
    }
    trial = shared.replace(**changes)
    scored = folds.score(trial, 0, False, common)
    trial_total = float(folds.total(scored.values))
    shared_total = float(folds.total(search.values[winner[1]]))
    attrs = {"shared_total": shared_total, "per_element_total": trial_total}
    attrs.update({f"per_element_{name}": json.dumps(changes[name]) for name in per})
    if bool(scored.diverged) or not trial_total < shared_total:
        return shared, {**attrs, "per_element": 0}, winner
    return trial, {**attrs, "per_element": 1}, (scored.fits, ())

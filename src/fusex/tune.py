r"""Choosing the fusion parameters from the data: held-out scores, per element, never worse than simple.

Two hold-outs, chosen by what the maps are:

**Counts** (non-negative integers): count splitting.  Splitting every count at
random into :math:`K` folds (multinomial thinning) gives folds
:math:`b^{(k)} \sim \mathrm{Poisson}(\mu/K)` that are *independent* of one
another.  For each candidate :math:`\theta` and fold :math:`k`, fusex fuses
the other folds, :math:`b^{(-k)} = b - b^{(k)}`, with the full HAADF image,
and asks how well the fit :math:`\hat x_k` (in counts, `FusionResult.to_input_units`)
predicts the fold it did not see.  The default score (``criterion="mse"``) is
an unbiased estimate of the **raw-scale** squared error, with no affine fit,
so a map of the right shape but the wrong scale scores as badly as it is:

.. math::

    \widehat{\mathrm{MSE}}_{\theta,e} = \frac{1}{K}\sum_k K^2\Bigl(
        \bigl\lVert \hat x_{k,e}/(K-1) - b^{(k)}_e \bigr\rVert^2 - \textstyle\sum_{px} b^{(k)}_e\Bigr)
    \Big/ \textstyle\sum_{px} b_e .

The held-out noise is independent of the fit and its variance is its mean,
so subtracting the held-out counts removes it; :math:`K^2` brings the error
to the full dose, and dividing by the raw map's own expected error (its
Poisson variance :math:`\sum\mu \approx \sum b`) makes 1 the raw map's score.
Nothing divides by an estimated signal variance, which at low dose can be
zero or negative; the raw-scale NRMSE is reported (``raw_nrmse``) only for
elements whose signal variance the counts resolve (more than twice its
standard error), with a warning for the others, which take their best simple
candidate: where the counts resolve no structure, no map can be shown to beat
a flat one, and a fusion's lead over a blur is noise.  ``criterion="nrmse"`` is the
earlier affine-invariant estimate (blind to scale errors: it hid a 6.9x
inflation of a map), ``"deviance"`` the held-out Poisson deviance.

**Maps that are not counts** (normalized, background-subtracted, smoothed by
the acquisition software): a J-invariant pixel hold-out (Batson & Royer 2019,
as `skimage.restoration.calibrate_denoiser`; ``criterion="jinvariant"``,
chosen automatically).  Each of ``folds`` masks hides one sub-grid of stride 4,
every hidden pixel replaced by its neighbours' mean; a fit of the masked maps
predicts the hidden pixels it never saw, scored by their squared error at raw
scale relative to the map's spread.

**The choice.**  The grid (default `DEFAULT_GRID`: ``lambda_tv`` x
``lambda_chem`` x ``lambda_haadf`` in {default, 0}, and ``prior`` when
`FusionParams` has it) is screened, one batched solve per prior: every candidate runs
``screen`` iterations on part of the hold-out (``screen_folds``) and, in a larger image, on its
central ``screen_window`` x ``screen_window`` pixels only, and per element only the
``keep`` best screened ones go on, on every part, to convergence.  Each element then
takes its own best grid point: its weights, and whether the HAADF term helps
it at all (an element whose best point has :math:`\lambda_H = 0` is left out
of the HAADF model, ``haadf_weights`` 0, so the objective stays one function).
The raw map and Gaussian blurs of it (``sigmas``) are candidates scored the
same way, and an element whose fusion does not beat its best blur by more
than one standard error of their paired difference gets the blur (or the raw
map), labelled as such in the result, so the choice is never worse than
simple *on the criterion*.  A choice on the edge of the grid warns
and extends the grid one step beyond it, at most ``widen`` times.  The result
records the criterion and, per element, the score's standard error over the
folds or masks and the margin to the runner-up with its paired standard error.

Each fit sees :math:`(K-1)/K` of the dose.  In the normalized units fusex
solves in by default, the Poisson term's weight relative to the others
scales with the dose, so count-splitting fits use :math:`\lambda_C (K-1)/K`
and the chosen :math:`\lambda_C` applies to the full data (with
``normalize="none"`` the counts carry the dose themselves and no correction is
made).  The HAADF image is never split or masked: it enters every fit in full.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import xarray as xr

from . import _choice
from ._blur import gaussian
from ._eager import RunOptions, fuse_arrays
from ._folds import Folds, PixelHoldOut, _signed_root, pixel_masks, simple_scores
from ._quirks import host_saturation_mask
from ._xp import convert, namespace_of, to_numpy
from .inputs import stack_maps
from .labeled import is_labeled, labeled_mask, result_to_dataset, unwrap
from .params import PER_ITEM_FIELDS, FusionParams, PerElement
from .plot import score_surface
from .result import FusionResult

__all__ = ["CRITERIA", "DEFAULT_GRID", "TuneResult", "split_counts", "tune"]

CRITERIA: dict[str, str] = {
    "mse": "held-out estimate of the raw-scale squared error over the raw map's, from count splits",
    "nrmse": "held-out estimate of the affine-invariant NRMSE, from count splits (blind to scale errors)",
    "deviance": "held-out Poisson deviance of count splits",
    "jinvariant": "J-invariant pixel hold-out loss at raw scale (maps that are not counts)",
}
"""The scores `tune` can rank candidates by, and their descriptions."""

COUNT_CRITERIA = ("mse", "nrmse", "deviance")
"""The criteria that split counts, and so need raw counts."""

LABEL_FIELDS = tuple(name for name in ("prior",) if name in {f.name for f in fields(FusionParams)})
"""Grid fields whose candidates are names, not numbers (searched one batched solve per name)."""

DEFAULT_GRID: dict[str, tuple[Any, ...]] = {
    **({"prior": ("tv", "huber", "dtv")} if "prior" in LABEL_FIELDS else {}),
    "lambda_tv": (0.001, 0.003, 0.01, 0.03, 0.1),
    "lambda_chem": (0.01, 0.04),
    "lambda_haadf": (None, 0.0),
}
"""Candidates searched by default: every ``prior`` x ``lambda_tv`` (5 values, steps of about 3) x
``lambda_chem`` (2, a step of 4 around fusex's default) x ``lambda_haadf`` (``None``: the params' own,
:math:`1/E` by default; 0: no HAADF term), 60 in all.  Coarse on purpose: a choice on an edge widens the
grid (``widen``), and the scores' noise (``choice.score_se``) is rarely below a factor of 3 in a weight."""

DEFAULT_PARAMS = FusionParams(init="counts")
"""`tune`'s parameters when none are given: fusex's defaults, but every fit starts at its counts.
The search was settled that way; with its fits started at the smoothed counts (`FusionParams.init`,
the default of `fusex.fuse`) the accuracy benchmark met fewer targets (at one count per column the
dominant element's Gaussian / ``auto`` fell 1.47 -> 1.18 and 1.47 -> 1.24; see the tuning docs)."""

DEFAULT_SCREEN = 10
"""Solver iterations every grid candidate runs before `tune` keeps only the promising ones."""

DEFAULT_KEEP = 2
"""Per element, how many of the best screened candidates `tune` solves to convergence."""

SCREEN_FOLDS = {"counts": 1, "masks": 2}
"""How many parts the screening runs on by default: one count split (a quarter of the counts held
out), two pixel masks (an eighth of the pixels; one missed a fusion that won on the DyScO3 maps)."""

DEFAULT_SCREEN_WINDOW = 256
"""Side (pixels) of the central window a larger image is screened on: the screening then costs the same
at any image size, and the survivors are solved on the whole image (see the tuning docs)."""

DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
"""Widths (pixels) of the Gaussian blurs `tune` weighs against fusion; 0 is the raw map
(`fusex.baselines.DEFAULT_SIGMAS`)."""


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
        pixels, with ``signal_variance`` (element), its weights; ``mse``, the
        raw-scale squared error over the raw map's (1: as good as the raw
        counts), with ``raw_nrmse`` (the same as an NRMSE, NaN where the
        counts resolve no signal variance); ``jinvariant``, the pixel
        hold-out loss; ``total``: the criterion (mean over elements, or
        :math:`\sum_e` deviance / signal variance); ``diverged``: candidates
        whose fit diverged in some fold (their scores are NaN); ``screened``
        (grid, ``element``): the criterion after the ``screen`` iterations
        every candidate runs on the screened parts; ``finished``: the candidates that went on to
        convergence (the others' criterion is NaN; see ``screen``); ``simple``
        (``sigma``, ``element``): the Gaussian blurs' scores (width 0: the raw
        map).  The grid values are the coordinates; attrs record the
        criterion (``score`` names its variable), the folds, the widenings
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
        splits also averages out the fits' own variability, but each fit saw
        less dose, and on phantoms it was sometimes worse than `result` (see
        "Accuracy on phantoms" in the tuning docs).  In the caller's array library and device (a DataArray like
        the maps for labeled input), in counts, not min-max units.  Elements
        that took a simple candidate hold it, computed from the full counts.
        None for the pixel hold-out (maps that are not counts).
    choice : xarray.Dataset or None
        Per element: ``method`` (``"fusion"``, ``"gaussian"`` or ``"raw"``: what
        `result` holds for it), ``sigma`` (the blur's width, NaN for fusion),
        ``score`` and ``score_se`` (its standard error over the folds or masks),
        ``runner_up``, ``margin`` (the runner-up's score minus the choice's) and
        ``margin_se`` (paired over the same folds or masks); attrs name the
        ``criterion``.  A margin below about twice its standard error means
        the data do not tell the two apart.

    """

    params: FusionParams
    scores: xr.Dataset
    result: FusionResult | xr.Dataset | None
    average: Any = None
    choice: xr.Dataset | None = None

    def plot(self, ax: Any = None) -> Any:
        """Plot the score surface with the choice marked (see `fusex.plot.score_surface`)."""
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


def _are_counts(maps: np.ndarray) -> bool:
    return bool(np.all(maps >= 0) and np.all(maps == np.round(maps)) and maps.max() <= 2**31)


def _check_counts(maps: np.ndarray) -> None:
    if not np.all(maps >= 0) or not np.all(maps == np.round(maps)):
        raise ValueError(
            "`maps` must hold raw counts (non-negative integers) for count splitting; these maps hold "
            "non-integer or negative values, as after normalization, background subtraction or gain "
            "correction. Pass the raw counts, or use criterion='jinvariant' (a pixel hold-out, the default "
            "for such maps)"
        )
    if maps.max() > 2**31:
        raise ValueError("`maps` holds counts above 2**31; these are not raw counts of one acquisition")


def _criterion(criterion: str | None, maps: np.ndarray) -> str:
    """Resolve ``criterion``: None takes count splitting for counts and the pixel hold-out otherwise."""
    if criterion is None:
        return "mse" if _are_counts(maps) else "jinvariant"
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {tuple(CRITERIA)} or None, got {criterion!r}")
    if criterion in COUNT_CRITERIA:
        _check_counts(maps)
    return criterion


def _grid(grid: Mapping[str, Sequence[Any]] | None, base: FusionParams, n_elements: int) -> dict[str, np.ndarray]:
    """Check ``grid``; labels first (one search each), ``lambda_haadf`` None resolved to the params' own value."""
    grid = dict(DEFAULT_GRID if grid is None else grid)
    if not grid:
        raise ValueError("`grid` is empty: give at least one field and its candidate values")
    numbers, labels = {}, {}
    for name, values in grid.items():
        if name in LABEL_FIELDS:
            if isinstance(values, str) or not values or not all(isinstance(v, str) for v in values):
                raise ValueError(f"`grid[{name!r}]` must be a non-empty sequence of names, got {values!r}")
            labels[name] = np.array(list(values), dtype=object)
            continue
        if name not in PER_ITEM_FIELDS:
            raise ValueError(f"`grid` may vary {PER_ITEM_FIELDS + LABEL_FIELDS}, not {name!r}")
        if name == "lambda_haadf" and not isinstance(values, str):
            own = 1.0 / n_elements if base.lambda_haadf is None else base.lambda_haadf
            values = [own if v is None else v for v in values]
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"`grid[{name!r}]` must be a non-empty 1-D sequence of numbers, got {values!r}")
        numbers[name] = np.unique(array) if name == "lambda_haadf" else array
    if base.batch_shape:
        raise ValueError("`params` must hold one value per field; the grid supplies the candidates")
    return {**labels, **numbers}


def tune(
    haadf: Any,
    maps: Any = None,
    *,
    elements: Sequence[str] | None = None,
    z: Sequence[int] | None = None,
    params: FusionParams | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    folds: int = 4,
    seed: int | None = 0,
    refit: bool = True,
    backend: str | None = None,
    device: Any = None,
    progress: bool = False,
    batch_size: int | None = None,
    callback: Any = None,
    engine: str = "auto",
    on_divergence: str = "raise",
    per_element: bool = True,
    criterion: Literal["mse", "nrmse", "deviance", "jinvariant"] | None = None,
    saturated: Any = "auto",
    negative: str = "raise",
    sigmas: Sequence[float] | None = DEFAULT_SIGMAS,
    widen: int = 2,
    screen: int | None = DEFAULT_SCREEN,
    keep: int = DEFAULT_KEEP,
    screen_folds: int | None = None,
    screen_window: int | None = DEFAULT_SCREEN_WINDOW,
    calibrate: bool | None = None,
) -> TuneResult:
    r"""Choose fusion parameters from the data alone, per element, never worse than a simple filter.

    Every combination of the ``grid`` values is fused on each part of a
    hold-out (count splits, or pixel masks for maps that are not counts) and
    scored on what it did not see (see the module docstring); each element
    takes its best candidate, fusion or a blur of its own map (a fusion only
    where it leads the best blur by more than one standard error), and the
    fusion of the full data is returned with the blurred maps in place of
    the fused ones where a blur won.

    Parameters
    ----------
    haadf : array (H, W), xarray.DataArray or xarray.Dataset
        The HAADF image (one acquisition), or a Dataset holding it and the maps
        (as `fusex.fuse` accepts them).
    maps : array (E, H, W), sequence or mapping of maps, or DataArray
        The elemental maps: raw counts (non-negative integers, any dtype) for
        count splitting, or maps in any units for the pixel hold-out.
    elements, z :
        As in `fusex.fuse`.
    params : FusionParams, optional
        Parameters of every fit; the grid overrides its fields.  Default
        `DEFAULT_PARAMS`: `FusionParams()` with every fit started at its counts
        (``init="counts"``).
    grid : mapping, optional
        Field name -> candidate values, for any of ``gamma``, ``lambda_haadf``
        (``None`` stands for the params' own value), ``lambda_chem``,
        ``lambda_tv``, ``eps`` and, where `FusionParams` has it, ``prior``
        (names); every combination is tried.  Default `DEFAULT_GRID`.
    folds : int
        Number of parts :math:`K \ge 2` (default 4): count splits (each fit sees
        :math:`(K-1)/K` of the counts), or pixel masks (at most 16, each hiding
        a sixteenth of the pixels).  More parts score more precisely, at
        :math:`K` times the grid's cost.
    seed : int or None
        Seed of the random splitting or of the masks' choice (default 0, reproducible).
    refit : bool
        Fuse the full data with the chosen parameters (default True).
    backend, device, progress, batch_size :
        As in `fusex.fuse`; the whole search is one batched call per prior.
    callback : callable, optional
        As in `fusex.fuse`, for the final fusion of the full data.
    engine : str
        As in `fusex.fuse`, for every fit.
    on_divergence : {"raise", "mark"}
        As in `fusex.fuse`, for the final fusion of the full data (a diverging
        candidate of the search only loses).
    per_element : bool
        Give each element the ``lambda_chem``, ``lambda_tv`` (and ``prior``) of
        its own best held-out score and its own answer to whether the HAADF
        term helps it (``lambda_haadf`` 0 in its best point: it is left out of
        the HAADF model); any other grid field stays at the shared choice.
        This choice is scored again on the same parts (the elements are coupled
        through the HAADF term) and kept if it beats the best shared candidate
        (default True).
    criterion : {"mse", "nrmse", "deviance", "jinvariant"} or None
        The held-out score (see the module docstring).  Default None:
        ``"mse"`` (raw-scale error by count splitting) for counts,
        ``"jinvariant"`` (pixel hold-out) for anything else.
    saturated, negative :
        As in `fusex.fuse`, for every fit and the final fusion: saturated
        HAADF pixels are left out of the HAADF term.  Count criteria refuse
        negative maps whatever ``negative`` says, since clipped maps are not
        Poisson counts.
    sigmas : sequence of float or None
        Widths (pixels) of the Gaussian blurs each element's fusion competes
        with; 0 is the raw map (default `DEFAULT_SIGMAS`).  None or empty:
        fusion only.
    widen : int
        How many times the grid is extended one step past an edge that a
        choice of ``lambda_tv`` or ``lambda_chem`` lands on (default 2; 0: never).
        Each extension warns; a choice still on the edge warns again.
    screen : int or None
        Solver iterations every candidate runs before the search drops the
        losing ones (default `DEFAULT_SCREEN`); None solves every candidate to
        convergence (the full search, many times slower).
    keep : int
        Per element, how many of the best screened candidates continue, from
        where they stopped, to convergence (default `DEFAULT_KEEP`); only they
        can be chosen.
    screen_folds : int or None
        How many of the ``folds`` parts the screening runs on; the survivors'
        fits on the other parts start from their own data.  Default None:
        `SCREEN_FOLDS`, one count split or two pixel masks.  ``folds``
        screens on all of them.
    screen_window : int or None
        Side (pixels) of the central window the screening runs on, in an
        image larger than that (default `DEFAULT_SCREEN_WINDOW`; an image
        narrower than it keeps that whole axis).  The screened scores then sum
        over the window's pixels only, and every survivor is fitted on the
        whole image from its own data.  None screens the whole image.
    calibrate : bool or None
        Count splitting with ``criterion="mse"`` only: score every candidate
        (fusion and blur) after the affine map :math:`a x + c` per element
        that brings its fold fits closest to the held-out counts, and return
        the chosen maps so calibrated (``choice.slope``, ``choice.offset``),
        clipped at 0 with the offset lowered to keep each total.  A shrinking
        prior flattens a map and a noisy fit over-shoots its contrast; the
        held-out counts measure both, without the truth.  An element whose
        counts resolve no signal variance (see Warns) is not calibrated: its
        fitted slope would be noise.  Default None: on wherever that
        criterion applies (counts), off otherwise.

    Returns
    -------
    TuneResult

    Warns
    -----
    UserWarning
        When a choice lands on the edge of the grid, and when the counts of
        an element resolve no signal variance (its ``raw_nrmse`` is NaN,
        and it takes its best simple candidate, if ``sigmas`` gives any: no
        fusion can be shown to beat a flat map there).

    """
    base = DEFAULT_PARAMS if params is None else params
    if not isinstance(base, FusionParams):
        raise TypeError(f"`params` must be a FusionParams (or None), got {type(base).__name__}")
    if criterion is not None and criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {tuple(CRITERIA)} or None, got {criterion!r}")
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 0:
        raise ValueError(f"`widen` must be an integer >= 0, got {widen!r}")
    if screen is not None and (isinstance(screen, bool) or not isinstance(screen, int) or screen < 1):
        raise ValueError(f"`screen` must be an integer >= 1 (iterations) or None (no screening), got {screen!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"`keep` must be an integer >= 1, got {keep!r}")
    if screen_folds is not None and (
        isinstance(screen_folds, bool) or not isinstance(screen_folds, int) or screen_folds < 1
    ):
        raise ValueError(f"`screen_folds` must be an integer >= 1 or None (the default), got {screen_folds!r}")
    if screen_window is not None and (
        isinstance(screen_window, bool) or not isinstance(screen_window, int) or screen_window < 8
    ):
        raise ValueError(
            f"`screen_window` must be an integer >= 8 (pixels) or None (screen the whole image), got {screen_window!r}"
        )
    run = RunOptions(
        backend=backend,
        engine=engine,
        device=device,
        batch_size=batch_size,
        on_divergence=on_divergence,
        progress=progress,
        callback=callback,
    )
    labeled_haadf = labeled_maps = None
    if is_labeled(haadf, maps):
        labeled_haadf, labeled_maps, elements = unwrap(haadf, maps, elements)
        saturated = labeled_mask(saturated, labeled_haadf)
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
    candidates = _grid(grid, base, maps.shape[0])
    counts = to_numpy(maps)
    criterion = _criterion(criterion, counts)
    widths = np.asarray([] if sigmas is None else sigmas, dtype=np.float64)
    if widths.ndim != 1 or not np.all(np.isfinite(widths)) or np.any(widths < 0):
        raise ValueError(f"`sigmas` must be a 1-D sequence of widths >= 0 (pixels), or None, got {sigmas!r}")
    if calibrate is None:
        calibrate = criterion == "mse"
    if calibrate and criterion != "mse":
        raise ValueError(
            f"`calibrate=True` needs count splitting with criterion='mse' (the held-out counts' scale), "
            f"got criterion={criterion!r}; pass counts and criterion='mse', or calibrate=False"
        )
    image = np.asarray(to_numpy(haadf))
    if not refit:
        # the image's saturated pixels, said once (the hold-out fits repeat the image, and do not; a refit does)
        host_saturation_mask(image, saturated)
    rng = np.random.default_rng(seed)
    if criterion == "jinvariant":
        holdout = PixelHoldOut(
            image, np.asarray(counts, dtype=np.float64), pixel_masks(image.shape, folds, rng), input_xp, input_device
        )
    else:
        split = split_counts(counts, folds, rng)
        fit = (counts[None].astype(np.int64) - split).astype(np.float32 if counts.dtype.itemsize <= 4 else np.float64)
        holdout = Folds(image, fit, split, input_xp, input_device, criterion, calibrate=bool(calibrate))
    common = {"elements": elements, "z": z, "saturated": saturated, "negative": negative, "run": run}
    if screen_folds is None:
        screen_folds = SCREEN_FOLDS["masks" if criterion == "jinvariant" else "counts"]
    screening = None if screen is None else _choice.Screening(screen, keep, screen_folds, screen_window)
    # The candidates are scored with the prox's inner iterations held at n_tv: grown where an objective
    # climbs, they took `auto` on the 50 x 50 px SEM image 2.4x as long (10 -> 24 s) for maps within 2.4 %.
    scoring = base.replace(tv_growth=1)
    surface = _choice.search(holdout, scoring, candidates, progress, common, screening)
    surface, widened = _choice.widen(holdout, scoring, surface, widen, per_element, progress, common, screening)
    total = holdout.total(surface.values)
    if np.all(np.isnan(total)):
        raise RuntimeError("every candidate diverged in some fold; widen the grid towards smaller weights")
    best = tuple(int(i) for i in np.unravel_index(int(np.nanargmin(total)), total.shape))
    shared = surface.at(base, best)
    shared_parts = None if surface.parts is None else surface.parts[(slice(None), *best)]
    shared_maps = surface.maps[best]
    calibrations = surface.calibration
    options = [
        _choice.Option(
            "shared",
            shared,
            surface.values[best],
            shared_parts,
            shared_maps,
            best,
            None if calibrations is None else calibrations[best],
        )
    ]
    attrs: dict[str, Any] = {
        f"chosen_{name}": _choice._value(values[i]) for (name, values), i in zip(surface.candidates.items(), best)
    }
    trial = _choice.per_element_params(base, surface, best) if per_element else None
    if trial is not None:
        scored = holdout.score(trial.replace(tv_growth=1), 0, False, common, start=shared_maps)
        attrs.update(shared_total=float(total[best]), per_element_total=float(holdout.total(scored.values)))
        attrs["per_element_params"] = json.dumps(trial.to_dict())
        for name in surface.candidates:
            if isinstance(getattr(trial, name), PerElement):
                attrs[f"per_element_{name}"] = json.dumps(dict(getattr(trial, name)))
        if not bool(scored.diverged):
            trial_maps = np.asarray(to_numpy(scored.fits.maps), dtype=np.float32)
            options.append(
                _choice.Option(
                    "per element", trial, scored.values, scored.parts, trial_maps, calibration=scored.calibration
                )
            )
    simple = simple_scores(holdout, widths) if widths.size else None
    resolved = _resolved(holdout, surface.elements, simple is not None)
    if simple is not None and calibrate and resolved is not None and not np.all(resolved):
        simple = _uncalibrated(simple, simple_scores(replace(holdout, calibrate=False), widths), ~resolved)
    pick, takes = _choice.decide(holdout, options, None if simple is None else simple[:2], resolved)
    option = options[pick]
    if trial is not None:
        attrs["per_element"] = int(option.label == "per element")
    choice = _choice.record(holdout, surface, option, widths, simple, takes)
    calibration = None
    if option.calibration is not None:
        calibration = np.array(option.calibration, dtype=np.float64)
        for e, taken in enumerate([] if takes is None else takes):
            if taken >= 0:
                calibration[e] = simple[2][taken, e]
        if resolved is not None:
            # with no simple candidate (sigmas=None) such an element keeps its fusion, uncalibrated all the same
            calibration[~resolved] = (1.0, 0.0)
        choice = choice.assign(slope=("element", calibration[:, 0]), offset=("element", calibration[:, 1]))
    sources = [
        "fusion" if method == "fusion" else _choice.simple_label(sigma)
        for method, sigma in zip(choice.method.values, choice.sigma.values)
    ]
    average = None
    if isinstance(holdout, Folds):
        average = holdout.average(option.maps)
        average = _substitute_maps(average, counts, takes, widths).astype(fit.dtype)
        average = convert(average, input_xp, input_device)
    scores = _scores(holdout, surface, total, simple, widths, attrs, widened, seed, folds, resolved)
    result = None
    if refit:
        fused = fuse_arrays(haadf, maps, params=option.params, **common)
        result = _with_sources(fused, counts, takes, widths, sources, calibration)
        if labeled_maps is not None:
            result = result_to_dataset(result, labeled_haadf, labeled_maps)
    if labeled_maps is not None and average is not None:
        average = labeled_maps.copy(data=average)
    return TuneResult(option.params, scores, result, average, choice)


def _resolved(holdout: Folds | PixelHoldOut, elements: Sequence[str], simple: bool) -> np.ndarray | None:
    r"""Per element, whether its counts resolve a signal variance (criterion ``"mse"``; else None), with a warning.

    Resolved: the estimate of :math:`\lVert\mu - \bar\mu\rVert^2` is above twice
    its standard error (`Folds.signal`).  Where it is not, no map can be shown
    to beat a flat one (their difference is at most that variance), so a
    fusion's held-out lead there is noise: such elements take their best
    simple candidate (`_choice.decide`), where there are any (``simple``).
    """
    if holdout.criterion != "mse":
        return None
    signal, noise = holdout.signal
    resolved = signal > 2 * noise
    if not np.all(resolved):
        unresolved = ", ".join(e for e, ok in zip(elements, resolved) if not ok)
        taken = (
            "so they take their best Gaussian or raw map (pass sigmas=None to keep the fusion)"
            if simple
            else "and with sigmas=None they keep the fusion"
        )
        warnings.warn(
            f"tune: the counts of {unresolved} resolve no signal variance (its estimate is not above twice its "
            f"noise): no fusion can be shown to beat a blur there, {taken}; their raw_nrmse is NaN",
            UserWarning,
            stacklevel=3,
        )
    return resolved


def _uncalibrated(
    calibrated: tuple[np.ndarray, np.ndarray, np.ndarray], plain: tuple[np.ndarray, Any, Any], elements: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the simple candidates' scores, parts and calibrations with ``elements`` (E,) left uncalibrated.

    Those are the elements whose counts resolve no signal variance: the slope fitted to their
    held-out counts is noise, so their blurs are ranked and returned as they are (slope 1, offset 0).
    """
    values, parts, calibration = (np.array(a, dtype=np.float64) for a in calibrated)
    values[:, elements] = plain[0][:, elements]
    parts[:, :, elements] = plain[1][:, :, elements]
    calibration[:, elements] = (1.0, 0.0)
    return values, parts, calibration


def _substitute_maps(estimate: np.ndarray, counts: np.ndarray, takes: np.ndarray | None, widths: np.ndarray) -> Any:
    """Return ``estimate`` (E, H, W) with each element that took a simple candidate replaced by it, from ``counts``."""
    out = np.array(estimate, dtype=np.float64)
    for e, taken in enumerate([] if takes is None else takes):
        if taken >= 0:
            out[e] = gaussian(np.asarray(counts[e], dtype=np.float64), widths[taken])
    return out


def _with_sources(
    fused: FusionResult,
    counts: np.ndarray,
    takes: np.ndarray | None,
    widths: np.ndarray,
    sources: list[str],
    calibration: np.ndarray | None = None,
) -> FusionResult:
    r"""Put the simple candidates some elements took into ``fused`` (in its normalized units) and label every map.

    With ``calibration`` ``(E, 2)``, every map is calibrated in the input's units (`_calibrated`).
    """
    maps = fused.maps
    changed = np.zeros(len(sources), dtype=bool) if takes is None else takes >= 0
    if calibration is not None:
        changed[:] = True
    if np.any(changed):
        scale = np.asarray(fused.scale["maps"], dtype=np.float64)  # (E, 2): offset, range
        ranges = np.where(scale[:, 1] > 0, scale[:, 1], 1.0)
        xp, device = namespace_of(maps=maps)
        host = np.asarray(to_numpy(maps), dtype=np.float64)
        inputs = _substitute_maps(host * ranges[:, None, None] + scale[:, 0, None, None], counts, takes, widths)
        if calibration is not None:
            inputs = np.stack([_calibrated(m, a, c) for m, (a, c) in zip(inputs, calibration)])
        for e in np.flatnonzero(changed):
            host[e] = (inputs[e] - scale[e, 0]) / ranges[e]
        maps = convert(host.astype(to_numpy(fused.maps).dtype), xp, device)
    return replace(fused, maps=maps, sources=tuple(sources))


def _calibrated(image: np.ndarray, slope: float, offset: float) -> np.ndarray:
    r"""Return :math:`\max(a x + c', 0)`, with :math:`c' \le c` such that it sums to :math:`\sum (a x + c)`.

    Clipping at 0 would add the negative part back to the total; lowering the
    offset instead keeps the total the calibration gives (the counts' total).
    """
    scaled = slope * image
    total = float(np.sum(scaled + offset))
    if total <= 0:
        return np.zeros_like(scaled)
    low, high = -float(scaled.max()), float(offset)  # sums 0 and at least the total
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if np.sum(np.maximum(scaled + middle, 0.0)) < total else (low, middle)
    return np.maximum(scaled + high, 0.0)


def _scores(
    holdout: Folds | PixelHoldOut,
    surface: _choice.Surface,
    total: np.ndarray,
    simple: tuple[np.ndarray, np.ndarray | None] | None,
    widths: np.ndarray,
    attrs: dict[str, Any],
    widened: list[str],
    seed: int | None,
    folds: int,
    resolved: np.ndarray | None,
) -> xr.Dataset:
    """Build `TuneResult.scores`: the score surface, the simple candidates' scores, and what was done."""
    names = list(surface.candidates)
    criterion = holdout.criterion
    variables: dict[str, Any] = {criterion: ((*names, "element"), surface.values)}
    if criterion == "deviance":
        variables["signal_variance"] = ("element", holdout.signal_variance)
    if criterion == "mse":
        signal, _ = holdout.signal
        ratio = holdout.denominator / np.where(resolved, signal, np.nan)
        variables["raw_nrmse"] = ((*names, "element"), _signed_root(surface.values * ratio))
        variables["signal_variance"] = ("element", np.where(resolved, signal, np.nan))
    coords: dict[str, Any] = {name: values for name, values in surface.candidates.items()}
    if simple is not None:
        variables["simple"] = (("sigma", "element"), simple[0])
        coords["sigma"] = widths
    return xr.Dataset(
        {
            **variables,
            "screened": ((*names, "element"), surface.screened),
            "total": (tuple(names), total),
            "diverged": (tuple(names), surface.diverged),
            "finished": (tuple(names), surface.finished),
        },
        coords={**coords, "element": list(surface.elements)},
        attrs={
            "criterion": CRITERIA[criterion],
            "score": criterion,
            "folds": folds,
            "seed": "None" if seed is None else seed,
            "widened": json.dumps(widened),
            **attrs,
        },
    )

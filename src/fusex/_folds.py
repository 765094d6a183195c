"""Hold-outs of one acquisition: fitting on part of the data, scoring on the rest, averaging the fits.

`Folds` splits counts (count splitting); `PixelHoldOut` hides pixels
(a J-invariant hold-out, for maps that are not counts).  Both score a
candidate's fits *per part* (fold or mask), so that the spread of the parts
gives the score's standard error.  See `fusex.tune` for the method.  Every
array here is on the host except inside ``score``, which runs the fits in the
caller's library.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from ._blur import gaussian
from ._eager import fuse_arrays
from ._quirks import SATURATION_WARNING
from ._xp import convert, to_numpy
from .params import FusionParams, PerElement
from .result import FusionResult

Criterion = Literal["mse", "nrmse", "deviance", "jinvariant"]


@dataclass(frozen=True)
class Folds:
    """The count splits of one acquisition, and how to score parameters on them."""

    image: np.ndarray
    fit: np.ndarray  # (K, E, H, W): the counts each fit sees
    split: np.ndarray  # (K, E, H, W): the held-out counts
    xp: Any
    device: Any
    criterion: Criterion = "mse"
    n_folds: int = 0  # K, the number of folds the counts were split into (0: as many as ``split`` holds)
    calibrate: bool = False  # score (and return) each fit after its held-out affine calibration

    @property
    def folds(self) -> int:
        """:math:`K`: each fit saw :math:`(K-1)/K` of the counts, even when only some folds are held here."""
        return self.n_folds or self.split.shape[0]

    @property
    def inputs(self) -> np.ndarray:
        """What each fit sees, ``(K, E, H, W)``: all folds but one."""
        return self.fit

    def first(self, count: int) -> Folds:
        """Return this hold-out on its first ``count`` folds only (scores on the same scale, noisier)."""
        return replace(self, fit=self.fit[:count], split=self.split[:count], n_folds=self.folds)

    def window(self, rows: slice, cols: slice) -> Folds:
        """Return this hold-out on the pixels ``[rows, cols]`` only (scores summed over fewer pixels)."""
        return replace(
            self, image=self.image[rows, cols], fit=self.fit[..., rows, cols], split=self.split[..., rows, cols]
        )

    def score(
        self, params: FusionParams, axes: int, progress: bool, common: dict[str, Any], start: np.ndarray | None = None
    ) -> Scored:
        """Fit ``params`` (whose per-item fields span ``axes`` grid axes) on every fold and score them.

        ``start`` ``(K, *grid, E, H, W)``, earlier fits in normalized units, is where the fits begin.
        """
        folds = self.folds
        if params.normalize != "none":
            # in normalized units the Poisson term's weight relative to the others scales with the dose
            params = params.replace(lambda_chem=scaled(params.lambda_chem, (folds - 1) / folds))
        return _fit_and_score(self, params, axes, progress, common, start)

    def evaluate(
        self, estimate: np.ndarray, calibration: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Score fits ``(K, *grid, E, H, W)`` in the maps' units: the scores ``(*grid, E)`` and their parts, if any.

        ``calibration``: the fits' `calibration`, when the caller has it already.
        """
        if self.criterion == "mse":
            parts = self.parts(estimate, calibration)
            return self.values(parts), parts
        if self.criterion == "nrmse":
            return _heldout_nrmse(estimate, self.split), None
        return _heldout_deviance(estimate, self.fit, self.split, self.folds), None

    def parts(self, estimate: np.ndarray, calibration: np.ndarray | None = None) -> np.ndarray:
        r"""Unbiased estimate ``(K, *grid, E)``, per fold, of each fit's squared error at raw scale.

        Fold :math:`k`'s fit :math:`\hat x_k` saw :math:`(K-1)/K` of the dose, the
        held-out counts :math:`h_k \sim \mathrm{Poisson}(\mu/K)` the rest, independent
        of it, so

        .. math::

            E\bigl[\lVert \hat x_k/(K-1) - h_k\rVert^2 - {\textstyle\sum} h_k\bigr]
                = \lVert \hat x_k/(K-1) - \mu/K\rVert^2 ,

        and :math:`K^2` times that is the error of :math:`\hat x_k K/(K-1)` (the fit
        brought to the full dose) against :math:`\mu`: no affine fit, so a fit of the
        right shape but the wrong scale or offset scores badly.  With ``calibrate``, each fit is
        scored after its `calibration` (computed here unless given).
        """
        folds = self.folds
        grid_axes = estimate.ndim - 4
        if calibration is None:
            calibration = self.calibration(estimate)
        out = []
        for k in range(self.split.shape[0]):
            held = _fold(self.split, k, grid_axes)
            predicted = estimate[k] / (folds - 1)
            if calibration is not None:
                # clipped as the returned maps are: a calibration is not credited for negative counts
                slope, offset = calibration[..., 0, None, None], calibration[..., 1, None, None] / folds
                predicted = np.maximum(slope * predicted + offset, 0.0)
            squared = np.sum((predicted - held) ** 2, axis=(-2, -1)) - held.sum(axis=(-2, -1))
            out.append(folds**2 * squared)
        return np.stack(out)

    def calibration(self, estimate: np.ndarray) -> np.ndarray | None:
        r"""Per fit and element, the held-out affine calibration ``(*grid, E, 2)``: slope :math:`a`, offset :math:`c`.

        None unless ``calibrate``.  The least-squares fit, pooled over the folds, of the held-out
        counts :math:`h_k` by :math:`a\,\hat x_k/(K-1) + c/K`: the held-out noise is independent of
        the fits, so :math:`(a, c)` estimates the affine map that brings a fit closest to the mean
        counts (two numbers fitted to :math:`K N` pixels; their optimism is negligible).  The full
        data's fit :math:`\hat x` becomes :math:`a\hat x + c`, whose total is the counts' when the
        fits keep their counts' totals.
        """
        if not self.calibrate or self.criterion != "mse":
            return None
        folds = self.folds
        grid_axes = estimate.ndim - 4
        sx = sh = sxx = sxh = 0.0
        for k in range(self.split.shape[0]):
            held = _fold(self.split, k, grid_axes)
            x = estimate[k] / (folds - 1)
            sx, sxx = sx + x.sum(axis=(-2, -1)), sxx + np.sum(x * x, axis=(-2, -1))
            sh, sxh = sh + held.sum(axis=(-2, -1)), sxh + np.sum(x * held, axis=(-2, -1))
        n = self.split.shape[0] * self.split.shape[-2] * self.split.shape[-1]
        spread = sxx - sx * sx / n
        covariance = sxh - sx * sh / n
        # a constant fit (no spread) cannot be rescaled: its slope stays 1
        slope = np.where(spread > 1e-12 * np.maximum(sxx, 1e-300), covariance / np.maximum(spread, 1e-300), 1.0)
        offset = folds * (sh - slope * sx) / n
        return np.stack([slope, offset], axis=-1)

    @cached_property
    def denominator(self) -> np.ndarray:
        """Per element, the raw map's expected squared error at full dose: its Poisson variance, the total count."""
        return np.maximum((self.fit[0] + self.split[0]).sum(axis=(-2, -1)).astype(np.float64), 1.0)

    def values(self, parts: np.ndarray) -> np.ndarray:
        """Return the score of parts ``(K, ..., E)``: their mean over the raw map's (`denominator`).

        1 is the raw map's expected error at full dose; the raw map of a fold,
        brought to full dose, scores :math:`K/(K-1)` in expectation.
        """
        return parts.mean(axis=0) / self.denominator

    def total(self, values: np.ndarray) -> np.ndarray:
        """Combine the per-element scores (last axis) into the criterion: their mean, or deviance / signal variance."""
        if self.criterion == "deviance":
            return np.sum(values / self.signal_variance, axis=-1)
        return np.mean(values, axis=-1)

    @cached_property
    def signal(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Per element, the signal variance :math:`\lVert\mu - \bar\mu\rVert^2` from all counts, and its noise.

        The estimate is :math:`\lVert b - \bar b\rVert^2 - (1 - 1/N)\sum b`; for
        Poisson counts each pixel's term has variance about :math:`2\mu^2`, so its
        standard error is estimated by :math:`\sqrt{2 \sum (b^2 - b)}`.  Not floored:
        the caller decides what a resolved signal is.
        """
        counts = (self.fit[0] + self.split[0]).astype(np.float64)
        pixels = counts.shape[-1] * counts.shape[-2]
        centred = counts - counts.mean(axis=(-2, -1), keepdims=True)
        estimate = np.sum(centred**2, axis=(-2, -1)) - counts.sum(axis=(-2, -1)) * (1 - 1 / pixels)
        noise = np.sqrt(2.0 * np.maximum(np.sum(counts**2 - counts, axis=(-2, -1)), 0.0))
        return estimate, noise

    @cached_property
    def signal_variance(self) -> np.ndarray:
        """Per-element signal variance of the full counts (see `signal_variance`), the deviance's weights."""
        return signal_variance(self.fit[0] + self.split[0])

    def average(self, maps: np.ndarray) -> np.ndarray:
        r"""Return the cross-fitted estimate ``(E, H, W)`` of one candidate's fold fits ``maps`` ``(K, E, H, W)``.

        Each fold's fit, brought to the counts it was fitted to by a least-squares
        affine fit, is averaged over the folds, scaled by :math:`K/(K-1)` and
        clipped at zero (in counts of the full dose).
        Every count enters :math:`K-1` of the :math:`K` fits, so all the data count equally.
        """
        folds = self.folds
        maps = np.asarray(maps, dtype=np.float64)
        calibrated = _calibrate(maps, self.fit.astype(np.float64))
        return np.maximum(calibrated.mean(axis=0) * folds / (folds - 1), 0.0)


@dataclass(frozen=True)
class PixelHoldOut:
    r"""A J-invariant pixel hold-out of maps that need not be counts (Batson & Royer 2019).

    Each of the ``K`` masks hides one sub-grid of stride :math:`s`
    (:math:`y \equiv i, x \equiv j \bmod s`); a hidden pixel is replaced by the
    mean of its four neighbours, as `skimage.restoration.denoise_invariant`
    does, so a fit of the masked maps never sees it.  Its prediction's
    error is then independent of the pixel's own noise (whenever noise is
    independent between pixels), and

    .. math::

        L_e = \frac{1}{K}\sum_k \frac{N}{|M_k|} \sum_{px \in M_k} (\hat x_{k} - b)^2
              \Big/ \lVert b_e - \bar b_e \rVert^2

    estimates the error against the truth plus the noise variance (a
    constant), on the scale of `fusex.baselines.jinvariant_loss`.  Raw scale:
    a fit of the wrong scale scores badly.
    """

    image: np.ndarray
    maps: np.ndarray  # (E, H, W), float64
    masks: np.ndarray  # (K, H, W), bool
    xp: Any
    device: Any
    criterion: Criterion = "jinvariant"

    def first(self, count: int) -> PixelHoldOut:
        """Return this hold-out on its first ``count`` masks only (scores on the same scale, noisier)."""
        return replace(self, masks=self.masks[:count])

    def window(self, rows: slice, cols: slice) -> PixelHoldOut:
        """Return this hold-out on the pixels ``[rows, cols]`` only (a hidden pixel at its edge: its mirror's mean)."""
        return replace(
            self, image=self.image[rows, cols], maps=self.maps[:, rows, cols], masks=self.masks[:, rows, cols]
        )

    @cached_property
    def inputs(self) -> np.ndarray:
        """The masked maps ``(K, E, H, W)`` each fit sees, hidden pixels replaced by their neighbours' mean."""
        kernel = np.array([[[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]])
        neighbours = ndimage.convolve(self.maps, kernel, mode="mirror")
        return np.where(self.masks[:, None], neighbours[None], self.maps[None])

    def score(
        self, params: FusionParams, axes: int, progress: bool, common: dict[str, Any], start: np.ndarray | None = None
    ) -> Scored:
        """Fit ``params`` (whose per-item fields span ``axes`` grid axes) on every masked copy and score them."""
        return _fit_and_score(self, params, axes, progress, common, start)

    def evaluate(self, estimate: np.ndarray, calibration: None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score fits ``(K, *grid, E, H, W)`` in the maps' units: the scores ``(*grid, E)`` and their parts."""
        parts = self.parts(estimate)
        return self.values(parts), parts

    def calibration(self, estimate: np.ndarray) -> None:
        """No calibration: maps that are not counts are scored as they are."""
        return None

    def parts(self, estimate: np.ndarray) -> np.ndarray:
        """Per mask, the squared error ``(K, *grid, E)`` on its hidden pixels, scaled to the whole image."""
        pixels = self.masks[0].size
        out = []
        for k, mask in enumerate(self.masks):
            squared = np.sum(np.where(mask, (estimate[k] - self.maps) ** 2, 0.0), axis=(-2, -1))
            out.append(squared * pixels / mask.sum())
        return np.stack(out)

    @cached_property
    def denominator(self) -> np.ndarray:
        r"""Per element, the maps' spread :math:`\lVert b - \bar b\rVert^2` (the loss of predicting the mean)."""
        centred = self.maps - self.maps.mean(axis=(-2, -1), keepdims=True)
        return np.maximum(np.sum(centred**2, axis=(-2, -1)), 1e-300)

    def values(self, parts: np.ndarray) -> np.ndarray:
        """Return the J-invariant loss of parts ``(K, ..., E)``: their mean over the maps' spread."""
        return parts.mean(axis=0) / self.denominator

    def total(self, values: np.ndarray) -> np.ndarray:
        """Return the criterion of per-element losses (last axis): their mean."""
        return np.mean(values, axis=-1)


def pixel_masks(shape: tuple[int, int], count: int, rng: np.random.Generator, stride: int = 4) -> np.ndarray:
    """Return ``count`` distinct masks ``(count, H, W)``, each one sub-grid of ``stride`` picked at random."""
    if count > stride * stride:
        raise ValueError(f"`folds` must be at most {stride * stride} for the pixel hold-out, got {count}")
    offsets = rng.choice(stride * stride, size=count, replace=False)
    y, x = np.mgrid[: shape[0], : shape[1]]
    return np.stack([(y % stride == o // stride) & (x % stride == o % stride) for o in offsets])


HoldOut = Folds | PixelHoldOut


def _fit_and_score(
    holdout: HoldOut,
    params: FusionParams,
    axes: int,
    progress: bool,
    common: dict[str, Any],
    start: np.ndarray | None = None,
) -> Scored:
    """Fuse every part's input with ``params`` in one batched call (from ``start``, if given) and score the fits."""
    inputs = holdout.inputs
    lead = (inputs.shape[0],) + (1,) * axes
    # a diverging candidate is marked, and scored NaN, rather than ending the search
    run = replace(common["run"], progress=progress, on_divergence="mark", callback=None)
    with warnings.catch_warnings():
        # the image repeats once per part and candidate, and so would its count of saturated pixels (`fusex.tune`
        # reports the image's own)
        warnings.filterwarnings("ignore", message=SATURATION_WARNING, category=UserWarning)
        # the search runs in the caller's library and on its device, like the final fusion
        fits = fuse_arrays(
            convert(np.broadcast_to(holdout.image, (*lead, *holdout.image.shape)), holdout.xp, holdout.device),
            convert(np.reshape(inputs, lead + inputs.shape[1:]), holdout.xp, holdout.device),
            params=params,
            **{**common, "run": run},
            start=None if start is None else np.reshape(start, (-1, *start.shape[-3:])),
        )
    estimate = np.asarray(to_numpy(fits.to_input_units()), dtype=np.float64)  # (K, *grid, E, H, W)
    diverged = np.any(np.asarray(fits.stop_reason) == "diverged", axis=0)
    calibration = holdout.calibration(estimate)
    values, parts = holdout.evaluate(estimate, calibration)
    if parts is not None:
        parts = np.where(diverged[..., None], np.nan, parts)
    return Scored(np.where(diverged[..., None], np.nan, values), diverged, fits, parts, calibration)


def simple_scores(holdout: HoldOut, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Score a Gaussian blur of each part's input for every width (0: the input as it is).

    Returns the scores ``(S, E)``, their parts ``(K, S, E)`` and calibrations ``(S, E, 2)`` (None where absent).
    """
    blurred = [np.stack([gaussian(m, s) for m in holdout.inputs]) for s in sigmas]
    calibrations = [holdout.calibration(b) for b in blurred]
    scored = [holdout.evaluate(b, c) for b, c in zip(blurred, calibrations)]
    values = np.stack([v for v, _ in scored])
    parts = None if scored[0][1] is None else np.stack([p for _, p in scored], axis=1)  # (K, S, E)
    calibration = None if calibrations[0] is None else np.stack(calibrations)  # (S, E, 2)
    return values, parts, calibration


@dataclass(frozen=True)
class Scored:
    """The held-out score ``(*grid, E)`` of candidates (NaN where diverged), which diverged, their fits and parts.

    ``parts`` ``(K, *grid, E)`` holds each fold's (or mask's) share of the score
    for the criteria that have one (``"mse"``, ``"jinvariant"``), else None.
    """

    values: np.ndarray
    diverged: np.ndarray
    fits: FusionResult
    parts: np.ndarray | None = None
    calibration: np.ndarray | None = None  # (*grid, E, 2), see `Folds.calibration`


def scaled(value: Any, factor: float) -> Any:
    """Return a ``lambda_chem`` value (number, per-item values or per-element mapping) times ``factor``."""
    if isinstance(value, PerElement):
        return {name: scaled(v, factor) for name, v in value.items()}
    return (np.asarray(value, dtype=np.float64) * factor).tolist()


def signal_variance(counts: np.ndarray) -> np.ndarray:
    """Per-element variance of the signal: the counts' spread minus their Poisson variance (floored)."""
    spread = counts.astype(np.float64)
    total = spread.sum(axis=(-2, -1))
    signal = np.sum((spread - spread.mean(axis=(-2, -1), keepdims=True)) ** 2, axis=(-2, -1)) - total
    return np.maximum(signal, 1e-6 * np.maximum(total, 1.0))


def _signed_root(ratio: np.ndarray) -> np.ndarray:
    """Signed square root: noise can make an unbiased squared error negative; the sign keeps the ranking."""
    return np.sign(ratio) * np.sqrt(np.abs(ratio))


def _fold(stack: np.ndarray, k: int, grid_axes: int) -> np.ndarray:
    """Return part ``k`` of ``stack`` ``(K, E, H, W)`` in float64, to broadcast against fits ``(*grid, E, H, W)``."""
    return np.reshape(stack[k], (1,) * grid_axes + stack.shape[1:]).astype(np.float64)


def _heldout_nrmse(estimate: np.ndarray, split: np.ndarray) -> np.ndarray:
    r"""Estimate ``(*grid, E)`` of each candidate's NRMSE against the truth, from the held-out folds.

    Fold :math:`k`'s fit :math:`\hat x_k`, fitted by least squares to the held-out
    counts :math:`b^{(k)}` with an affine map (two numbers per map, as the NRMSE
    allows), leaves the residual :math:`R_k = \lVert P^\perp b^{(k)} \rVert^2`, with
    :math:`P^\perp` the projection off :math:`\{1, \hat x_k\}`.  The held-out counts
    :math:`b^{(k)} = \mu_k + n` have noise independent of :math:`\hat x_k` with variance
    :math:`\mu_k` (Poisson), so :math:`E[R_k] = \lVert P^\perp\mu_k\rVert^2 + \sum_{px}
    \mu_k P^\perp_{px,px}`: the first term is the NRMSE's numerator, and the second is
    estimated without bias by :math:`\sum_{px} b^{(k)} P^\perp_{px,px}`, with
    :math:`P^\perp_{px,px} = 1 - 1/N - (\hat x_{px} - \bar x)^2 / \sum (\hat x - \bar x)^2`.
    Likewise :math:`\lVert\mu_k - \bar\mu_k\rVert^2` is estimated by
    :math:`\lVert b^{(k)} - \bar b^{(k)}\rVert^2 - (1 - 1/N)\sum b^{(k)}`.  Pooled over
    folds, their ratio estimates NRMSE squared; the signed square root keeps the
    ranking where noise makes the estimate negative.
    """
    pixels = split.shape[-1] * split.shape[-2]
    grid_axes = estimate.ndim - 4
    explained = signal = 0.0
    for k in range(split.shape[0]):
        held = _fold(split, k, grid_axes)
        centred = held - held.mean(axis=(-2, -1), keepdims=True)
        x = estimate[k] - estimate[k].mean(axis=(-2, -1), keepdims=True)
        spread_x = np.maximum(np.sum(x**2, axis=(-2, -1)), 1e-300)
        # R_k minus its noise is the signal estimate below minus this: the spread the affine fit
        # removes, (x . centred)^2 / |x|^2, less the noise it removes with it, sum b x^2 / |x|^2
        explained = (
            explained + (np.sum(x * centred, axis=(-2, -1)) ** 2 - np.sum(held * x**2, axis=(-2, -1))) / spread_x
        )
        signal = signal + np.sum(centred**2, axis=(-2, -1)) - held.sum(axis=(-2, -1)) * (1.0 - 1.0 / pixels)
    ratio = (signal - explained) / np.maximum(signal, 1e-12)
    return np.sign(ratio) * np.sqrt(np.abs(ratio))


def _heldout_deviance(estimate: np.ndarray, fitted: np.ndarray, split: np.ndarray, folds: int) -> np.ndarray:
    """Poisson deviance ``(*grid, E)`` of the held-out folds (of ``folds`` in all), summed over folds and pixels."""
    floor = 1e-3 * max(float(split.mean()), 1e-12)  # a zero prediction of a nonzero count is infinitely bad
    grid_axes = estimate.ndim - 4
    deviance = 0.0
    for k in range(split.shape[0]):
        target = _fold(fitted, k, grid_axes)
        mu = np.maximum(_calibrate(estimate[k], target) / (folds - 1), floor)
        held = _fold(split, k, grid_axes)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(held > 0, held * np.log(held / mu), 0.0) - (held - mu)
        deviance = deviance + 2.0 * term.sum(axis=(-2, -1))
    return deviance


def _calibrate(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``x`` mapped by the least-squares affine fit to ``target``, per map (last two axes)."""
    x_mean = x.mean(axis=(-2, -1), keepdims=True)
    t_mean = target.mean(axis=(-2, -1), keepdims=True)
    covariance = ((x - x_mean) * (target - t_mean)).mean(axis=(-2, -1), keepdims=True)
    variance = ((x - x_mean) ** 2).mean(axis=(-2, -1), keepdims=True)
    return covariance / np.maximum(variance, 1e-30) * (x - x_mean) + t_mean

"""Count splits of one acquisition: fitting on some folds, scoring on the held-out one, averaging the fits.

See `fusex.tune` for the method.  Every array here is on the host except
inside `Folds.score`, which runs the fits in the caller's library.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ._xp import convert, to_numpy
from .params import FusionParams, PerElement
from .result import FusionResult


@dataclass(frozen=True)
class Folds:
    """The count splits of one acquisition, and how to score parameters on them."""

    image: np.ndarray
    fit: np.ndarray  # (K, E, H, W): the counts each fit sees
    split: np.ndarray  # (K, E, H, W): the held-out counts
    xp: Any
    device: Any
    criterion: Literal["nrmse", "deviance"] = "nrmse"

    def score(self, params: FusionParams, axes: int, progress: bool, common: dict[str, Any]) -> Scored:
        """Fit ``params`` (whose per-item fields span ``axes`` grid axes) on every fold and score them."""
        from .api import fuse

        folds = self.fit.shape[0]
        if params.normalize == "minmax":
            params = params.replace(lambda_chem=scaled(params.lambda_chem, (folds - 1) / folds))
        lead = (folds,) + (1,) * axes
        # the search runs in the caller's library and on its device, like the final fusion
        fits = fuse(
            convert(np.broadcast_to(self.image, (*lead, *self.image.shape)), self.xp, self.device),
            convert(np.reshape(self.fit, lead + self.fit.shape[1:]), self.xp, self.device),
            params=params,
            progress=progress,
            on_divergence="mark",
            **common,
        )
        estimate = np.asarray(to_numpy(fits.maps), dtype=np.float64)  # (K, *grid, E, H, W)
        diverged = np.any(np.asarray(fits.stop_reason) == "diverged", axis=0)
        if self.criterion == "nrmse":
            values = _heldout_nrmse(estimate, self.split)
        else:
            values = _heldout_deviance(estimate, self.fit, self.split)
        return Scored(np.where(diverged[..., None], np.nan, values), diverged, fits)

    def total(self, values: np.ndarray) -> np.ndarray:
        """Combine the per-element scores (last axis) into the criterion: mean NRMSE, or deviance / signal variance."""
        if self.criterion == "nrmse":
            return np.mean(values, axis=-1)
        return np.sum(values / self.signal_variance, axis=-1)

    @cached_property
    def signal_variance(self) -> np.ndarray:
        """Per-element signal variance of the full counts (see `signal_variance`), the deviance's weights."""
        return signal_variance(self.fit[0] + self.split[0])

    def average(self, fits: FusionResult, index: tuple[int, ...]) -> np.ndarray:
        r"""Return the cross-fitted estimate ``(E, H, W)`` of candidate ``index``, in counts of the full dose.

        Each fold's fit, brought to the counts it was fitted to by a least-squares
        affine fit, is averaged over the folds, scaled by :math:`K/(K-1)` and
        clipped at zero.
        Every count enters :math:`K-1` of the :math:`K` fits, so all the data count equally.
        """
        folds = self.fit.shape[0]
        maps = np.asarray(to_numpy(fits.maps[(slice(None), *index, ...)]), dtype=np.float64)
        calibrated = _calibrate(maps, self.fit.astype(np.float64))
        return np.maximum(calibrated.mean(axis=0) * folds / (folds - 1), 0.0)


@dataclass(frozen=True)
class Scored:
    """The held-out score ``(*grid, E)`` of candidates (NaN where diverged), which of them diverged, and their fits."""

    values: np.ndarray
    diverged: np.ndarray
    fits: FusionResult


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
        held = np.reshape(split[k], (1,) * grid_axes + split.shape[1:]).astype(np.float64)
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


def _heldout_deviance(estimate: np.ndarray, fitted: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Poisson deviance ``(*grid, E)`` of the held-out folds, summed over folds and pixels."""
    folds = split.shape[0]
    floor = 1e-3 * max(float(split.mean()), 1e-12)  # a zero prediction of a nonzero count is infinitely bad
    grid_axes = estimate.ndim - 4
    deviance = 0.0
    for k in range(folds):
        target = np.reshape(fitted[k], (1,) * grid_axes + fitted.shape[1:]).astype(np.float64)
        mu = np.maximum(_calibrate(estimate[k], target) / (folds - 1), floor)
        held = np.reshape(split[k], (1,) * grid_axes + split.shape[1:]).astype(np.float64)
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

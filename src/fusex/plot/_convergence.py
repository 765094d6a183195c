"""The convergence figure: every weighted cost term and the step size against iteration."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..result import FusionResult
from ._data import Result, figure, host, one_fusion, pyplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["convergence"]


def _history(result: Result) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Return the iterations, history columns and lambdas of a FusionResult or a result Dataset."""
    one_fusion(result)
    names = ("haadf", "poisson", "tv", "total", "step", "backtracks")
    weights = ("lambda_haadf", "lambda_chem", "lambda_tv")
    if isinstance(result, xr.Dataset):
        hist = {k: host(result[f"history_{k}"]) for k in names}
        return host(result["iteration"]), hist, {k: _dataset_weight(result, k) for k in weights}
    if not isinstance(result, FusionResult):
        raise TypeError(f"`result` must be a FusionResult or the Dataset from fusex.fuse, got {type(result).__name__}")
    hist = {k: result.history[k].to_numpy(dtype=float) for k in names}
    lam = {k: float(v) if isinstance(v := getattr(result.params, k), (int, float)) else math.nan for k in weights}
    return result.history.index.to_numpy(dtype=float), hist, lam


def _dataset_weight(ds: xr.Dataset, name: str) -> float:
    """Return a weight of a result Dataset: its attr, or its ``param_<name>`` of one item; NaN if per element."""
    if name in ds.attrs:
        return float(ds.attrs[name])
    var = ds.get(f"param_{name}")
    if var is None:
        raise ValueError(f"the result Dataset records no {name!r}: pass the Dataset that fusex.fuse returned")
    if "element" in var.dims:
        return math.nan
    return float(var)


def convergence(result: Result, *, ax: Axes | None = None) -> Figure:
    r"""Every cost term weighted by its lambda (log scale) and the step size against iteration.

    The terms and their sum (the objective, dashed) share a log axis; the step size
    (dotted, a marker where it was backtracked) has a twin axis on the right.

    With weights given per element, the Poisson and TV terms are shown as one
    series, their weighted sum (the history records each term summed over the maps).

    The Poisson term :math:`\sum x - b\log(x+\epsilon)` is positive for min-max
    normalized maps (the default) but may be negative with ``normalize="none"``.
    A series not positive at every iteration (Poisson or total) is shown shifted,
    as its excess over its minimum in the run, :math:`\lambda(\Psi_k - \min_j \Psi_j)`,
    and its legend entry says "shifted"; the iteration where it is 0 is left out.

    Parameters
    ----------
    result : FusionResult or xarray.Dataset
        A fusion: the `FusionResult` of `fusex.fuse`, or its labeled result Dataset.
    ax : Axes, optional
        Axes to draw on (the step axis is its twin); a new figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure

    """
    plt = pyplot()
    it, h, lam = _history(result)
    fig, ax = figure(plt, ax, (6, 3.8))
    haadf = lam["lambda_haadf"] * h["haadf"]
    if math.isnan(lam["lambda_chem"] + lam["lambda_tv"]):
        # per-element weights: the history holds each term summed over the maps, so only the
        # weighted sum of the two per-map terms is known
        terms = [(r"$\sum_e \lambda_{C,e}\,$Poisson$_e + \lambda_{TV,e}\,$TV$_e$", h["total"] - haadf, {})]
    else:
        terms = [
            (r"$\lambda_C\,$Poisson", lam["lambda_chem"] * h["poisson"], {}),
            (r"$\lambda_{TV}\,$TV", lam["lambda_tv"] * h["tv"], {}),
        ]
    series = [
        (r"$\lambda_H\,$HAADF", haadf, {}),
        *terms,
        ("total", h["total"], {"color": "black", "ls": (0, (4, 2)), "lw": 1.5}),
    ]
    for label, values, style in series:
        if not np.all(values[np.isfinite(values)] > 0):
            values = values - np.nanmin(values)
            values[values <= 0] = np.nan
            label += r" $-$ min (shifted)"
        ax.plot(it, values, label=label, **style)
    ax.set(yscale="log", xlabel="iteration", ylabel="weighted cost")
    step_ax, step = ax.twinx(), h["step"]
    step_ax.plot(it, step, ":", color="0.45", drawstyle="steps-mid", label=r"step size $\eta$")
    backtracked = h["backtracks"] > 0
    if backtracked.any():
        step_ax.plot(it[backtracked], step[backtracked], "v", color="0.45", ms=4, label="backtracked")
    positive = step[np.isfinite(step) & (step > 0)]
    if positive.size and positive.max() > 10 * positive.min():
        step_ax.set_yscale("log")
    step_ax.set_ylabel("step size", color="0.35")
    handles = [h for a in (ax, step_ax) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, fontsize=8, ncols=3, loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False)
    return fig

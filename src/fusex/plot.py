"""Figures for fused maps (needs the optional matplotlib: ``pip install "fusex[plot]"``).

Every function returns the matplotlib Figure, draws on given axes when asked,
and never calls ``plt.show``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._xp import to_numpy
from .result import FusionResult

__all__ = ["compare_maps", "convergence"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError('fusex.plot needs matplotlib: pip install "fusex[plot]"') from exc
    return plt


def compare_maps(
    result: FusionResult,
    raw_maps: Any,
    *,
    truth: Any = None,
    axes: Sequence[Sequence[Any]] | None = None,
    cmap: str = "magma",
) -> Any:
    """Raw maps above fused maps (and the truth, if given), one column per element.

    Parameters
    ----------
    result : FusionResult
        The fusion to show.
    raw_maps : array (E, H, W)
        The maps that were fused, in any array library.
    truth : array (E, H, W), optional
        Ground truth, e.g. from `fusex.datasets.phantom`.
    axes : 2-D sequence of Axes, optional
        Rows x E axes to draw on; a new figure is made otherwise.
    cmap : str
        Matplotlib colormap name.

    """
    plt = _pyplot()
    panels = [("raw", to_numpy(raw_maps)), ("fused", to_numpy(result.maps))]
    if truth is not None:
        panels.append(("truth", to_numpy(truth)))
    n = len(result.elements)
    if axes is None:
        fig, axes = plt.subplots(len(panels), n, figsize=(2.6 * n, 2.6 * len(panels)), squeeze=False)
    else:
        fig = np.asarray(axes).flat[0].figure
    for row, (label, data) in zip(axes, panels):
        for e, ax in enumerate(row):
            ax.imshow(data[e], cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{result.elements[e]} {label}", fontsize=9)
    return fig


def convergence(result: FusionResult, *, ax: Any = None) -> Any:
    """Every cost term (weighted, log scale) and the step size against iteration."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
    else:
        fig = ax.figure
    h = result.history
    p = result.params
    weighted = {
        r"$\lambda_H\Psi_1$ (HAADF)": p.lambda_haadf * h["haadf"],
        r"$\lambda_C\Psi_2$ (Poisson)": p.lambda_chem * (h["poisson"] - h["poisson"].min()),
        r"$\lambda_{TV}$ TV": p.lambda_tv * h["tv"],
    }
    for label, values in weighted.items():
        ax.semilogy(h.index, np.maximum(values, np.finfo(float).tiny), label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost")
    step_ax = ax.twinx()
    step_ax.plot(h.index, h["step"], "k:", label="step")
    step_ax.set_ylabel("step size")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("convergence (Poisson term shifted to min 0)", fontsize=9)
    return fig

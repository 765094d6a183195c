"""The score surface of `fusex.tune`: the criterion over the parameter grid, the choice marked."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ._data import figure, pyplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["score_surface"]


def score_surface(scores: Any, *, ax: Axes | None = None) -> Figure:
    """Plot the parameter search of `fusex.tune`: the criterion over the grid, the choice marked.

    A two-field grid is shown as a map of the criterion (relative to its
    minimum, log colour scale) over the two fields on log axes, with each
    element's own pick when `tune` chose weights per element; a one-field
    grid as curves, one per element (each relative to its own minimum) and the total.
    A grid of more fields (the default: prior, ``lambda_tv``, ``lambda_chem``,
    ``lambda_haadf``) is shown over its two numeric fields of most values,
    each point at its best over the other fields.

    Parameters
    ----------
    scores : xarray.Dataset or TuneResult
        `TuneResult.scores` (or the `TuneResult` itself).
    ax : Axes, optional
        Axes to draw on; a new figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure

    """
    import matplotlib.ticker

    scores = getattr(scores, "scores", scores)
    plt = pyplot()
    fig, ax = figure(plt, ax, (5.5, 4.2))
    total = scores["total"]
    fields = list(total.dims)
    numeric = [
        name
        for name in fields
        if scores[name].dtype.kind == "f" and scores[name].size > 1 and bool((scores[name] > 0).all())
    ]
    if len(fields) > 2 and len(numeric) >= 2:
        # more fields than a map shows: the two widest numeric ones, each point at its best over the rest
        fields = sorted(numeric, key=lambda name: -scores[name].size)[:2]
        fields = [name for name in total.dims if name in fields]
        total = total.min([name for name in total.dims if name not in fields])
    chosen = [scores.attrs[f"chosen_{name}"] for name in fields]
    excess = total - float(total.min())
    if len(fields) == 1:
        (name,) = fields
        x = scores[name].values
        score = scores.attrs.get("score", "deviance")
        for element in scores["element"].values:
            curve = scores[score].sel(element=element)
            ax.plot(x, curve - float(curve.min()), marker="o", ms=3, label=str(element))
        ax.plot(x, excess, color="black", lw=2, label="total")
        ax.axvline(chosen[0], color="0.4", ls=":", label="chosen")
        ax.set(xscale="log", yscale="symlog", xlabel=name, ylabel=f"held-out {score} - min")
        ax.xaxis.set_ticks(x, labels=[f"{v:g}" for v in x])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.legend(fontsize=8, frameon=False)
        return fig
    if len(fields) != 2:
        raise ValueError(f"score_surface draws grids of one or two fields; this one varies {fields}")
    from matplotlib.colors import LogNorm

    rows, cols = fields
    values = excess.transpose(rows, cols).values
    positive = values[np.isfinite(values) & (values > 0)]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    mesh = ax.pcolormesh(
        scores[cols].values,
        scores[rows].values,
        np.where(values > 0, values, np.nan),
        norm=norm,
        shading="nearest",
        cmap="viridis_r",
    )
    per_element = bool(scores.attrs.get("per_element", 0))
    label = "best shared" if per_element else "chosen"
    ax.plot(chosen[1], chosen[0], marker="*", ms=14, color="white", mec="black", label=label)
    if per_element and all(f"per_element_{name}" in scores.attrs for name in fields):
        picks = [json.loads(scores.attrs[f"per_element_{name}"]) for name in fields]
        for element in picks[0]:
            x, y = picks[1][element], picks[0][element]
            ax.plot(x, y, marker="o", ms=6, color="white", mec="black", ls="none")
            ax.annotate(
                str(element),
                (x, y),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    ax.set(xscale="log", yscale="log", xlabel=cols, ylabel=rows)
    for axis, name in ((ax.xaxis, cols), (ax.yaxis, rows)):
        axis.set_ticks(scores[name].values, labels=[f"{v:g}" for v in scores[name].values])
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.tick_params(axis="x", labelrotation=45)
    fig.colorbar(mesh, ax=ax, label="criterion - min (chosen: 0)")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig

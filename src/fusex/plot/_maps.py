"""Figures of the fused maps: raw beside fused (`compare_maps`), an RGB overlay, line profiles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._data import Result, figure, host, maps_of, pyplot
from ._scalebar import scale_bar

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["compare_maps", "line_profile", "rgb_overlay"]


def compare_maps(
    result: Result,
    raw: Any = None,
    *,
    truth: Any = None,
    axes: Any = None,
    cmap: str = "magma",
    scalebar: bool = True,
    colorbar: bool = True,
    robust: bool = True,
) -> Figure:
    """Raw maps above fused maps (and the truth, if given), one column per element.

    All rows of one element share one colour scale (in the units of the maps given
    to `fuse`), so raw and fused maps compare directly.

    Parameters
    ----------
    result : FusionResult or xarray.Dataset
        A fusion: the `FusionResult` of `fusex.fuse`, or its labeled result Dataset.
    raw : array (E, H, W), optional
        The maps that were fused (any array library, or a DataArray with an ``element``
        dimension): required for a `FusionResult`, ``result.raw`` by default for a Dataset.
    truth : array (E, H, W), optional
        Ground truth, e.g. ``phantom(...).truth``, drawn after the least-squares affine
        map onto ``raw`` (a phantom's truth is an occupancy in [0, 1], its maps counts).
    axes : 2-D array of Axes, optional
        (rows, E) axes to draw on, rows raw, fused and truth; a new figure otherwise.
    cmap : str
        Matplotlib colormap name.
    scalebar : bool
        Draw a scale bar in the bottom row (coordinate units; pixels for a FusionResult).
    colorbar : bool
        Draw a horizontal colour bar under each column.
    robust : bool
        Scale from the 0.5th to the 99.5th percentile of the rows pooled, else min to max.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``raw`` is missing, or ``raw``, ``truth`` or ``axes`` do not match the result.

    """
    plt = pyplot()
    data = maps_of(result, raw)
    if data.raw is None:
        raise ValueError("`raw` is required: pass the maps given to fusex.fuse (a FusionResult does not keep them)")
    panels = [("raw", data.raw), ("fused", data.fused)]
    t = None if truth is None else host(truth)
    if t is not None and t.size != data.fused.size:
        raise ValueError(f"`truth` has shape {t.shape} but the fused maps have shape {data.fused.shape}")
    if t is not None:
        panels.append(("truth", np.stack([_fit(ti, ri) for ti, ri in zip(t.reshape(data.fused.shape), data.raw)])))
    n = len(data.elements)
    if axes is None:
        fig, axes = plt.subplots(
            len(panels), n, figsize=(2.3 * n, 2.3 * len(panels) + 0.4 * colorbar), squeeze=False, layout="tight"
        )
    else:
        axes = np.asarray(axes, dtype=object)
        if axes.shape != (len(panels), n):
            raise ValueError(f"`axes` must have shape {(len(panels), n)} (rows x elements), got {axes.shape}")
        fig = axes.flat[0].figure.figure
    lo_hi = (0.5, 99.5) if robust else (0.0, 100.0)
    for e, name in enumerate(data.elements):
        vmin, vmax = np.percentile(np.concatenate([p[e].ravel() for _, p in panels]), lo_hi)
        vmax = vmax if vmax > vmin else vmin + 1.0
        for r, (label, values) in enumerate(panels):
            ax = axes[r][e]
            im = ax.imshow(values[e], cmap=cmap, vmin=vmin, vmax=vmax, extent=data.extent, interpolation="nearest")
            ax.set(xticks=[], yticks=[], title=name if r == 0 else "", ylabel=label if e == 0 else "")
        if scalebar:
            scale_bar(axes[-1][e], data)
        if colorbar:
            cax = axes[-1][e].inset_axes([0.05, -0.1, 0.9, 0.05])
            fig.colorbar(im, cax=cax, orientation="horizontal").ax.tick_params(labelsize=7)
    return fig


def _fit(truth: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Return ``a * truth + b`` closest to ``raw`` in least squares (``truth`` itself when it is constant)."""
    if np.ptp(truth) == 0:
        return truth
    a, b = np.polyfit(truth.ravel(), raw.ravel(), 1)
    return a * truth + b


def _robust(channel: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    lo, hi = np.percentile(channel, percentiles)
    lo, hi = (lo, hi) if hi > lo else (channel.min(), channel.max())
    return np.clip((channel - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(channel)


def rgb_overlay(
    result: Result,
    elements: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    scalebar: bool = True,
) -> Figure:
    """Show up to three fused maps as one RGB image: red, green, blue in the order given.

    Each channel maps its own ``percentiles`` (robust min, max) onto [0, 1], clipped;
    unused channels stay 0.  A legend names the element in each colour.

    Parameters
    ----------
    result : FusionResult or xarray.Dataset
        A fusion: the `FusionResult` of `fusex.fuse`, or its labeled result Dataset.
    elements : sequence of str, optional
        One to three element symbols; the first three elements by default.
    ax : Axes, optional
        Axes to draw on; a new figure otherwise.
    percentiles : (float, float)
        Percentiles taken as each channel's minimum and maximum.
    scalebar : bool
        Draw a scale bar (coordinate units; pixels for a FusionResult).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For more than three, repeated or unknown elements.

    """
    plt = pyplot()
    from matplotlib.patches import Patch

    data = maps_of(result)
    index = data.index(elements, limit=3)
    rgb = np.zeros((*data.fused.shape[-2:], 3))
    for channel, e in enumerate(index):
        rgb[..., channel] = _robust(data.fused[e], percentiles)
    fig, ax = figure(plt, ax, (4.6, 3.6))
    ax.imshow(rgb, extent=data.extent, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    colours = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    handles = [Patch(color=colours[c], label=data.elements[e]) for c, e in enumerate(index)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=9, frameon=False)
    ax.set_title(f"{' / '.join(data.elements[e] for e in index)} = {' / '.join('RGB'[: len(index)])}", fontsize=9)
    if scalebar:
        scale_bar(ax, data)
    return fig


def line_profile(
    result: Result,
    start: Sequence[float],
    end: Sequence[float],
    *,
    raw: Any = None,
    elements: Sequence[str] | None = None,
    width: int = 1,
    ax: Axes | None = None,
    image_ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Fused maps (solid) and raw maps (dashed, when available) along a straight line.

    Samples at most a pixel apart, interpolated bilinearly (`scipy.ndimage.map_coordinates`)
    and averaged over ``width`` parallel lines a pixel apart, in the input maps' units.

    Parameters
    ----------
    result : FusionResult or xarray.Dataset
        A fusion: the `FusionResult` of `fusex.fuse`, or its labeled result Dataset.
    start, end : (float, float)
        Ends of the line as (row, column): in coordinate units (y, x) for a Dataset
        with regularly spaced coordinates, in pixels for a `FusionResult`.
    raw : array (E, H, W), optional
        The maps that were fused, drawn dashed; ``result.raw`` for a Dataset.
    elements : sequence of str, optional
        Elements to show; all by default.
    width : int
        Number of parallel lines (one pixel apart, centred on the line) averaged.
    ax : Axes, optional
        Axes for the profiles; a new figure otherwise.
    image_ax : Axes or sequence of Axes, optional
        Image axes of the same result (`compare_maps`, `rgb_overlay`) to draw the line on.

    Returns
    -------
    matplotlib.figure.Figure
        With the distance along the line, in the coordinate units (or px), as x.

    Raises
    ------
    ValueError
        For equal or outside ends, a bad ``width`` or an unknown element.

    """
    from scipy.ndimage import map_coordinates

    plt = pyplot()
    data = maps_of(result, raw)
    index = data.index(elements)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"`width` must be a positive integer number of pixels, got {width!r}")
    ends = [np.asarray(p, dtype=float).reshape(2) for p in (start, end)]
    p0, p1 = ((q - data.origin) / data.step for q in ends)  # in pixels
    height, width_px = data.fused.shape[-2:]
    for name, p in (("start", p0), ("end", p1)):
        if not (-0.5 <= p[0] <= height - 0.5 and -0.5 <= p[1] <= width_px - 0.5):
            raise ValueError(f"`{name}` lies outside the {height}x{width_px} image, at pixel ({p[0]:.3g}, {p[1]:.3g})")
    length_px = float(np.hypot(*(p1 - p0)))
    if length_px == 0:
        raise ValueError("`start` and `end` are the same point; give two distinct points")
    t = np.linspace(0.0, 1.0, int(np.ceil(length_px - 1e-9)) + 1)
    normal = np.array([-(p1 - p0)[1], (p1 - p0)[0]]) / length_px
    offsets = np.arange(width) - (width - 1) / 2
    points = p0[:, None, None] + np.outer(p1 - p0, t)[:, None, :] + normal[:, None, None] * offsets[None, :, None]

    def sample(image: np.ndarray) -> np.ndarray:
        return map_coordinates(image, points, order=1, mode="nearest").mean(axis=0)

    distance = t * float(np.hypot(*(ends[1] - ends[0])))
    fig, ax = figure(plt, ax, (5.5, 3.4))
    for e in index:
        (line,) = ax.plot(distance, sample(data.fused[e]), label=f"{data.elements[e]} fused")
        if data.raw is not None:
            ax.plot(distance, sample(data.raw[e]), "--", color=line.get_color(), lw=1, label=f"{data.elements[e]} raw")
    ax.set(xlabel=f"distance ({data.unit})" if data.unit else "distance", ylabel="signal (input map units)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    (a, b) = ends  # in the frame the images are drawn in
    for iax in np.asarray([] if image_ax is None else image_ax, dtype=object).ravel():
        limits = iax.get_xlim(), iax.get_ylim()
        iax.plot([a[1], b[1]], [a[0], b[0]], color="cyan", lw=max(1.0, 0.8 * width))
        iax.plot([a[1]], [a[0]], "o", color="cyan", ms=4)
        iax.set(xlim=limits[0], ylim=limits[1])
    return fig

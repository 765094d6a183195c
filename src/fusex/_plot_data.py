"""Data preparation shared by the `fusex.plot` figures: results to host arrays, grids, scale bars."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import array_api_compat
import numpy as np
import xarray as xr

from ._xp import to_numpy
from .result import FusionResult
from .xarray import to_input_units

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Result = FusionResult | xr.Dataset


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError('fusex.plot needs matplotlib: pip install "fusex[plot]"') from exc
    return plt


def _host(a: Any) -> np.ndarray:
    """Return a host NumPy array with the data of ``a`` (DataArray, NumPy, CuPy, torch, dask or a list)."""
    if isinstance(a, xr.DataArray):
        a = a.data
    if hasattr(a, "compute") and not isinstance(a, np.ndarray):
        a = a.compute()
    return np.asarray(to_numpy(a) if array_api_compat.is_array_api_obj(a) else a, dtype=float)


@dataclass(frozen=True)
class _Maps:
    """The maps of a result on the host, in the input maps' units, and their pixel grid."""

    elements: tuple[str, ...]
    fused: np.ndarray  # (E, H, W)
    raw: np.ndarray | None
    origin: np.ndarray  # (y, x) coordinates of pixel (0, 0): 0 without coordinates
    step: np.ndarray  # (y, x) pixel spacing: 1 without coordinates
    unit: str  # "px" without coordinates, "" for coordinates without `units`

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent putting pixel centres at their coordinates."""
        (y0, x0), (dy, dx), (h, w) = self.origin, self.step, self.fused.shape[-2:]
        return (x0 - dx / 2, x0 + (w - 0.5) * dx, y0 + (h - 0.5) * dy, y0 - dy / 2)

    def index(self, elements: Sequence[str] | None, limit: int | None = None) -> list[int]:
        """Positions of ``elements`` (all, or the first ``limit``, when None)."""
        if elements is None:
            return list(range(len(self.elements)))[:limit]
        names = [elements] if isinstance(elements, str) else [str(e) for e in elements]
        unknown = [e for e in names if e not in self.elements]
        if unknown:
            raise ValueError(f"unknown element(s) {unknown}; the result has {list(self.elements)}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`elements` must name distinct elements, got {names}")
        if limit is not None and len(names) > limit:
            raise ValueError(f"at most {limit} elements fit in an RGB image, got {len(names)}: {names}")
        return [self.elements.index(e) for e in names]


def _grid(coord: Any) -> tuple[float, float] | None:
    """Return (first value, spacing) of regularly spaced numeric coordinates, else None."""
    v = np.asarray([] if coord is None else coord.values)
    if v.ndim != 1 or len(v) < 2 or not np.issubdtype(v.dtype, np.number):
        return None
    d = np.diff(v.astype(float))
    return (float(v[0]), float(d[0])) if d[0] != 0 and np.allclose(d, d[0], rtol=1e-6, atol=0) else None


def one_fusion(result: Result) -> None:
    """Refuse a batch of fusions: figures show one, picked by the caller."""
    if isinstance(result, xr.Dataset) and "maps" in result and result["maps"].ndim > 3:
        batch = [d for d in result["maps"].dims if d not in ("element", *result["maps"].dims[-2:])]
        raise ValueError(
            f"`result` holds a batch of fusions along {batch}; plot one of them, e.g. result.isel({batch[0]}=0)"
        )
    if isinstance(result, FusionResult) and result.batch_shape:
        index = ", ".join("0" for _ in result.batch_shape)
        raise ValueError(
            f"`result` holds a batch {result.batch_shape} of fusions; plot one of them, e.g. result.item({index})"
        )


def _maps(result: Result, raw: Any = None) -> _Maps:
    """Collect maps, raw maps and pixel grid of a FusionResult or a result Dataset."""
    one_fusion(result)
    origin, step, unit = np.zeros(2), np.ones(2), "px"
    if isinstance(result, xr.Dataset):
        elements = tuple(str(e) for e in result["element"].values)
        fused = _host(to_input_units(result))
        raw = result.get("raw") if raw is None else raw
        grid = [_grid(result.coords.get(d)) for d in result["maps"].dims[1:]]
        if None not in grid:
            (origin, step), unit = np.array(grid).T, str(result[result["maps"].dims[2]].attrs.get("units", ""))
    elif isinstance(result, FusionResult):
        elements, fused = tuple(result.elements), _host(result.to_input_units())
    else:
        raise TypeError(f"`result` must be a FusionResult or the Dataset from fusex.fuse, got {type(result).__name__}")
    if isinstance(raw, xr.DataArray) and "element" in raw.dims:
        raw = raw.transpose("element", ...).sel(element=list(elements))
    raw = None if raw is None else _host(raw).reshape(-1, *np.shape(raw)[-2:])
    if raw is not None and raw.shape != fused.shape:
        raise ValueError(f"`raw` has shape {raw.shape} but the fused maps have shape {fused.shape}")
    return _Maps(elements, fused, raw, origin, step, unit)


def _figure(plt: Any, ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """Return ``ax`` and its figure, or a new figure (tight layout) and its axes."""
    return plt.subplots(figsize=size, layout="tight") if ax is None else (ax.figure.figure, ax)


_METRES = {"m": 1.0, "mm": 1e-3, "µm": 1e-6, "\u03bcm": 1e-6, "um": 1e-6, "nm": 1e-9, "Å": 1e-10, "pm": 1e-12}
"""Length units a scale bar can convert between, in metres (µ as the micro sign or the Greek letter)."""
_BAR_UNITS = ("m", "mm", "µm", "nm")


def bar_length(most: float, unit: str) -> tuple[float, str]:
    """Choose a scale bar of at most ``most`` (in ``unit``): its length in ``unit`` and its label.

    The bar is 1, 2 or 5 times a power of ten.  A length unit whose number
    would reach 1000, or fall below 1 in a unit above nm, gives way to the SI
    prefix that brings it into [1, 1000) (a 5 nm bar, not 0.005 µm), down to
    nm, the unit of atomic-scale images (0.2 nm, not 200 pm); other units
    (px, none) stay.
    """
    factor = _METRES.get(unit)
    shown, scale = unit, 1.0
    if factor is not None and (most >= 1000 or (most < 1 and factor > _METRES["nm"])):
        shown = next((u for u in _BAR_UNITS if most * factor / _METRES[u] >= 1), _BAR_UNITS[-1])
        scale = factor / _METRES[shown]
    value = most * scale
    power = 10.0 ** np.floor(np.log10(value))
    length = next(m * power for m in (5, 2, 1) if m * power <= value * (1 + 1e-9))
    label = f"{float(f'{length:.6g}'):g} {shown}".strip()
    return float(length / scale), label


def _scale_bar(ax: Axes, data: _Maps) -> Any:
    """Draw a scale bar about a fifth of the image wide, labeled in the coordinate units."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1, y0, y1 = data.extent
    length, text = bar_length(abs(x1 - x0) / 5, data.unit)
    bar = AnchoredSizeBar(
        ax.transData, length, text, "lower right", pad=0.3, sep=2, color="white",
        size_vertical=abs(y1 - y0) / 60, fontproperties=FontProperties(size=7), frameon=True, borderpad=0.4,
    )  # fmt: skip
    bar.patch.set(facecolor="black", alpha=0.45, edgecolor="none")
    bar.set_gid("fusex-scalebar")
    return ax.add_artist(bar)

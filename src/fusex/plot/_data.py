"""What the `fusex.plot` figures read from a result: its maps on the host in input units and their pixel grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import array_api_compat
import numpy as np
import xarray as xr

from .._xp import to_numpy
from ..labeled import to_input_units
from ..result import FusionResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Maps", "Result", "figure", "host", "maps_of", "one_fusion", "pyplot"]

Result = FusionResult | xr.Dataset
"""What every figure takes: a `FusionResult` or the labeled result Dataset of `fusex.fuse`."""


def pyplot() -> Any:
    """Return ``matplotlib.pyplot``, imported on first use so that fusex runs without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError('fusex.plot needs matplotlib: pip install "fusex[plot]"') from exc
    return plt


def host(a: Any) -> np.ndarray:
    """Return a host NumPy array with the data of ``a`` (DataArray, NumPy, CuPy, torch, dask or a list)."""
    if isinstance(a, xr.DataArray):
        a = a.data
    if hasattr(a, "compute") and not isinstance(a, np.ndarray):
        a = a.compute()
    return np.asarray(to_numpy(a) if array_api_compat.is_array_api_obj(a) else a, dtype=float)


@dataclass(frozen=True)
class Maps:
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


def maps_of(result: Result, raw: Any = None) -> Maps:
    """Collect maps, raw maps and pixel grid of a FusionResult or a result Dataset."""
    one_fusion(result)
    origin, step, unit = np.zeros(2), np.ones(2), "px"
    if isinstance(result, xr.Dataset):
        elements = tuple(str(e) for e in result["element"].values)
        fused = host(to_input_units(result))
        raw = result.get("raw") if raw is None else raw
        grid = [_grid(result.coords.get(d)) for d in result["maps"].dims[1:]]
        if None not in grid:
            (origin, step), unit = np.array(grid).T, str(result[result["maps"].dims[2]].attrs.get("units", ""))
    elif isinstance(result, FusionResult):
        elements, fused = tuple(result.elements), host(result.to_input_units())
    else:
        raise TypeError(f"`result` must be a FusionResult or the Dataset from fusex.fuse, got {type(result).__name__}")
    if isinstance(raw, xr.DataArray) and "element" in raw.dims:
        raw = raw.transpose("element", ...).sel(element=list(elements))
    raw = None if raw is None else host(raw).reshape(-1, *np.shape(raw)[-2:])
    if raw is not None and raw.shape != fused.shape:
        raise ValueError(f"`raw` has shape {raw.shape} but the fused maps have shape {fused.shape}")
    return Maps(elements, fused, raw, origin, step, unit)


def figure(plt: Any, ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """Return ``ax`` and its figure, or a new figure (tight layout) and its axes."""
    return plt.subplots(figsize=size, layout="tight") if ax is None else (ax.figure.figure, ax)

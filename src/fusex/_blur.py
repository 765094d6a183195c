"""The Gaussian blur that fusion competes with (`fusex.tune`) and that `fusex.baselines` offers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["as_stack", "gaussian"]


def as_stack(maps: Any, name: str = "maps") -> np.ndarray:
    """Return ``maps`` as a new float64 array ``(E, H, W)``; one map ``(H, W)`` becomes ``(1, H, W)``."""
    array = np.array(maps, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise ValueError(f"`{name}` must be maps (E, H, W) or one map (H, W), got shape {np.shape(maps)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` holds NaN or infinite values; fill or crop them first")
    return array


def gaussian(maps: Any, sigma: float | Sequence[float]) -> np.ndarray:
    r"""Blur each map with a Gaussian of width ``sigma`` (pixels), reflecting at the borders.

    Parameters
    ----------
    maps : array (E, H, W) or (H, W)
        The maps.
    sigma : float or sequence of float
        One width for every map, or one per map; 0 returns the map unchanged.

    Returns
    -------
    ndarray
        :math:`G_{\sigma_e} * b_e` for each map, float64, shaped like ``maps``.
        Reflecting borders keep each map's total.

    """
    stack = as_stack(maps)
    widths = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (stack.shape[0],))
    if not np.all(np.isfinite(widths)) or np.any(widths < 0):
        raise ValueError(f"`sigma` must be widths >= 0 in pixels, got {sigma!r}")
    out = np.stack([ndimage.gaussian_filter(m, s, mode="reflect") if s > 0 else m for m, s in zip(stack, widths)])
    return out.reshape(np.shape(maps))

"""Host arrays of the per-item and per-map scalars that the compiled engines pass to their kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tv import steps_for, tv_weights


def item_values(values: Any, n: int, dtype: Any) -> np.ndarray:
    """Per-item scalars (a number or ``n`` values) as a contiguous array of ``n`` values of ``dtype``."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).astype(dtype))


def map_values(values: Any, n_items: int, n_maps: int, dtype: Any) -> np.ndarray:
    """Per-map scalars (a number, ``n_items`` values or an ``(n_items, n_maps)`` array) as ``(n_items, n_maps)``."""
    host = np.asarray(values, dtype=np.float64)
    if host.ndim == 1:
        host = host[:, None]
    return np.ascontiguousarray(np.broadcast_to(host, (n_items, n_maps)).astype(dtype))


def map_weights(weight: Any, n_maps: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""TV weights and dual steps :math:`1/(8w)` of ``n_maps`` maps, from one weight, one per item or one per map."""
    weights = tv_weights(weight)
    per_map = n_maps // len(weights)
    steps = tv_weights(steps_for(weights))
    return (
        np.repeat(np.asarray(weights, dtype=np.float64), per_map).astype(dtype),
        np.repeat(np.asarray(steps, dtype=np.float64), per_map).astype(dtype),
    )

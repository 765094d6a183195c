"""Host arrays of the per-item and per-map scalars that the compiled engines pass to their kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tv import huber_steps, map_parameters, steps_for, tv_weights


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


def is_guided(huber_delta: Any, strength: Any, direction: Any) -> bool:
    """Whether any map's prior is not TV: a Huber ``delta > 0``, or a direction field with a strength > 0."""
    return max(tv_weights(huber_delta)) > 0 or (direction is not None and max(tv_weights(strength)) > 0)


def guided_parameters(
    weight: Any, huber_delta: Any, strength: Any, n_maps: int, dtype: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Return :math:`w`, dual steps :math:`s`, momentum keeps :math:`a` and strengths :math:`\gamma_d` per map.

    Each input is one number, one per item or one per map (see `fusex.tv.tv_prox`), for ``n_maps`` maps;
    :math:`s = 1/(8w + \delta)` and :math:`a = 8w/(8w + \delta)` (`fusex.tv.huber_steps`).
    """
    w, delta, gamma = map_parameters(weight, huber_delta, strength)
    step, keep = huber_steps(w, delta)
    per_map = n_maps // max(w.size, 1)
    return tuple(np.repeat(a.reshape(-1), per_map).astype(dtype) for a in (w, step, keep, gamma))
